#!/usr/bin/env python3
"""Check that alter_bundle.py computes what alter computes, expert by expert.

    python check_against_alter.py BUNDLE --alter .build/release/alter --reference RUN/final/unet

For each expert (or those given with --expert), a seeded probe input is written (sample at the
bundle's MAC latent size, a timestep the expert serves, a context), `alter forward REFERENCE
--skip <the expert's skipped units>` is run on it (a bundle's weights are its run's final UNet,
RUN/final/unet), and its output is compared with the bundle expert loaded into diffusers by
alter_bundle.py. Printed: the max absolute difference, the max difference relative to the largest
|output| (as `alter verify --deep` measures parity) and the relative L2 difference. The exit status
is 1 when any relative difference exceeds --tolerance (default 1e-4).

Without --reference, the bundle itself is given to `alter forward` (with --expert K), which works
only if that alter's forward accepts bundles.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from alter_bundle import load_bundle, load_bundle_unet, set_expert, verify_checksums  # noqa: E402


def probe(bundle, expert, seed, latent=None, context=None):
    cfg, macs = bundle.architecture, bundle.manifest["macs"]
    h = latent or macs["latent_height"]
    w = latent or macs["latent_width"]
    s = context or macs["context_length"]
    ranges = bundle.experts[expert]["timesteps"]
    t = (ranges[0][0] + ranges[0][1]) // 2 if ranges else 500
    g = torch.Generator().manual_seed(seed * 1000 + expert)
    return dict(
        sample=torch.randn(1, cfg["in_channels"], h, w, generator=g),
        timestep=torch.tensor([float(t)]),
        context=torch.randn(1, s, cfg["cross_attention_dim"], generator=g),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--alter", required=True, help="the alter binary")
    ap.add_argument("--reference", help="the run's final UNet (RUN/final/unet); default: the bundle itself")
    ap.add_argument("--expert", type=int, action="append", help="check only these experts (repeatable)")
    ap.add_argument("--latent", type=int, help="probe latent size (default: the bundle's MAC latent size)")
    ap.add_argument("--context", type=int, help="probe context length (default: the bundle's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--keep", metavar="DIR", help="keep the probe and output files in DIR")
    a = ap.parse_args()

    bundle = load_bundle(a.bundle)
    failures = verify_checksums(bundle)
    if failures:
        print("checksums FAIL:\n  " + "\n  ".join(failures))
        return 1
    print(f"{a.bundle}: {len(bundle.experts)} experts, {len(bundle.units)} units, checksums ok")
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    unet = load_bundle_unet(bundle, dtype=torch.float32)
    work = a.keep or tempfile.mkdtemp(prefix="alter-check-")
    os.makedirs(work, exist_ok=True)
    worst = 0.0
    for e in a.expert or range(len(bundle.experts)):
        x = probe(bundle, e, a.seed, a.latent, a.context)
        inputs = os.path.join(work, f"probe-{e}.safetensors")
        output = os.path.join(work, f"alter-{e}.safetensors")
        save_file({k: v.contiguous() for k, v in x.items()}, inputs)
        skipped = bundle.experts[e]["skipped_units"]
        cmd = [a.alter, "forward", a.reference or a.bundle, "--inputs", inputs, "-o", output]
        if a.reference is None:
            cmd += ["--expert", str(e)]
        elif skipped:
            cmd += ["--skip", ",".join(skipped)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"alter forward failed ({' '.join(cmd)}):\n{r.stderr}")
            return 2
        ref = load_file(output)["out"].double()

        set_expert(unet, e)
        with torch.no_grad():
            got = unet(x["sample"], x["timestep"], encoder_hidden_states=x["context"]).sample.double()
        diff = (got - ref).abs()
        max_abs = float(diff.max())
        rel = max_abs / max(float(ref.abs().max()), 1e-30)
        rel_l2 = float((got - ref).norm() / ref.norm())
        worst = max(worst, rel)
        t = int(x["timestep"][0])
        print(f"expert {e} (t={t}, {len(skipped)} of {len(bundle.units)} units skipped): "
              f"max |diff| {max_abs:.3e}, relative to max |out| {rel:.3e}, rel L2 {rel_l2:.3e}"
              f"{'' if rel <= a.tolerance else '   <-- above tolerance'}")
    dtypes = {t["dtype"] for m in bundle.experts for t in m["tensors"]}
    if a.reference and dtypes != {"F32"} and worst > a.tolerance:
        print(f"note: the bundle stores {'/'.join(sorted(dtypes))}, the reference F32: the difference includes that "
              f"rounding; check against the bundle itself (no --reference) for parity")
    ok = worst <= a.tolerance
    print(f"{'ok' if ok else 'FAIL'}: largest relative difference {worst:.3e} (tolerance {a.tolerance:.0e})")
    if not a.keep:
        for f in os.listdir(work):
            os.remove(os.path.join(work, f))
        os.rmdir(work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
