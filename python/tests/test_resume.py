"""A standalone run stopped by SIGTERM during the hypernetwork phase and resumed ends with the
same UNet weights (bit for bit), decisions and metrics as an uninterrupted one; alter resumes
the stopped run too."""

import json
import shutil
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from conftest import EXAMPLE_DATA, REPO, run

ARGS = ["--experts", "3", "--keep", "0.7", "--steps", "40", "--hypernet-steps", "10", "--batch", "2",
        "--lr-hypernet", "1e-2", "--warmup", "3", "--seed", "5", "--threads", "1"]


def compress(*args):
    return [sys.executable, "-m", "alter_torch.compress", *map(str, args)]


def metric_lines(path):
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    for l in lines:
        l.pop("seconds")
    return lines


def test_sigterm_and_resume_equal_an_uninterrupted_run(alter, example_unet, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    r = subprocess.run(compress(example_unet, "--data", EXAMPLE_DATA, *ARGS, "-o", whole), cwd=REPO / "python",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    p = subprocess.Popen(compress(example_unet, "--data", EXAMPLE_DATA, *ARGS, "-o", parts), cwd=REPO / "python",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = parts / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    state = json.loads((parts / "checkpoint" / "state.json").read_text())
    stopped = state["step"]
    assert 4 <= stopped < 10, f"stopped after step {stopped}: not in the hypernetwork phase"
    assert not (parts / "final").exists()
    assert len(metrics.read_text().splitlines()) == stopped

    # alter takes the stopped run over (with its own generators from here on).
    by_alter = tmp_path / "by-alter"
    shutil.copytree(parts, by_alter)
    run([alter, "compress", "--resume", by_alter])
    assert json.loads((by_alter / "final" / "decisions.json").read_text())["budget_projection"]["within_tolerance"]

    r = subprocess.run(compress("--resume", parts, "--threads", "1"), cwd=REPO / "python", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a = load_file(str(whole / "final" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(parts / "final" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    differing = [k for k in a if not (a[k] == b[k]).all()]
    assert differing == [], f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    assert (whole / "final" / "decisions.json").read_text() == (parts / "final" / "decisions.json").read_text()
    assert metric_lines(whole / "metrics.jsonl") == metric_lines(parts / "metrics.jsonl")
    for name in ("unet-adamw.safetensors", "hypernet.safetensors"):
        x, y = load_file(str(whole / "checkpoint" / name)), load_file(str(parts / "checkpoint" / name))
        assert all((x[k] == y[k]).all() for k in x), name
