"""Original single-file SD2.x checkpoints: the UNet read by `alter_torch` (alter's key table)
equals the diffusers folder `alter convert` writes from the same file, tensor for tensor; loading
is strict; a standalone run takes the original file with --config."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from alter_torch.original import OriginalCheckpointError, load_original_unet
from conftest import EXAMPLE, EXAMPLE_CONFIG, EXAMPLE_DATA, REPO, run

TINY = REPO / "Tests" / "Fixtures" / "tiny-sd2"


@pytest.mark.parametrize("file", ["original.safetensors", "original-fp16.safetensors", "original-bf16.safetensors"])
def test_original_unet_equals_alter_convert(alter, tmp_path, file):
    config = TINY / "diffusers" / "config.json"
    run([alter, "convert", TINY / file, "--config", config, "-o", tmp_path / "unet", "--layout", "diffusers", "--dtype", "fp32"])
    ref = load_file(str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    mine = load_original_unet(str(TINY / file), str(config)).state_dict()
    assert sorted(mine) == sorted(ref)
    differ = [k for k in ref if not torch.equal(mine[k], ref[k])]
    assert differ == []


def test_loading_is_strict(tmp_path):
    tensors = load_file(str(TINY / "original.safetensors"))
    config = str(TINY / "diffusers" / "config.json")
    extra = dict(tensors, **{"model.diffusion_model.input_blocks.1.0.extra.weight": torch.zeros(2)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(OriginalCheckpointError, match="input_blocks.1.0.extra.weight"):
        load_original_unet(str(tmp_path / "extra.safetensors"), config)
    missing = {k: v for k, v in tensors.items() if k != "model.diffusion_model.out.2.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(OriginalCheckpointError, match=r"out\.2\.bias"):
        load_original_unet(str(tmp_path / "missing.safetensors"), config)


def test_standalone_run_from_the_original_example(alter, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "alter_torch.compress", str(EXAMPLE), "--config", str(EXAMPLE_CONFIG),
                        "--data", str(EXAMPLE_DATA), "--experts", "2", "--keep", "0.8", "--steps", "2", "-o", str(out),
                        "--threads", "2"], cwd=REPO / "python", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["config_path"] == str(EXAMPLE_CONFIG)
    run([alter, "export", out, "-o", tmp_path / "b.alter"])
