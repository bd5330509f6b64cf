#!/usr/bin/env python3
"""Time diffusers' full-size SD2.1 UNet forward on the CPU: the PyTorch yardstick for `alter`.

Usage (from the repository root):

    ~/refenv/bin/python scripts/bench_torch_forward.py --batch 1
    ~/refenv/bin/python scripts/bench_torch_forward.py --batch 2 --runs 5 --json
    ~/refenv/bin/python scripts/bench_torch_forward.py --skip-half     # hard-skip ~half the unit MACs

The UNet is diffusers' UNet2DConditionModel built from the SD2.1 768-v config with a random init
(torch.manual_seed(0); timings do not depend on the weights), fp32, eval mode, under
torch.inference_mode, with diffusers' default attention processor (AttnProcessor2_0, i.e.
F.scaled_dot_product_attention). Inputs: a 64x64x4 latent, a 77x1024 context.
One warm-up forward, then --runs timed forwards. GFLOP/s counts 2 FLOPs per MAC, with the MACs
measured by scripts/make_forward_fixtures.py (Tests/Fixtures/forward/units-sd21.json: conv,
linear and attention matmuls; 402.13 G per sample at 64x64), minus the skipped units' MACs.

--skip-half hard-skips units (ALTER.md section 2 semantics, see make_forward_fixtures.UnitOverride)
chosen by a fixed rule: sort the 34 units by MACs (conv+linear+attention, at the benchmark's
latent size) from largest to smallest, ties in execution order, and skip every other one starting
with the largest. That skips about half of the unit MACs; the chosen units are printed.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402

import diffusers  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import FULL_SD21  # noqa: E402
from make_forward_fixtures import OUT_DIR, UnitOverride, count_macs, discover_units  # noqa: E402

DEFAULT_MACS_64 = 402.1e9


def unit_macs(latent, tokens):
    """{'total': int, 'units': [(name, kind, macs)]} at the given latent size, batch 1."""
    path = os.path.join(OUT_DIR, "units-sd21.json")
    key = f"{latent}x{latent}"
    if tokens == 77 and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if key in doc["latents"]:
            r = doc["latents"][key]
            return dict(total=r["total"]["all_macs"], source=os.path.relpath(path),
                        units=[(u["name"], doc["kinds"][u["name"]], u["conv_linear_macs"] + u["attention_macs"])
                               for u in r["units"]])
    with torch.device("meta"):
        meta = UNet2DConditionModel(**FULL_SD21)
    units = discover_units(meta, (1, 4, latent, latent), (1, tokens, 1024), device="meta")
    r = count_macs(meta, units, latent, latent, tokens, device="meta")
    return dict(total=r["total"]["all_macs"], source="measured (meta device)",
                units=[(u["name"], u["kind"], u["conv_linear_macs"] + u["attention_macs"]) for u in r["units"]])


def skip_half_rule(units):
    """Sort by MACs descending (ties: execution order), skip every other one, largest first."""
    order = sorted(range(len(units)), key=lambda i: (-units[i][2], i))
    chosen = set(order[0::2])
    return [units[i] for i in range(len(units)) if i in chosen]


def peak_rss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="timed forwards after one warm-up (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--latent", type=int, default=64, help="latent height = width (default 64)")
    ap.add_argument("--tokens", type=int, default=77, help="context length (default 77)")
    ap.add_argument("--skip-half", action="store_true", help="hard-skip units covering about half the unit MACs")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    log = (lambda *x, **k: None) if a.json else print

    macs = unit_macs(a.latent, a.tokens)
    total_macs = macs["total"] if macs["total"] else DEFAULT_MACS_64
    unit_total = sum(m for _, _, m in macs["units"])
    skipped = skip_half_rule(macs["units"]) if a.skip_half else []
    skipped_macs = sum(m for _, _, m in skipped)
    run_macs = total_macs - skipped_macs

    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**FULL_SD21).eval()
    build_s = time.perf_counter() - t0
    nparams = sum(p.numel() for p in unet.parameters())
    log(f"SD2.1 UNet, random init: {nparams:,} parameters, fp32, built in {build_s:.1f} s; "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, {a.threads} threads")

    units = discover_units(unet, (1, 4, 8, 8), (1, 3, 1024))
    assert [n for n, _ in units] == [n for n, _, _ in macs["units"]], "unit lists disagree"
    if skipped:
        log(f"--skip-half: skipping {len(skipped)} of {len(units)} units, {skipped_macs / 1e9:.2f} G of "
            f"{unit_total / 1e9:.2f} G unit MACs ({100 * skipped_macs / unit_total:.1f}%), "
            f"{100 * skipped_macs / total_macs:.1f}% of the UNet's {total_macs / 1e9:.2f} G:")
        for n, k, m in skipped:
            log(f"    {n:52s} {k:11s} {m / 1e9:7.2f} G")

    g = torch.Generator().manual_seed(1)
    sample = torch.randn(a.batch, 4, a.latent, a.latent, generator=g)
    ctx = torch.randn(a.batch, a.tokens, 1024, generator=g)
    t = torch.tensor([981.0, 41.0] * ((a.batch + 1) // 2))[: a.batch]

    times = []
    with UnitOverride(unet, units, skip=[n for n, _, _ in skipped]), torch.inference_mode():
        t0 = time.perf_counter()
        out = unet(sample, t, encoder_hidden_states=ctx).sample
        warm = time.perf_counter() - t0
        log(f"warm-up: {warm:.2f} s")
        for i in range(a.runs):
            t0 = time.perf_counter()
            out = unet(sample, t, encoder_hidden_states=ctx).sample
            times.append(time.perf_counter() - t0)
            log(f"run {i + 1}: {times[-1]:.2f} s")
    assert torch.isfinite(out).all()

    tmin, tmed = min(times), statistics.median(times)
    flops = 2 * run_macs * a.batch
    res = dict(
        batch=a.batch, latent=a.latent, tokens=a.tokens, threads=a.threads, runs=a.runs,
        skip_half=a.skip_half, skipped_units=[n for n, _, _ in skipped],
        macs_per_sample=run_macs, macs_source=macs["source"], warmup_s=warm, times_s=times,
        min_s=tmin, median_s=tmed, min_s_per_sample=tmin / a.batch,
        gflops_at_min=flops / tmin / 1e9, gflops_at_median=flops / tmed / 1e9,
        peak_rss_bytes=peak_rss_bytes(), loadavg_before=load_before, loadavg_after=os.getloadavg(),
        torch=torch.__version__, diffusers=diffusers.__version__, python=platform.python_version(),
        attention_processor=type(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor).__name__,
    )
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"batch {a.batch}{' (skip-half)' if a.skip_half else ''}: {a.runs} runs, "
              f"min {tmin:.2f} s, median {tmed:.2f} s per forward ({tmin / a.batch:.2f} s per sample at min); "
              f"{run_macs / 1e9:.1f} G MACs per sample -> {res['gflops_at_min']:.1f} GFLOP/s at min, "
              f"{res['gflops_at_median']:.1f} at median; peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB; "
              f"load average {load_before[0]:.2f} before, {res['loadavg_after'][0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
