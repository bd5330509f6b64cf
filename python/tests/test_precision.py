"""Mixed precision and memory options on the CPU: bf16 autocast with a bf16 teacher, fp16
autocast with loss scaling, and gradient checkpointing finish, and their losses stay close to the
fp32 run's (4 steps, both phases): within 5e-4 + 5% of the fp32 value for the UNet objective
(whose first steps are near 1e-4, the size of bf16 rounding of nearly equal outputs) and 1% for
the hypernetwork objective. Gradient checkpointing in fp32 gives the fp32 run's weights."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import EXAMPLE_DATA, REPO

ARGS = ["--experts", "3", "--keep", "0.7", "--steps", "4", "--hypernet-steps", "2", "--lr-hypernet", "1e-2",
        "--lr-unet", "1e-4", "--warmup", "2", "--seed", "9", "--threads", "2", "--batch", "2"]


def train(model, out, *extra):
    r = subprocess.run([sys.executable, "-m", "alter_torch.compress", str(model), "--data", str(EXAMPLE_DATA), *ARGS, *extra,
                        "-o", str(out)], cwd=REPO / "python", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fp32(example_unet, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32") / "run"
    return out, train(example_unet, out)


@pytest.mark.parametrize("options", [["--precision", "bf16", "--teacher-dtype", "bf16"], ["--precision", "fp16"]])
def test_mixed_precision_losses_stay_close_to_fp32(example_unet, fp32, tmp_path, options):
    ref = fp32[1]
    mine = train(example_unet, tmp_path / "run", *options)
    worst = {}
    for m, r in zip(mine, ref):
        assert m["step"] == r["step"]
        assert abs(m["loss"] - r["loss"]) <= 5e-4 + 0.05 * abs(r["loss"]), (options, m["step"], m["loss"], r["loss"])
        worst["loss"] = max(worst.get("loss", 0), abs(m["loss"] - r["loss"]))
        if "hypernet_loss" in r:
            e = abs(m["hypernet_loss"] - r["hypernet_loss"]) / abs(r["hypernet_loss"])
            worst["hypernet_loss"] = max(worst.get("hypernet_loss", 0), e)
            assert e <= 0.01, (options, m["step"], m["hypernet_loss"], r["hypernet_loss"])
    print(options, "worst: loss absolute", worst["loss"], "hypernet_loss relative", worst["hypernet_loss"])
    assert (tmp_path / "run" / "final" / "decisions.json").exists()


def test_gradient_checkpointing_gives_the_fp32_weights(example_unet, fp32, tmp_path):
    mine = train(example_unet, tmp_path / "run", "--grad-checkpointing")
    a = load_file(str(tmp_path / "run" / "final" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(fp32[0] / "final" / "unet" / "diffusion_pytorch_model.safetensors"))
    worst = max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-30)) for k in b)
    print("gradient checkpointing: worst per-tensor relative L2", worst)
    assert worst <= 1e-6
    assert [m["loss"] for m in mine] == pytest.approx([m["loss"] for m in fp32[1]], rel=1e-6)
