#!/usr/bin/env python3
"""Reference UNet forward outputs (plain, gated, hard-skipped) and unit MAC counts for `alter`.

Usage (from the repository root, with ~/refenv holding torch, diffusers, safetensors, numpy):

    ~/refenv/bin/python scripts/make_forward_fixtures.py            # (re)write Tests/Fixtures/forward/
    ~/refenv/bin/python scripts/make_forward_fixtures.py --macs-only # only units-sd21.json

Writes Tests/Fixtures/forward/<case>.safetensors for the cases in CASES and
Tests/Fixtures/forward/units-sd21.json (prunable units of the full SD2.1 UNet with their MACs).

Every reference is computed by diffusers' own UNet2DConditionModel run in float64 (weights
from the fp32/fp16 fixture files, converted exactly; inputs generated in fp32 and converted
exactly), with one patch: the sinusoidal timestep embedding, which diffusers always computes in
float32, is computed in float64 too. Outputs are stored as F32. The rel. L2 error of a plain
float32 diffusers run against the reference is stored in each file's metadata (`fp32_rel_l2`).

Units, gating and skipping follow /work/shared/ALTER.md section 2 (see `UnitOverride`).
The helpers here (`discover_units`, `UnitOverride`, `MacCounter`) are also used by
scripts/bench_torch_forward.py.
"""

import argparse
import copy
import json
import math
import os
import struct
import sys
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention import BasicTransformerBlock  # noqa: E402
from diffusers.models.resnet import ResnetBlock2D  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import FULL_SD21, build_unet, versions, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "Tests", "Fixtures")
OUT_DIR = os.path.join(FIXTURES, "forward")

# 3 levels, 1 layer per block; exercises flip_sin_to_cos false / freq_shift 1, per-level heads,
# a mid block with 4 heads, and a DownBlock2D/UpBlock2D pair at the bottom.
SMALL_L1 = dict(
    in_channels=4,
    out_channels=4,
    sample_size=8,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block=1,
    block_out_channels=[8, 16, 16],
    attention_head_dim=[2, 2, 4],  # diffusers misnomer: number of heads
    norm_num_groups=4,
    norm_eps=1e-5,
    cross_attention_dim=8,
    use_linear_projection=True,
    upcast_attention=False,
    flip_sin_to_cos=False,
    freq_shift=1,
    act_fn="silu",
)

# name, batch, height, width, context length, weights, seed for inputs/gates
CASES = [
    dict(name="tiny-sd2", B=3, H=8, W=8, S=5, weights="Tests/Fixtures/tiny-sd2/diffusers", seed=101),
    dict(name="tiny-sd2-noupcast", B=2, H=8, W=8, S=5, weights="Tests/Fixtures/tiny-sd2/diffusers",
         overrides=dict(upcast_attention=False), seed=102),
    dict(name="tiny-sd1-conv", B=2, H=16, W=16, S=5, weights="Tests/Fixtures/tiny-sd1/diffusers.safetensors",
         config="Tests/Fixtures/tiny-sd1/config.json", seed=103),
    dict(name="small-l1", B=2, H=8, W=12, S=5, weights="inline", seed=104),
]

TIMESTEPS = {  # distinct integers in 0..999 (the ends included somewhere)
    "tiny-sd2": [999, 0, 421],
    "tiny-sd2-noupcast": [17, 803],
    "tiny-sd1-conv": [1, 999],
    "small-l1": [250, 0],
}


# --------------------------------------------------------------------------------------
# units


def _up_skip_channels(cfg):
    """[up block][resnet] -> channels of the popped encoder skip (diffusers' construction)."""
    rev = list(reversed(cfg["block_out_channels"]))
    n = len(rev)
    out = []
    for i in range(len(cfg["up_block_types"])):
        layers = cfg["layers_per_block"] + 1
        input_channel = rev[min(i + 1, n - 1)]
        output_channel = rev[i]
        out.append([input_channel if j == layers - 1 else output_channel for j in range(layers)])
    return out


