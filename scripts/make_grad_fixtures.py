#!/usr/bin/env python3
"""Reference gradients of a gated UNet and noise-schedule references for `alter`.

Usage (from the repository root, with ~/refenv holding torch, diffusers, safetensors, numpy):

    ~/refenv/bin/python scripts/make_grad_fixtures.py   # (re)write Tests/Fixtures/grad/

Writes
* Tests/Fixtures/grad/tiny-sd2-grad.safetensors: for the tiny-sd2 UNet (weights NOT copied: they
  are Tests/Fixtures/tiny-sd2/diffusers/diffusion_pytorch_model.safetensors, config in metadata),
  the loss L = sum(out * G.out) + sum_f sum(feature_f * G.feature.f) and its gradients with
  respect to the sample, the context, every unit gate and a few named parameters, for a mixed-gate
  case and an all-ones-gate case;
* Tests/Fixtures/grad/schedule.safetensors: DDPMScheduler (scaled_linear 0.00085..0.012, 1000
  steps) alphas_cumprod, add_noise and get_velocity.

The UNet references are diffusers' UNet2DConditionModel in float64 with the float64 timestep
embedding patch and the unit gating (`UnitOverride`) of scripts/make_forward_fixtures.py; the
gradients are torch autograd in float64, checked against central finite differences on a few
entries (printed, and stored in metadata `fd_check`). Everything is stored as F32 except the
`*_f64` schedule tensors.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402

from diffusers import DDPMScheduler  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import versions  # noqa: E402
from make_forward_fixtures import (  # noqa: E402
    UnitOverride,
    block_feature_hooks,
    discover_units,
    load_case_unet,
    rel_l2,
    save_canonical,
    to_f64,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "Tests", "Fixtures", "grad")

WEIGHTS = "Tests/Fixtures/tiny-sd2/diffusers"  # same as forward/tiny-sd2.safetensors
B, H, W, S = 2, 8, 8, 5
TIMESTEPS = [999, 17]
SEED = 201

FEATURES = ["down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.3", "mid_block",
            "up_blocks.0", "up_blocks.1", "up_blocks.2", "up_blocks.3"]

PARAMS = [
    "conv_in.weight",
    "time_embedding.linear_1.weight",
    "down_blocks.0.resnets.1.norm1.weight",
    "down_blocks.0.resnets.1.conv1.weight",
    "down_blocks.1.resnets.1.time_emb_proj.bias",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight",
    "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj.weight",
    "up_blocks.1.attentions.1.transformer_blocks.0.norm3.bias",
    "down_blocks.2.attentions.0.proj_in.weight",
    "up_blocks.1.resnets.0.conv_shortcut.weight",
    "up_blocks.0.upsamplers.0.conv.weight",
    "conv_norm_out.weight",
    "conv_out.bias",
]


def make_gates(units, gen):
    """Gates strictly inside (0,1) (uniform in [0.05, 0.95]), with exact 0.0 and 1.0 mixed in:
    unit u, sample b: k = (u + 2b) % 5; k == 0 -> 0.0, k == 2 -> 1.0, else random. With B = 2 no
    unit is 0 for both samples."""
    gates = {}
    for u, (name, _) in enumerate(units):
        g = 0.05 + 0.9 * torch.rand(B, generator=gen, dtype=torch.float32)
        for b in range(B):
            k = (u + 2 * b) % 5
            if k == 0:
                g[b] = 0.0
            elif k == 2:
                g[b] = 1.0
        gates[name] = g
    return gates


def loss_fn(unet, units, sample, t, ctx, gates, G_out, G_feat):
    """L = sum(out * G_out) + sum_f sum(feature_f * G_feat[f]); returns (L, out, features)."""
    feats = {}
    hs = block_feature_hooks(unet, feats, "feature")
    try:
        with UnitOverride(unet, units, gates=gates):
            out = unet(sample, t, encoder_hidden_states=ctx).sample
    finally:
        for h in hs:
            h.remove()
    feats = {k[len("feature."):]: v for k, v in feats.items()}
    assert sorted(feats) == sorted(FEATURES), sorted(feats)
    L = (out * G_out).sum()
    for f in FEATURES:
        L = L + (feats[f] * G_feat[f]).sum()
    return L, out, feats


def loss_scale(out, feats, G_out, G_feat):
    """sum of |terms| of L: the loss sums terms of both signs, so compare it with an absolute
    tolerance relative to this, not relative to |L|."""
    return float((out * G_out).abs().sum() + sum((feats[f] * G_feat[f]).abs().sum() for f in FEATURES))


def grads(unet, units, sample, t, ctx, gates, G_out, G_feat):
    """float64 autograd: (L, out, feats, d/dsample, d/dctx, {unit: d/dgate}, {param: d/dparam})."""
    params = dict(unet.named_parameters())
    for p in unet.parameters():
        p.requires_grad_(False)
    for n in PARAMS:
        params[n].requires_grad_(True)
    x = sample.clone().requires_grad_(True)
    c = ctx.clone().requires_grad_(True)
    g = {k: v.clone().requires_grad_(True) for k, v in gates.items()}
    L, out, feats = loss_fn(unet, units, x, t, c, g, G_out, G_feat)
    names = list(g)
    leaves = [x, c] + [g[k] for k in names] + [params[n] for n in PARAMS]
    d = torch.autograd.grad(L, leaves)
    dx, dc = d[0], d[1]
    dg = dict(zip(names, d[2:2 + len(names)]))
    dp = dict(zip(PARAMS, d[2 + len(names):]))
    return L.detach(), out.detach(), {k: v.detach() for k, v in feats.items()}, dx, dc, dg, dp


def fd_check(unet, units, sample, t, ctx, gates, G_out, G_feat, dx, dc, dg, dp, picks, eps=1e-6):
    """Central differences in float64 on chosen entries; returns [(label, autograd, fd, rel)]."""
    params = dict(unet.named_parameters())

    def L_of():
        with torch.no_grad():
            return float(loss_fn(unet, units, sample, t, ctx, gates, G_out, G_feat)[0])

    rows = []

    def probe(label, tensor, idx, analytic):
        with torch.no_grad():
            old = tensor[idx].item()
            tensor[idx] = old + eps
            lp = L_of()
            tensor[idx] = old - eps
            lm = L_of()
            tensor[idx] = old
        fd = (lp - lm) / (2 * eps)
        a = float(analytic[idx])
        rows.append((label, a, fd, abs(a - fd) / max(abs(a), abs(fd), 1e-12)))

    sample, ctx = sample.clone(), ctx.clone()
    gates = {k: v.clone() for k, v in gates.items()}
    argmax = lambda v: tuple(int(i) for i in torch.unravel_index(v.abs().argmax(), v.shape))  # noqa: E731
    probe("sample" + str(argmax(dx)), sample, argmax(dx), dx)
    probe("sample(1,2,3,4)", sample, (1, 2, 3, 4), dx)
    probe("context" + str(argmax(dc)), ctx, argmax(dc), dc)
    probe("context(0,3,7)", ctx, (0, 3, 7), dc)
    for unit, b in picks:
        probe(f"gate {unit}[{b}]={float(gates[unit][b]):g}", gates[unit], (b,), dg[unit])
    for n in PARAMS:
        probe(f"param {n}{argmax(dp[n])}", params[n].data, argmax(dp[n]), dp[n])
    return rows


def make_grad(vers):
    unet32 = load_case_unet(dict(weights=WEIGHTS))
    cfg = unet32.config
    unet64 = to_f64(unet32)
    units = discover_units(unet64, (1, cfg.in_channels, H, W))
    unit_names = [n for n, _ in units]
    unit_of = lambda p: next((u for u in unit_names if p.startswith(u + ".")), None)  # noqa: E731

    gen = torch.Generator().manual_seed(SEED)
    sample = torch.randn(B, cfg.in_channels, H, W, generator=gen, dtype=torch.float32)
    context = torch.randn(B, S, cfg.cross_attention_dim, generator=gen, dtype=torch.float32)
    t = torch.tensor(TIMESTEPS, dtype=torch.float32)
    gates = make_gates(units, gen)

    # feature shapes from a plain run, then the fixed cotangents
    with torch.no_grad():
        _, out0, f0 = loss_fn(unet64, units, sample.double(), t.double(), context.double(), {},
                              torch.zeros(B, cfg.out_channels, H, W, dtype=torch.float64),
                              {f: 0.0 for f in FEATURES})
    G_out = torch.randn(out0.shape, generator=gen, dtype=torch.float32)
    G_feat = {f: torch.randn(f0[f].shape, generator=gen, dtype=torch.float32) for f in FEATURES}

    # sanity of the gate mix and of the chosen parameters
    flat = torch.cat(list(gates.values()))
    assert (flat == 0).any() and (flat == 1).any() and ((flat > 0) & (flat < 1)).any()
    assert all(bool((g != 0).any()) for g in gates.values())
    in_units = {p: unit_of(p) for p in PARAMS}
    assert any(u is not None and bool((gates[u] == 0).any()) for u in in_units.values()), in_units

    x64, c64, t64 = sample.double(), context.double(), t.double()
    G_out64, G_feat64 = G_out.double(), {f: v.double() for f, v in G_feat.items()}
    cases = {
        "": {k: v.double() for k, v in gates.items()},
        "ones.": {k: torch.ones(B, dtype=torch.float64) for k in unit_names},
    }

    tensors = {
        "input.sample": sample, "input.timestep": t, "input.context": context,
        "G.out": G_out, **{f"G.feature.{f}": v for f, v in G_feat.items()},
        **{f"gate.{k}": v for k, v in gates.items()},
    }
    fd_all, fp32, scale = {}, {}, {}
    results = {}
    for prefix, g in cases.items():
        L, out, feats, dx, dc, dg, dp = grads(unet64, units, x64, t64, c64, g, G_out64, G_feat64)
        results[prefix] = (L, out, dx, dc, dg, dp)
        label = prefix.rstrip(".") or "gated"
        tensors[f"{prefix}loss"] = L.reshape(1)
        scale[label] = float(f"{loss_scale(out, feats, G_out64, G_feat64):.6g}")
        tensors[f"{prefix}out"] = out
        tensors.update({f"{prefix}feature.{f}": v for f, v in feats.items()})
        tensors[f"{prefix}grad.sample"] = dx
        tensors[f"{prefix}grad.context"] = dc
        tensors.update({f"{prefix}grad.gate.{k}": v for k, v in dg.items()})
        tensors.update({f"{prefix}grad.param.{k}": v for k, v in dp.items()})

        # finite differences: both samples' gates of down/mid/up resnet and transformer units
        # (gated case: values 0, 1 and strictly inside among them)
        picks = [(u, b) for u in ("down_blocks.1.resnets.1", "mid_block.attentions.0.transformer_blocks.0",
                                  "up_blocks.1.resnets.0", "up_blocks.2.attentions.1.transformer_blocks.0",
                                  "up_blocks.3.resnets.2") for b in range(B)]
        if prefix == "":
            vals = [float(g[u][b]) for u, b in picks]
            assert 0.0 in vals and 1.0 in vals and any(0 < v < 1 for v in vals), vals
        rows = fd_check(unet64, units, x64, t64, c64, g, G_out64, G_feat64, dx, dc, dg, dp, picks)
        worst = max(r[3] for r in rows)
        print(f"case '{label}': L = {float(L):.10g} (sum of |terms| {scale[label]:.6g}); finite differences (eps 1e-6, float64):")
        for what, a, fd, rel in rows:
            print(f"  {what:90s} autograd {a:+.10e} fd {fd:+.10e} rel {rel:.1e}")
        print(f"  worst rel. difference {worst:.1e}")
        assert worst < 1e-6, worst
        fd_all[label] = dict(entries=len(rows), worst_rel=float(f"{worst:.2g}"))

        # float32 diffusers (no f64 patches) against the reference, for test tolerances
        g32 = {k: v.float() for k, v in g.items()}
        L32, out32, _, dx32, dc32, dg32, dp32 = grads(unet32, units, sample, t, context, g32, G_out, G_feat)
        fp32[label] = dict(
            loss_abs=float(f"{abs(float(L32) - float(L)):.2g}"),
            sample=float(f"{rel_l2(dx32, dx):.2g}"), context=float(f"{rel_l2(dc32, dc):.2g}"),
            gates=float(f"{rel_l2(torch.stack([dg32[k] for k in unit_names]), torch.stack([dg[k] for k in unit_names])):.2g}"),
            params_worst=float(f"{max(rel_l2(dp32[n], dp[n]) for n in PARAMS):.2g}"),
        )

    # all-ones gates must reproduce the plain (ungated) forward
    with torch.no_grad():
        Lp, outp, _ = loss_fn(unet64, units, x64, t64, c64, {}, G_out64, G_feat64)
    assert torch.allclose(outp, results["ones."][1], rtol=1e-12, atol=1e-14)
    assert abs(float(Lp) - float(results["ones."][0])) <= 1e-10 * abs(float(Lp))
    for n in PARAMS:
        assert results[""][5][n].abs().max() > 0, n

    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    meta = dict(
        case="tiny-sd2-grad",
        config=unet32.to_json_string(),
        weights=WEIGHTS,
        units=",".join(unit_names),
        params=",".join(PARAMS),
        features=",".join(FEATURES),
        loss="L = sum(out * G.out) + sum over features f of sum(feature.f * G.feature.f)",
        precision="float64 compute (diffusers UNet2DConditionModel.double(), float64 timestep embedding, "
                  "torch autograd), inputs/gates/G/weights exact in F32, results rounded to F32",
        loss_abs_scale=json.dumps(scale, sort_keys=True),
        fd_check=json.dumps(fd_all, sort_keys=True),
        fp32_rel_l2=json.dumps(fp32, sort_keys=True),
        versions=json.dumps(vers, sort_keys=True),
    )
    path = os.path.join(OUT_DIR, "tiny-sd2-grad.safetensors")
    save_canonical(tensors, path, meta)
    print(f"fp32 diffusers vs float64 reference (rel. L2): {json.dumps(fp32)}")
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path):,} bytes")


def make_schedule(vers):
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          num_train_timesteps=1000)
    ac32 = sched.alphas_cumprod.clone()  # what diffusers computes (float32 linspace, square, cumprod)
    assert ac32.dtype == torch.float32 and ac32.shape == (1000,)
    betas64 = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac64 = torch.cumprod(1.0 - betas64, dim=0)
    print(f"alphas_cumprod: float32 diffusers vs float64, max rel. diff "
          f"{float(((ac32.double() - ac64) / ac64).abs().max()):.1e}")

    gen = torch.Generator().manual_seed(301)
    x0 = torch.randn(2, 4, 4, 4, generator=gen, dtype=torch.float32)
    noise = torch.randn(2, 4, 4, 4, generator=gen, dtype=torch.float32)
    t = torch.tensor([3, 998], dtype=torch.int64)
    noisy = sched.add_noise(x0, noise, t)  # float32 compute, as diffusers trains
    vel = sched.get_velocity(x0, noise, t)
    sched64 = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            num_train_timesteps=1000)
    sched64.alphas_cumprod = ac64.clone()
    noisy64 = sched64.add_noise(x0.double(), noise.double(), t)
    vel64 = sched64.get_velocity(x0.double(), noise.double(), t)
    # the formulas, spelled out
    a = ac64[t].view(-1, 1, 1, 1)
    assert torch.allclose(noisy64, a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double(), rtol=1e-15, atol=0)
    assert torch.allclose(vel64, a.sqrt() * noise.double() - (1 - a).sqrt() * x0.double(), rtol=1e-15, atol=0)
    print(f"add_noise float32 vs float64 rel L2 {rel_l2(noisy, noisy64):.1e}, "
          f"get_velocity {rel_l2(vel, vel64):.1e}")

    tensors = dict(
        betas=sched.betas.clone(), alphas_cumprod=ac32, betas_f64=betas64, alphas_cumprod_f64=ac64,
        x0=x0, noise=noise, timesteps=t,
        add_noise=noisy, get_velocity=vel, add_noise_f64=noisy64, get_velocity_f64=vel64,
    )
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta = dict(
        case="schedule",
        scheduler=json.dumps({k: v for k, v in sched.config.items() if not k.startswith("_")}, sort_keys=True),
        precision="F32 tensors: diffusers DDPMScheduler as is (float32); *_f64 (F64): the same formulas in "
                  "float64 (betas = linspace(sqrt(0.00085), sqrt(0.012), 1000, float64)^2, cumprod(1-betas))",
        versions=json.dumps(vers, sort_keys=True),
    )
    path = os.path.join(OUT_DIR, "schedule.safetensors")
    save_canonical(tensors, path, meta)
    print(f"{path}: {os.path.getsize(path):,} bytes")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    os.makedirs(OUT_DIR, exist_ok=True)
    vers = versions()
    make_grad(vers)
    make_schedule(vers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
