"""A non-finite objective stops a standalone run with exit status 1 and an error naming the step;
in the UNet phase after a checkpoint of the last good step (as alter), in the hypernetwork phase
without one (the UNet update of that step has already been applied)."""

import json
import signal

import pytest

from alter_torch import compress as compress_mod
from alter_torch.trainer import Trainer
from conftest import EXAMPLE_DATA

ARGS = ["--experts", "2", "--keep", "0.7", "--steps", "8", "--hypernet-steps", "4", "--batch", "2",
        "--warmup", "2", "--seed", "3", "--threads", "1", "--checkpoint-minutes", "0"]


@pytest.mark.parametrize("phase", ["unet", "hypernet"])
def test_nonfinite_objective_stops_with_the_last_good_checkpoint(example_unet, tmp_path, monkeypatch, capsys, phase):
    bad_step = 3  # 1-based, within the hypernetwork phase (steps 1-4)
    objective = Trainer.objective
    calls = {"unet": 0}

    def poisoned(self, out, feats, teacher_out, teacher_feats, target):
        total, *rest = objective(self, out, feats, teacher_out, teacher_feats, target)
        # objective runs once per UNet phase and once per hypernetwork phase of a step
        if self.step + 1 == bad_step:
            calls["unet"] += 1
            if (phase == "unet" and calls["unet"] == 1) or (phase == "hypernet" and calls["unet"] == 2):
                total = total * float("nan")
        return (total, *rest)

    monkeypatch.setattr(Trainer, "objective", poisoned)
    out = tmp_path / "run"
    # main() installs its SIGINT/SIGTERM handlers in this (pytest's) process: put pytest's back after.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = compress_mod.main([str(example_unet), "--data", str(EXAMPLE_DATA), *ARGS, "-o", str(out)])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    err = capsys.readouterr().err
    assert code == 1, err
    what = "the UNet objective is nan" if phase == "unet" else "the hypernetwork objective is nan"
    assert f"step {bad_step}: {what}" in err, err
    assert not (out / "final").exists()
    metrics = (out / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == bad_step - 1
    checkpoint = out / "checkpoint" / "state.json"
    if phase == "unet":
        assert f"checkpoint of step {bad_step - 1} written" in err, err
        assert json.loads(checkpoint.read_text())["step"] == bad_step - 1
    else:
        assert not checkpoint.exists(), "a hypernetwork-phase failure must not checkpoint the half-applied step"
