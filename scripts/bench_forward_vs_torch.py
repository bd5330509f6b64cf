"""Side-by-side timing of `alter bench forward` and diffusers/PyTorch on the full-size SD2.1 UNet.

Alternates the two, round after round, on the same machine in one run, so that both see the same
conditions; prints every run and the ratio of best times (alter / torch) per batch size.

    ~/refenv/bin/python scripts/bench_forward_vs_torch.py [--alter .build/release/alter] [--rounds 2] [--runs 3] [--batch 1,2]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alter", default=".build/release/alter")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", default="1,2")
    a = ap.parse_args()
    results = {}
    for b in [int(x) for x in a.batch.split(",")]:
        for r in range(a.rounds):
            al = run_json([a.alter, "bench", "forward", "--batch", str(b), "--runs", str(a.runs), "--skip-fraction", "0", "--json"])
            row = al["rows"][0]
            results.setdefault((b, "alter"), []).extend(row["seconds"])
            print(f"round {r + 1} batch {b} alter: {' '.join(f'{s:.2f}' for s in row['seconds'])} s "
                  f"(peak {al['peak_resident_mb']} MB, {al['blas_core']})", flush=True)
            th = run_json([sys.executable, os.path.join(HERE, "bench_torch_forward.py"), "--batch", str(b), "--runs", str(a.runs), "--json"])
            results.setdefault((b, "torch"), []).extend(th["times_s"])
            print(f"round {r + 1} batch {b} torch: {' '.join(f'{s:.2f}' for s in th['times_s'])} s "
                  f"(peak {th['peak_rss_bytes'] // 2**20} MB)", flush=True)
    print()
    print("| batch | alter best / median (s) | PyTorch best / median (s) | ratio of best | ratio of medians |")
    print("|---:|---:|---:|---:|---:|")
    for b in sorted({k[0] for k in results}):
        al, th = sorted(results[(b, "alter")]), sorted(results[(b, "torch")])
        am, tm = al[len(al) // 2], th[len(th) // 2]
        print(f"| {b} | {al[0]:.2f} / {am:.2f} | {th[0]:.2f} / {tm:.2f} | {al[0] / th[0]:.2f} | {am / tm:.2f} |")


if __name__ == "__main__":
    main()