def _is_unit_resnet(name, mod, cfg):
    parts = name.split(".")
    if parts[0] == "up_blocks":
        skip = _up_skip_channels(cfg)[int(parts[1])][int(parts[3])]
        main = mod.in_channels - skip
    else:
        main = mod.in_channels
    return main == mod.out_channels


def discover_units(unet, sample_shape=(1, 4, 8, 8), context_shape=None, device="cpu"):
    """Prunable units of `unet` in execution order: [(name, kind)] with kind 'resnet' | 'transformer'.

    The order is recorded from a real forward pass (on the meta device when device='meta')."""
    cfg = unet.config
    cands = {}
    for name, mod in unet.named_modules():
        if isinstance(mod, BasicTransformerBlock):
            assert name.endswith(".transformer_blocks.0"), name  # transformer_layers_per_block 1
            cands[name] = "transformer"
        elif isinstance(mod, ResnetBlock2D) and _is_unit_resnet(name, mod, cfg):
            cands[name] = "resnet"
    order, handles = [], []
    mods = dict(unet.named_modules())

    def pre(n):
        return lambda m, a: order.append(n)

    # check the static skip-channel formula against what the up blocks really pop
    skips = _up_skip_channels(cfg)

    def up_pre(i):
        def h(m, args, kwargs):
            tup = kwargs.get("res_hidden_states_tuple", args[1] if len(args) > 1 else None)
            got = [t.shape[1] for t in reversed(tup)][: len(m.resnets)]
            assert got == skips[i], (i, got, skips[i])
        return h

    for n in cands:
        handles.append(mods[n].register_forward_pre_hook(pre(n)))
    for i, blk in enumerate(unet.up_blocks):
        handles.append(blk.register_forward_pre_hook(up_pre(i), with_kwargs=True))
    try:
        dt = next(unet.parameters()).dtype
        ctx_shape = context_shape or (sample_shape[0], 3, cfg.cross_attention_dim)
        with torch.inference_mode():
            unet(torch.zeros(sample_shape, dtype=dt, device=device), torch.tensor([1.0] * sample_shape[0], device=device),
                 encoder_hidden_states=torch.zeros(ctx_shape, dtype=dt, device=device))
    finally:
        for h in handles:
            h.remove()
    assert sorted(order) == sorted(cands), "every unit must run exactly once"
    return [(n, cands[n]) for n in order]


class UnitOverride:
    """Patch the forward of every unit module: gate (blend) or hard-skip, per ALTER.md section 2.

    resnet unit:      out = (1-m)*x + m*resnet(input, temb), x = input[:, :C_out] (in an up block
                      the resnet's input is cat([hidden, skip]); x is the hidden part; the skip has
                      been popped by the block and is discarded when skipped);
                      skipped: out = x, resnet not evaluated.
    transformer unit: out = (1-m)*x + m*BasicTransformerBlock(x) on its [B, HW, C] token input;
                      skipped: out = x. The enclosing Transformer2DModel's norm/proj_in/proj_out/
                      residual always run.
    gates: {unit: tensor[B]} (missing -> 1, i.e. plain); skip: set of unit names.
    """

    def __init__(self, unet, units, gates=None, skip=()):
        self.unet, self.units = unet, units
        self.gates, self.skip = gates or {}, set(skip)
        unknown = (set(self.gates) | self.skip) - {n for n, _ in units}
        assert not unknown, f"not units: {sorted(unknown)}"
        self.patched = []

    def _wrap(self, name, kind, mod):
        orig = mod.forward
        gate = self.gates.get(name)
        skip = name in self.skip

        if kind == "resnet":
            c = mod.out_channels

            def fwd(input_tensor, temb, *a, **k):
                x = input_tensor[:, :c]
                if skip:
                    return x
                y = orig(input_tensor, temb, *a, **k)
                if gate is None:
                    return y
                m = gate.to(y.dtype).view(-1, 1, 1, 1)
                return (1 - m) * x + m * y
        else:

            def fwd(hidden_states, *a, **k):
                if skip:
                    return hidden_states
                y = orig(hidden_states, *a, **k)
                if gate is None:
                    return y
                m = gate.to(y.dtype).view(-1, 1, 1)
                return (1 - m) * hidden_states + m * y

        return fwd

    def __enter__(self):
        mods = dict(self.unet.named_modules())
        for name, kind in self.units:
            if name in self.gates or name in self.skip:
                mod = mods[name]
                mod.forward = self._wrap(name, kind, mod)
                self.patched.append(mod)
        return self

    def __exit__(self, *exc):
        for mod in self.patched:
            del mod.forward  # back to the class method
        self.patched = []
        return False


