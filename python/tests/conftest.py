"""Shared fixtures: the built `alter` binary (tests that need it are skipped, with the reason,
when it is not built) and the example model converted to a diffusers folder."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sd21-tiny.safetensors"
EXAMPLE_CONFIG = REPO / "examples" / "sd21-tiny.config.json"
EXAMPLE_DATA = REPO / "examples" / "sd21-tiny-data.safetensors"
EXAMPLE_INPUTS = REPO / "examples" / "sd21-tiny-inputs.safetensors"


def alter_binary():
    if os.environ.get("ALTER_BIN"):
        return Path(os.environ["ALTER_BIN"])
    for kind in ("debug", "release"):
        p = REPO / ".build" / kind / "alter"
        if p.exists():
            return p
    return None


@pytest.fixture(scope="session")
def alter():
    p = alter_binary()
    if p is None or not p.exists():
        pytest.skip("the alter binary is not built: run `swift build` in the repository (or set ALTER_BIN)")
    return p


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr}")
    return r


@pytest.fixture(scope="session")
def example_unet(alter, tmp_path_factory):
    """The example UNet as an fp32 diffusers folder, converted by alter."""
    out = tmp_path_factory.mktemp("example") / "unet"
    run([alter, "convert", EXAMPLE, "--config", EXAMPLE_CONFIG, "-o", out, "--layout", "diffusers", "--dtype", "fp32"])
    return out
