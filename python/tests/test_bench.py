"""`python -m alter_torch.bench` runs on the CPU with the small configuration (the full SD2.1
configuration is for a GPU; python/README.md)."""

import json
import subprocess
import sys

from conftest import REPO


def bench(*args):
    r = subprocess.run([sys.executable, "-m", "alter_torch.bench", "--device", "cpu", "--config", "small", *args],
                       cwd=REPO / "python", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_training_step_timing_and_memory():
    out = bench("--latent", "16", "--batch", "2", "--steps", "1", "--threads", "2")
    (r,) = out["results"]
    assert (r["latent"], r["batch"], r["dense_macs_per_sample"]) == (16, 2, 49801472)  # alter inspect's total of the example
    assert r["seconds_per_step_hypernet_phase"] > 0 and r["seconds_per_step_frozen_phase"] > 0
    assert r["peak_memory_bytes"] > 10 << 20


def test_saved_activations_grow_with_the_latent_and_shrink_with_checkpointing():
    plain = bench("--latent", "16,32", "--saved-activations")["results"]
    small, large = (r["saved_activation_bytes_per_sample"] for r in plain)
    assert 3.5 * small < large < 4.5 * small  # 4x the pixels
    (ckpt,) = bench("--latent", "16", "--saved-activations", "--grad-checkpointing")["results"]
    assert ckpt["saved_activation_bytes_per_sample"] < small / 2
