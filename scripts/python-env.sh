#!/usr/bin/env bash
# Creates (or updates) a virtual environment VENV outside the repository with the PyTorch trainer
# `alter-torch` (python/) and pytest: `bash scripts/python-env.sh VENV`. A CPU torch wheel found
# in /opt/wheels (this project's machines) is installed first, so pip keeps it instead of
# downloading a CUDA build; elsewhere torch comes from the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: scripts/python-env.sh VENV}
case "$(cd "$(dirname "$venv")" 2>/dev/null && pwd)/" in
  "$PWD"/*) echo "python-env.sh: $venv is inside the repository; put the environment elsewhere" >&2; exit 2 ;;
esac
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
wheel=$(ls /opt/wheels/torch-*.whl 2>/dev/null | sort | tail -n 1 || true)
if [ -n "$wheel" ]; then
  "$venv/bin/pip" install --quiet "$wheel"
fi
"$venv/bin/pip" install --quiet "./python[test]"
"$venv/bin/python" -c 'import torch, diffusers; print(f"python-env.sh: torch {torch.__version__}, diffusers {diffusers.__version__}")'
