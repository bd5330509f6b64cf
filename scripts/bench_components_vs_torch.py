"""Side-by-side timing of `alter bench components` and PyTorch on SD2.1's text encoder and VAE.

Parts (as `alter bench components --parts`):
  text       text encoder (23 layers, width 1024, 16 heads, GELU, causal mask, final LN), one 77-token prompt
  decode64   VAE decode of a 64x64 latent (512x512 image)
  decode96   VAE decode of a 96x96 latent (768x768 image)
  encode512  VAE encode of a 512x512 image (mean of the latent distribution)

Every (round, part) runs `alter` and PyTorch in two fresh processes, one after the other (the order
alternates by round), each with one warm-up call and --runs timed calls, so both see the same
machine conditions and each process's peak resident memory is that part's own. Prints every run,
then per part: best and median of each side, the per-round ratio of medians (alter / torch) with
its mean and standard deviation, the ratio of best times, and the peak resident memory of each side.

PyTorch side: transformers' CLIPTextModel and diffusers' AutoencoderKL built from SD2.1's configs
(`stabilityai/stable-diffusion-2-1` text_encoder/ and vae/ config.json; the same dicts as SD21 in
make_text_encoder_fixtures.py and SD21_CONFIG in make_vae_fixtures.py, repeated here so that a
worker imports only the library it times), random init (torch.manual_seed(0); timings do not
depend on the weights), float32, eval mode, torch.inference_mode, default attention (SDPA),
torch.set_num_threads(--threads, default: the cores alter's OpenBLAS and workers use).

    ~/refenv/bin/python scripts/bench_components_vs_torch.py [--alter .build/release/alter] [--rounds 3] [--runs 3]
        [--parts text,decode64,decode96,encode512] [--json-out FILE]
    ~/refenv/bin/python scripts/bench_components_vs_torch.py --torch-part decode64 --runs 3   # one PyTorch worker
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PARTS = ["text", "decode64", "decode96", "encode512"]

TEXT_SD21 = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                 projection_dim=1024, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
VAE_SD21 = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, act_fn="silu", latent_channels=4,
    norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
)
# The prompt alter times (ComponentBenchmark.promptIDs): BOS, eight word ids, EOS, padding id 0.
PROMPT_IDS = ([49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407] + [0] * 77)[:77]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def torch_worker(part, runs, threads):
    """Times one part in this process; returns a dict like one row of `alter bench components --json`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if part == "text":
        from transformers import CLIPTextConfig, CLIPTextModel
        model = CLIPTextModel(CLIPTextConfig(**TEXT_SD21)).eval()
        x = torch.tensor([PROMPT_IDS])
        call = lambda: model(input_ids=x).last_hidden_state  # noqa: E731
    else:
        from diffusers import AutoencoderKL
        model = AutoencoderKL(**VAE_SD21).eval()
        if part.startswith("decode"):
            side = int(part[len("decode"):])
            x = torch.randn(1, 4, side, side, generator=g)
            call = lambda: model.decode(x).sample  # noqa: E731
        else:
            side = int(part[len("encode"):])
            x = torch.rand(1, 3, side, side, generator=g) * 2 - 1
            call = lambda: model.encode(x).latent_dist.mean  # noqa: E731
    times = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = call()
        warm = time.perf_counter() - t0
        for _ in range(runs):
            t0 = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - t0)
    assert torch.isfinite(out).all()
    return dict(part=part, input_shape=list(x.shape), output_shape=list(out.shape), warmup_seconds=warm, seconds=times,
                best_seconds=min(times), median_seconds=statistics.median(times), peak_resident_mb=peak_rss_mb(),
                threads=threads, torch=torch.__version__,
                attention=model.config._attn_implementation if part == "text"
                else type(model.decoder.mid_block.attentions[0].processor).__name__)


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alter", default=".build/release/alter")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="timed calls per process, after one warm-up")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores, as alter)")
    ap.add_argument("--json-out", help="also write every run and the summary to this file")
    ap.add_argument("--torch-part", choices=PARTS, help="worker mode: time one part with PyTorch and print JSON")
    a = ap.parse_args()
    if a.torch_part:
        print(json.dumps(torch_worker(a.torch_part, a.runs, a.threads)))
        return 0

    parts = [p for p in a.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown parts {unknown}; expected some of {PARTS}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch threads {a.threads}", flush=True)
    runs = {(p, side): [] for p in parts for side in ("alter", "torch")}
    for r in range(a.rounds):
        for p in parts:
            order = ("alter", "torch") if r % 2 == 0 else ("torch", "alter")
            for side in order:
                if side == "alter":
                    rep = run_json([a.alter, "bench", "components", "--parts", p, "--runs", str(a.runs), "--json"])
                    row = dict(rep["rows"][0], threads=rep["threads"], blas_core=rep["blas_core"])
                else:
                    row = run_json([sys.executable, os.path.abspath(__file__), "--torch-part", p, "--runs", str(a.runs),
                                    "--threads", str(a.threads)])
                row["load_average"] = os.getloadavg()[0]
                runs[(p, side)].append(row)
                print(f"round {r + 1} {p:9s} {side:5s}: {' '.join(f'{s:.3f}' for s in row['seconds'])} s "
                      f"(warm-up {row['warmup_seconds']:.3f} s, peak {row['peak_resident_mb']} MB, load {row['load_average']:.2f})",
                      flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| part | alter best / median (s) | PyTorch best / median (s) | ratio of medians per round | mean +- sd | ratio of best "
          "| alter peak (MB) | PyTorch peak (MB) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    summary = []
    for p in parts:
        al, th = runs[(p, "alter")], runs[(p, "torch")]
        a_all = [s for row in al for s in row["seconds"]]
        t_all = [s for row in th for s in row["seconds"]]
        ratios = [x["median_seconds"] / y["median_seconds"] for x, y in zip(al, th)]
        mean = statistics.mean(ratios)
        sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
        best = min(a_all) / min(t_all)
        a_peak = max(row["peak_resident_mb"] for row in al)
        t_peak = max(row["peak_resident_mb"] for row in th)
        summary.append(dict(part=p, alter_best=min(a_all), alter_median=statistics.median(a_all), torch_best=min(t_all),
                            torch_median=statistics.median(t_all), round_ratios=ratios, ratio_mean=mean, ratio_sd=sd,
                            ratio_of_best=best, alter_peak_mb=a_peak, torch_peak_mb=t_peak))
        print(f"| {p} | {min(a_all):.3f} / {statistics.median(a_all):.3f} | {min(t_all):.3f} / {statistics.median(t_all):.3f} "
              f"| {' '.join(f'{x:.2f}' for x in ratios)} | {mean:.2f} +- {sd:.2f} | {best:.2f} | {a_peak:,} | {t_peak:,} |")
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(dict(runs={f"{p}/{s}": v for (p, s), v in runs.items()}, summary=summary), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
