"""Data parallelism: `torchrun --standalone --nproc_per_node 2` (gloo, CPU) with batch B per
process, and one process with --grad-accum 2 and batch B, give what one process with batch 2B
gives after K steps spanning both phases: the whole UNet within 1e-5 relative (L2 over all
weights), the hypernetwork within 1e-5, identical decisions, and every step's losses within 1e-4
(the replay's tolerance: a loss near 0.002 is the mean of squared differences of nearly equal
outputs, whose summation order differs)."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from conftest import EXAMPLE_DATA, REPO

ARGS = ["--experts", "3", "--keep", "0.7", "--steps", "6", "--hypernet-steps", "3", "--lr-hypernet", "1e-2",
        "--lr-unet", "1e-4", "--warmup", "2", "--seed", "9", "--threads", "1"]


def start(prefix, model, out, *extra):
    return subprocess.Popen([*prefix, "alter_torch.compress", str(model), "--data", str(EXAMPLE_DATA), *ARGS, *extra,
                             "-o", str(out)], cwd=REPO / "python", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p):
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err


def flat(path, names=None):
    t = load_file(str(path))
    names = names or sorted(t)
    return torch.cat([t[k].flatten() for k in names]), names


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_two_processes_and_accumulation_equal_one_big_batch(example_unet, tmp_path):
    finish(start([sys.executable, "-m"], example_unet, tmp_path / "one", "--batch", "4"))
    finish(start([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"],
                 example_unet, tmp_path / "ddp", "--batch", "2"))
    finish(start([sys.executable, "-m"], example_unet, tmp_path / "accum", "--batch", "2", "--grad-accum", "2"))
    ref, names = flat(tmp_path / "one" / "final" / "unet" / "diffusion_pytorch_model.safetensors")
    href, hnames = flat(tmp_path / "one" / "checkpoint" / "hypernet.safetensors")
    ref_metrics = [json.loads(l) for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    ref_decisions = json.loads((tmp_path / "one" / "final" / "decisions.json").read_text())["decisions"]
    for run in ("ddp", "accum"):
        d = tmp_path / run
        config = json.loads((d / "config.json").read_text())
        assert config["batch"] == 4
        w, _ = flat(d / "final" / "unet" / "diffusion_pytorch_model.safetensors", names)
        h, _ = flat(d / "checkpoint" / "hypernet.safetensors", hnames)
        print(f"{run}: UNet relative L2 {rel(w, ref):.2e}, hypernetwork {rel(h, href):.2e}")
        assert rel(w, ref) <= 1e-5
        assert rel(h, href) <= 1e-5
        assert json.loads((d / "final" / "decisions.json").read_text())["decisions"] == ref_decisions
        metrics = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
        assert len(metrics) == len(ref_metrics) == 6
        worst = 0.0
        for m, r in zip(metrics, ref_metrics):
            assert m.keys() == r.keys()
            for k in ("loss", "output_kd_loss", "feature_kd_loss", "denoise_loss", "hypernet_loss", "performance_loss"):
                if k in r and r[k] != 0:
                    worst = max(worst, abs(m[k] - r[k]) / abs(r[k]))
                    assert abs(m[k] - r[k]) <= 1e-4 * abs(r[k]), (run, m["step"], k, m[k], r[k])
        print(f"{run}: worst relative loss difference {worst:.2e}")