# --------------------------------------------------------------------------------------
# MAC counting


class MacCounter:
    """Counts conv / linear MACs (forward hooks) and attention matmul MACs (wrapping
    F.scaled_dot_product_attention: QK^T and AV, each B*heads*Nq*Nk*head_dim), attributed to
    the unit that is running (or to None outside units)."""

    def __init__(self, unet, units):
        self.unet, self.units = unet, units
        self.conv_linear = {}
        self.attention = {}
        self.current = None
        self.handles = []
        self._orig_sdpa = None

    def _add(self, table, v):
        table[self.current] = table.get(self.current, 0) + int(v)

    def __enter__(self):
        unit_names = {n for n, _ in self.units}
        for name, mod in self.unet.named_modules():
            if name in unit_names:
                self.handles.append(mod.register_forward_pre_hook(self._enter_unit(name)))
                self.handles.append(mod.register_forward_hook(self._leave_unit))
            if isinstance(mod, nn.Conv2d):
                self.handles.append(mod.register_forward_hook(self._conv))
            elif isinstance(mod, nn.Linear):
                self.handles.append(mod.register_forward_hook(self._linear))
        self._orig_sdpa = F.scaled_dot_product_attention
        orig = self._orig_sdpa

        def sdpa(query, key, value, *a, **k):
            b, h, nq, d = query.shape
            nk, dv = key.shape[-2], value.shape[-1]
            self._add(self.attention, b * h * nq * nk * d + b * h * nq * nk * dv)
            return orig(query, key, value, *a, **k)

        F.scaled_dot_product_attention = sdpa
        return self

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self._orig_sdpa
        for h in self.handles:
            h.remove()
        self.handles = []
        return False

    def _enter_unit(self, name):
        def h(m, a):
            assert self.current is None, "units do not nest"
            self.current = name
        return h

    def _leave_unit(self, m, a, out):
        self.current = None

    def _conv(self, m, a, out):
        b, cout, ho, wo = out.shape
        kh, kw = m.kernel_size
        self._add(self.conv_linear, b * cout * (m.in_channels // m.groups) * kh * kw * ho * wo)

    def _linear(self, m, a, out):
        tokens = out.numel() // m.out_features
        self._add(self.conv_linear, tokens * m.in_features * m.out_features)

    def report(self):
        units = [dict(name=n, kind=k, conv_linear_macs=self.conv_linear.get(n, 0), attention_macs=self.attention.get(n, 0))
                 for n, k in self.units]
        total_cl = sum(self.conv_linear.values())
        total_at = sum(self.attention.values())
        unit_cl = sum(u["conv_linear_macs"] for u in units)
        unit_at = sum(u["attention_macs"] for u in units)
        return dict(
            units=units,
            total=dict(conv_linear_macs=total_cl, attention_macs=total_at, all_macs=total_cl + total_at),
            units_total=dict(conv_linear_macs=unit_cl, attention_macs=unit_at, all_macs=unit_cl + unit_at),
            prunable_fraction=dict(conv_linear=unit_cl / total_cl, all=(unit_cl + unit_at) / (total_cl + total_at)),
        )


def count_macs(unet, units, H, W, S, batch=1, device="cpu"):
    cfg = unet.config
    dt = next(unet.parameters()).dtype
    with MacCounter(unet, units) as mc, torch.inference_mode():
        unet(torch.zeros(batch, cfg.in_channels, H, W, dtype=dt, device=device), torch.tensor([1.0] * batch, device=device),
             encoder_hidden_states=torch.zeros(batch, S, cfg.cross_attention_dim, dtype=dt, device=device))
    return mc.report()


# --------------------------------------------------------------------------------------
# float64 reference


def f64_timestep_embedding(tp):
    """diffusers' get_timestep_embedding, but entirely in float64 (diffusers forces float32)."""

    def fwd(timesteps):
        half = tp.num_channels // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float64) / (half - tp.downscale_freq_shift)
        emb = timesteps[:, None].to(torch.float64) * torch.exp(exponent)[None, :]
        emb = tp.scale * emb
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        if tp.flip_sin_to_cos:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        if tp.num_channels % 2 == 1:
            emb = F.pad(emb, (0, 1, 0, 0))
        return emb

    return fwd


def to_f64(unet32):
    u = copy.deepcopy(unet32).to(torch.float64)
    u.time_proj.forward = f64_timestep_embedding(u.time_proj)
    return u


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def block_feature_hooks(unet, store, prefix):
    hs = []

    def hook(name):
        def h(m, a, out):
            store[f"{prefix}.{name}"] = out[0] if isinstance(out, tuple) else out
        return h

    for i, b in enumerate(unet.down_blocks):
        hs.append(b.register_forward_hook(hook(f"down_blocks.{i}")))
    hs.append(unet.mid_block.register_forward_hook(hook("mid_block")))
    for i, b in enumerate(unet.up_blocks):
        hs.append(b.register_forward_hook(hook(f"up_blocks.{i}")))
    return hs


def run(unet, sample, t, ctx, units, gates=None, skip=(), features=None):
    feats = {}
    hs = block_feature_hooks(unet, feats, features) if features else []
    try:
        with UnitOverride(unet, units, gates=gates, skip=skip), torch.inference_mode():
            out = unet(sample, t, encoder_hidden_states=ctx).sample
    finally:
        for h in hs:
            h.remove()
    return out, feats


# --------------------------------------------------------------------------------------
# cases


def load_case_unet(case):
    w = case["weights"]
    if w == "inline":
        unet = build_unet(SMALL_L1, seed=4242)
    elif os.path.isdir(os.path.join(REPO, w)):
        unet = UNet2DConditionModel.from_pretrained(os.path.join(REPO, w), **case.get("overrides", {}))
    else:
        with open(os.path.join(REPO, case["config"]), encoding="utf-8") as f:
            cfg = json.load(f)
        unet = UNet2DConditionModel.from_config(cfg)
        sd = {k: v.to(torch.float32) for k, v in load_file(os.path.join(REPO, w)).items()}
        missing, unexpected = unet.load_state_dict(sd, strict=True)
        assert not missing and not unexpected
    for k, v in case.get("overrides", {}).items():
        assert unet.config[k] == v, (k, unet.config[k])
    unet.eval()
    return unet.to(torch.float32)


def save_canonical(tensors, path, metadata):
    """safetensors.save_file, then the header rewritten with `__metadata__` keys sorted: the Rust
    writer emits metadata in HashMap order, which changes from run to run. Tensor entries, data
    offsets and data bytes are kept; the header is padded with spaces to a multiple of 8 bytes as
    the library does. The result is re-read with the library and checked."""
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    with open(tmp, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    os.remove(tmp)
    back = load_file(path)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors), path
    with safe_open(path, "pt") as f:
        assert f.metadata() == metadata, path


def make_gates(units, B, gen):
    """Random gates in [0,1) with exact 0.0 and 1.0 mixed in, different per sample."""
    gates = {}
    for u, (name, _) in enumerate(units):
        g = torch.rand(B, generator=gen, dtype=torch.float32)
        for b in range(B):
            k = (u + 2 * b) % 5
            if k == 0:
                g[b] = 0.0
            elif k == 2:
                g[b] = 1.0
        gates[name] = g
    return gates


def choose_skip(units, gen):
    """About half the units, mixing kinds and down/mid/up, with an up-block resnet."""
    n = len(units)
    while True:
        perm = torch.randperm(n, generator=gen).tolist()
        chosen = sorted(perm[: n // 2])
        picked = [units[i] for i in chosen]
        kept = [units[i] for i in range(n) if i not in chosen]
        kinds = {k for _, k in picked}
        places = {name.split(".")[0] for name, _ in picked}
        up_res = any(name.startswith("up_blocks") and k == "resnet" for name, k in picked)
        kept_kinds = {k for _, k in kept}
        if kinds == {"resnet", "transformer"} and places == {"down_blocks", "mid_block", "up_blocks"} and up_res \
                and kept_kinds == {"resnet", "transformer"}:
            return [name for name, _ in picked]


def make_case(case, vers):
    name, B, H, W, S = case["name"], case["B"], case["H"], case["W"], case["S"]
    unet32 = load_case_unet(case)
    cfg = unet32.config
    config_json = unet32.to_json_string()
    unet64 = to_f64(unet32)
    units = discover_units(unet64, (1, cfg.in_channels, H, W))
    unit_names = [n for n, _ in units]

    gen = torch.Generator().manual_seed(case["seed"])
    sample = torch.randn(B, cfg.in_channels, H, W, generator=gen, dtype=torch.float32)
    context = torch.randn(B, S, cfg.cross_attention_dim, generator=gen, dtype=torch.float32)
    t = torch.tensor(TIMESTEPS[name], dtype=torch.float32)
    assert t.shape == (B,) and len(set(TIMESTEPS[name])) == B
    gates = make_gates(units, B, gen)
    skip = choose_skip(units, gen)

    x64, c64, t64 = sample.double(), context.double(), t.double()
    out, feats = run(unet64, x64, t64, c64, units, features="feature")
    out_g, feats_g = run(unet64, x64, t64, c64, units, gates={k: v.double() for k, v in gates.items()},
                         features="gated_feature")
    out_s, feats_s = run(unet64, x64, t64, c64, units, skip=skip, features="skip_feature")

    # self-checks of the gating semantics
    ones = {n: torch.ones(B, dtype=torch.float64) for n in unit_names}
    zeros = {n: torch.zeros(B, dtype=torch.float64) for n in unit_names}
    out_1, _ = run(unet64, x64, t64, c64, units, gates=ones)
    out_0, _ = run(unet64, x64, t64, c64, units, gates=zeros)
    out_none, _ = run(unet64, x64, t64, c64, units, skip=unit_names)
    assert torch.allclose(out_1, out, rtol=1e-12, atol=1e-14), rel_l2(out_1, out)
    assert torch.allclose(out_0, out_none, rtol=1e-12, atol=1e-14), rel_l2(out_0, out_none)
    # per-sample gating: a batch row equals running that row alone with its own gates
    row1, _ = run(unet64, x64[1:2], t64[1:2], c64[1:2], units, gates={k: v[1:2].double() for k, v in gates.items()})
    assert torch.allclose(row1, out_g[1:2], rtol=1e-10, atol=1e-12), rel_l2(row1, out_g[1:2])

    # each unit must matter far above the 1e-5 test tolerance
    sens = {}
    for n in unit_names:
        o, _ = run(unet64, x64, t64, c64, units, skip=[n])
        sens[n] = rel_l2(o, out)
    weakest = min(sens, key=sens.get)
    assert sens[weakest] > 1e-4, (weakest, sens[weakest])
    print("  single-unit skip rel L2:", " ".join(f"{sens[n]:.0e}" for n in unit_names))

    # what plain float32 diffusers (no patches) reaches against the float64 reference
    with torch.inference_mode():
        out32 = unet32(sample, t, encoder_hidden_states=context).sample
    out32_g, _ = run(unet32, sample, t, context, units, gates=gates)
    out32_s, _ = run(unet32, sample, t, context, units, skip=skip)
    fp32 = dict(out=rel_l2(out32, out), out_gated=rel_l2(out32_g, out_g), out_skip=rel_l2(out32_s, out_s))

    macs = count_macs(unet64, units, H, W, S)

    tensors = dict(sample=sample, timestep=t, context=context, out=out, out_gated=out_g, out_skip=out_s)
    tensors.update(feats)
    tensors.update(feats_g)
    tensors.update(feats_s)
    tensors.update({f"gate.{n}": g for n, g in gates.items()})
    if case["weights"] == "inline":
        tensors.update({f"weight.{k}": v for k, v in unet32.state_dict().items()})
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}

    meta = dict(
        case=name,
        config=config_json,
        weights=case["weights"],
        units=",".join(unit_names),
        skip=",".join(skip),
        precision="float64 compute (diffusers UNet2DConditionModel.double(), float64 timestep embedding), "
                  "inputs/gates/weights exact in F32, outputs rounded to F32",
        fp32_rel_l2=json.dumps({k: float(f"{v:.2g}") for k, v in fp32.items()}, sort_keys=True),
        macs=json.dumps(dict(batch=1, height=H, width=W, context_tokens=S, **macs), sort_keys=True),
        skip_single_rel_l2=json.dumps({k: float(f"{v:.2g}") for k, v in sens.items()}, sort_keys=True),
        versions=json.dumps(vers, sort_keys=True),
    )
    path = os.path.join(OUT_DIR, f"{name}.safetensors")
    save_canonical(tensors, path, meta)
    print(f"{name}: B={B} {H}x{W} S={S}, {len(units)} units "
          f"({sum(k == 'resnet' for _, k in units)} resnet), skip {len(skip)}; "
          f"fp32 vs f64 rel L2 out {fp32['out']:.1e} gated {fp32['out_gated']:.1e} skip {fp32['out_skip']:.1e}; "
          f"rel L2 out_gated/out {rel_l2(out_g, out):.3f} out_skip/out {rel_l2(out_s, out):.3f}; "
          f"weakest unit {weakest} {sens[weakest]:.1e}; {os.path.getsize(path):,} bytes")
    return units


# --------------------------------------------------------------------------------------
# full SD2.1 unit MACs

PAPER = {  # ALTER.md section 3, as printed there (string: its precision matters), G MACs
    "total conv+linear 64x64": "339.1",
    "total with attention 64x64": "402.1",
    "total conv+linear 96x96": "760.5",
    "down_blocks.0.attentions.0.transformer_blocks.0 conv+linear": "7.60",
    "down_blocks.0.attentions.0.transformer_blocks.0 with attention": "18.54",
    "down_blocks.0.resnets.0": "7.55",
    "up_blocks.1.resnets.0": "12.17",
    "mid_block.attentions.0.transformer_blocks.0 conv+linear": "2.09",
    "mid_block.attentions.0.transformer_blocks.0 with attention": "2.11",
    "down_blocks.3.resnets.0": "1.89",
    "mid_block.resnets.0": "1.89",
    "prunable share conv+linear 64x64 (%)": "72",
    "prunable share with attention 64x64 (%)": "77",
}


def sd21_macs(vers):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**FULL_SD21)
    unet.eval()
    units = discover_units(unet, (1, 4, 64, 64), (1, 77, 1024), device="meta")
    assert len(units) == 34, len(units)
    sizes = {}
    for hw in (64, 96):
        sizes[f"{hw}x{hw}"] = count_macs(unet, units, hw, hw, 77, device="meta")
    doc = dict(
        model="Stable Diffusion 2.1 UNet (diffusers UNet2DConditionModel, 768-v config; MACs do not depend on weights)",
        config={k: v for k, v in FULL_SD21.items()},
        batch=1,
        context_tokens=77,
        counting="conv: Cout*Cin/groups*kh*kw*Hout*Wout; linear: in*out*tokens; attention: QK^T and AV matmuls, "
                 "each B*heads*Nq*Nk*head_dim (softmax, norms, activations, bias and residual adds not counted). "
                 "A unit's MACs are everything computed inside its module (an up-block resnet unit includes its "
                 "conv_shortcut over the concatenated skip and its time_emb_proj).",
        units=[n for n, _ in units],
        kinds={n: k for n, k in units},
        latents={},
        versions=vers,
    )
    for key, r in sizes.items():
        doc["latents"][key] = dict(
            total=r["total"],
            units_total=r["units_total"],
            prunable_fraction=r["prunable_fraction"],
            units=[dict(name=u["name"], conv_linear_macs=u["conv_linear_macs"], attention_macs=u["attention_macs"])
                   for u in r["units"]],
        )
    write_json(os.path.join(OUT_DIR, "units-sd21.json"), doc)

    g = lambda v: v / 1e9  # noqa: E731
    r64, r96 = sizes["64x64"], sizes["96x96"]
    by64 = {u["name"]: u for u in r64["units"]}
    tb0 = by64["down_blocks.0.attentions.0.transformer_blocks.0"]
    tbm = by64["mid_block.attentions.0.transformer_blocks.0"]
    measured = {
        "total conv+linear 64x64": g(r64["total"]["conv_linear_macs"]),
        "total with attention 64x64": g(r64["total"]["all_macs"]),
        "total conv+linear 96x96": g(r96["total"]["conv_linear_macs"]),
        "down_blocks.0.attentions.0.transformer_blocks.0 conv+linear": g(tb0["conv_linear_macs"]),
        "down_blocks.0.attentions.0.transformer_blocks.0 with attention": g(tb0["conv_linear_macs"] + tb0["attention_macs"]),
        "down_blocks.0.resnets.0": g(by64["down_blocks.0.resnets.0"]["conv_linear_macs"]),
        "up_blocks.1.resnets.0": g(by64["up_blocks.1.resnets.0"]["conv_linear_macs"]),
        "mid_block.attentions.0.transformer_blocks.0 conv+linear": g(tbm["conv_linear_macs"]),
        "mid_block.attentions.0.transformer_blocks.0 with attention": g(tbm["conv_linear_macs"] + tbm["attention_macs"]),
        "down_blocks.3.resnets.0": g(by64["down_blocks.3.resnets.0"]["conv_linear_macs"]),
        "mid_block.resnets.0": g(by64["mid_block.resnets.0"]["conv_linear_macs"]),
        "prunable share conv+linear 64x64 (%)": 100 * r64["prunable_fraction"]["conv_linear"],
        "prunable share with attention 64x64 (%)": 100 * r64["prunable_fraction"]["all"],
    }
    print("SD2.1 MACs (G), batch 1, 77 tokens: ALTER.md vs measured")
    for k, v in PAPER.items():
        m = measured[k]
        decimals = len(v.partition(".")[2])
        agrees = round(m, decimals) == float(v)  # the paper's figure is the measured one, rounded
        print(f"  {k:64s} {v:>8s} {m:10.3f}{'' if agrees else '   <-- differs'}")
    print(f"  total with attention 96x96 (not in ALTER.md)                         {g(r96['total']['all_macs']):10.3f}")
    return doc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--macs-only", action="store_true", help="only write units-sd21.json")
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    os.makedirs(OUT_DIR, exist_ok=True)
    vers = versions()
    if not a.macs_only:
        for case in CASES:
            make_case(case, vers)
    sd21_macs(vers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
