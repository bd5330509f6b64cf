#!/usr/bin/env bash
# Every test: `swift test`, then the PyTorch trainer's tests (python/tests) against the debug
# `alter` binary. ALTER_PYTHON is the Python that has `alter-torch`'s dependencies and pytest
# (default: python3; `bash scripts/python-env.sh VENV` makes one). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${ALTER_PYTHON:-python3}
if ! "$python" -c 'import torch, diffusers, safetensors, pytest' 2>/dev/null; then
  echo "test-all.sh: $python lacks torch, diffusers, safetensors or pytest; make an environment with" >&2
  echo "  bash scripts/python-env.sh VENV && ALTER_PYTHON=VENV/bin/python bash scripts/test-all.sh" >&2
  exit 2
fi
swift build
start=$(date +%s)
swift test
echo "test-all.sh: swift test took $(( $(date +%s) - start )) s"
start=$(date +%s)
# pytest's exit status 5 (no tests collected) is a failure here: the suite must run.
ALTER_BIN="$PWD/.build/debug/alter" "$python" -m pytest python/tests -q -rs --durations=8 "$@"
echo "test-all.sh: the Python tests took $(( $(date +%s) - start )) s"
