"""Standalone runs (no --replay): alter's cost model and hypernetwork initialisation ported to
Python, and a run on the example that alter exports, verifies, inspects and samples."""

import json
import subprocess
import sys

import pytest
import torch

from alter_torch.costmodel import CostModel
from alter_torch.draws import RecordedDraws, TorchDraws
from alter_torch.data import TrainingData
from alter_torch.trainer import Config, Settings, Trainer
from alter_torch.units import load_unet, unit_list
from conftest import EXAMPLE, EXAMPLE_CONFIG, EXAMPLE_DATA, REPO, run

TINY_SD2 = REPO / "Tests" / "Fixtures" / "tiny-sd2" / "diffusers"
UNITS_SD21 = REPO / "Tests" / "Fixtures" / "forward" / "units-sd21.json"
PYTHON = REPO / "python"


def costs_of(model):
    return [dict(name=n, kind=k, macs=c.total, macs_conv_linear=c.conv_linear, macs_attention=c.attention)
            for n, k, c in model.units]


@pytest.mark.parametrize("case", ["example", "tiny-sd2"])
def test_cost_model_equals_alter_inspect(alter, case):
    if case == "example":
        model, config, extra, latent, context = EXAMPLE, json.loads(EXAMPLE_CONFIG.read_text()), ["--config", EXAMPLE_CONFIG], 16, 5
    else:
        model, config, extra, latent, context = TINY_SD2, json.loads((TINY_SD2 / "config.json").read_text()), [], 24, 7
    ref = json.loads(run([alter, "inspect", model, *extra, "--units", "--latent", str(latent), "--context", str(context),
                          "--json"]).stdout)
    mine = CostModel(config, latent, latent, context)
    assert costs_of(mine) == [{k: u[k] for k in ("name", "kind", "macs", "macs_conv_linear", "macs_attention")} for u in ref["units"]]
    assert (mine.total.total, mine.total.conv_linear, mine.total.attention) == \
        (ref["total"]["macs"], ref["total"]["macs_conv_linear"], ref["total"]["macs_attention"])


def test_cost_model_equals_diffusers_hook_counts_on_sd21():
    """SD2.1 at 64x64 and 96x96 (77 tokens): every unit and the totals equal the MACs counted
    with hooks on diffusers (the fixture alter's CostModelTests check too)."""
    fixture = json.loads(UNITS_SD21.read_text())
    for key, entry in fixture["latents"].items():
        size = int(key.split("x")[0])
        mine = CostModel(fixture["config"], size, size, fixture["context_tokens"])
        assert mine.total.conv_linear == entry["total"]["conv_linear_macs"]
        assert mine.total.attention == entry["total"]["attention_macs"]
        assert [(n, c.conv_linear, c.attention) for n, _, c in mine.units] == \
            [(u["name"], u["conv_linear_macs"], u["attention_macs"]) for u in entry["units"]]


def test_initialisation_and_shares_equal_alters(alter, example_unet, tmp_path):
    """With the same seed, a standalone trainer starts from exactly alter's hypernetwork (Z and
    every parameter bit for bit), unit shares, dense MACs and initial decisions."""
    args = ["--experts", "3", "--keep", "0.6", "--steps", "2", "--hypernet-steps", "1", "--seed", "11"]
    run([alter, "compress", EXAMPLE, "--config", EXAMPLE_CONFIG, "--data", EXAMPLE_DATA, *args,
         "-o", tmp_path / "run", "--record-draws", tmp_path / "draws.safetensors"])
    rec = RecordedDraws(str(tmp_path / "draws.safetensors"))
    student, teacher = load_unet(str(example_unet)), load_unet(str(example_unet))
    data = TrainingData(str(EXAMPLE_DATA))
    config = Config(model=str(example_unet), data=str(EXAMPLE_DATA), steps=2, hypernet_steps=1,
                    settings=Settings(experts=3, keep=0.6), seed=11)
    draws = TorchDraws(11, 3, len(unit_list(student.config)), True, tuple(data.latents_shape[1:]), data.count)
    t = Trainer(config, student, teacher, data, draws)
    assert torch.equal(t.hypernet.generator_input, rec.get("init.generator_input"))
    for name, p in t.hypernet.named_parameters():
        assert torch.equal(p.detach(), rec.get("init.hypernet." + name)), name
    assert t.budget.share == rec.get("init.unit_share").tolist()
    assert t.budget.fixed_share == float(rec.get("init.fixed_share"))
    assert t.dense_macs == int(rec.meta["dense_macs"])
    assert t.initial_decisions == rec.decisions("init.initial_decisions")


def test_standalone_run_is_accepted_by_alter(alter, example_unet, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "alter_torch.compress", str(example_unet), "--data", str(EXAMPLE_DATA),
                        "--experts", "4", "--keep", "0.7", "--steps", "12", "--hypernet-steps", "6", "--batch", "2",
                        "--lr-hypernet", "1e-2", "--warmup", "2", "--seed", "3", "-o", str(out), "--threads", "2"],
                       cwd=PYTHON, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    decisions = json.loads((out / "final" / "decisions.json").read_text())
    assert abs(decisions["kept_mac_fraction"] - 0.7) <= 0.01
    assert decisions["budget_projection"]["within_tolerance"]
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 13))
    hyper_keys = {"step", "loss", "output_kd_loss", "feature_kd_loss", "denoise_loss", "kept_mac_fraction", "expert_shares",
                  "lr_unet", "grad_norm_unet", "seconds", "hypernet_loss", "performance_loss", "ratio_loss", "balance_loss",
                  "lr_hypernet", "grad_norm_hypernet"}
    assert set(lines[0]) == hyper_keys
    assert set(lines[-1]) == hyper_keys - {"hypernet_loss", "performance_loss", "ratio_loss", "balance_loss", "lr_hypernet",
                                           "grad_norm_hypernet"}
    bundle = tmp_path / "b.alter"
    run([alter, "export", out, "-o", bundle])
    run([alter, "verify", bundle, "--keep", "0.7", "--deep", "--reference", out / "final" / "unet"])
    inspect = json.loads(run([alter, "inspect", bundle, "--json"]).stdout)
    assert len(inspect["experts"]) == 4
    assert inspect["routing_segment_count"] == decisions["routing_segment_count"]
    run([alter, "sample", bundle, "--context", EXAMPLE_DATA, "--rows", "0,1", "--steps", "3", "-o", tmp_path / "lat.safetensors"])
    assert (tmp_path / "lat.safetensors").stat().st_size > 0
