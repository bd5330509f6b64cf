#!/usr/bin/env bash
# Benchmarks `alter inspect` and `alter convert` on a full-size SD2.1 UNet, beside `cp` and Python
# safetensors load_file+save_file, in one run. Needs a release build and the models written by
#   ~/refenv/bin/python scripts/make_fixtures.py --bench-models DIR
# Usage: scripts/bench_import.sh DIR [PYTHON]   (prints a Markdown table; writes scratch files to DIR/tmp)
set -euo pipefail
DIR=${1:?usage: bench_import.sh DIR [PYTHON]}
PY=${2:-$HOME/refenv/bin/python}
ALTER=${ALTER:-.build-rel/release/alter}
[ -x "$ALTER" ] || ALTER=.build/release/alter
ORIG=$DIR/sd21-original.safetensors
DIFF=$DIR/sd21-unet
TMP=$DIR/tmp
mkdir -p "$TMP"
rm -rf "${TMP:?}"/*

# name, then command; prints "| name | seconds | peak RSS MB |"
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$TMP/time.txt" "$@" > /dev/null
  read -r secs kb < "$TMP/time.txt"
  printf '| %s | %s | %d |\n' "$name" "$secs" $((kb / 1024))
}

cat "$ORIG" "$DIFF/diffusion_pytorch_model.safetensors" > /dev/null   # warm the page cache
echo "| command | seconds | peak RSS (MB) |"
echo "|---|---:|---:|"
for i in 1 2 3; do measure "alter inspect original (run $i)" "$ALTER" inspect "$ORIG"; done
for i in 1 2 3; do measure "alter inspect diffusers folder (run $i)" "$ALTER" inspect "$DIFF"; done
measure "alter inspect --tensors --json original" "$ALTER" inspect "$ORIG" --tensors --json

measure "cp original (3.46 GB)" cp "$ORIG" "$TMP/cp.safetensors"
sync; rm -f "$TMP/cp.safetensors"
measure "cp original + fsync of the copy" sh -c 'cp "$1" "$2" && sync "$2"' _ "$ORIG" "$TMP/cp.safetensors"
sync; rm -f "$TMP/cp.safetensors"
measure "alter convert original -> diffusers fp32" "$ALTER" convert "$ORIG" -o "$TMP/d32" --layout diffusers --upcast-attention
sync; rm -rf "$TMP/d32"
measure "alter convert diffusers -> original fp32" "$ALTER" convert "$DIFF" -o "$TMP/o32.safetensors" --layout original
sync; rm -f "$TMP/o32.safetensors"
measure "alter convert original -> diffusers fp16" "$ALTER" convert "$ORIG" -o "$TMP/d16" --layout diffusers --dtype fp16 --upcast-attention
sync
measure "alter convert diffusers fp16 -> original bf16" "$ALTER" convert "$TMP/d16" -o "$TMP/o16.safetensors" --layout original --dtype bf16
sync; rm -rf "$TMP/d16" "$TMP/o16.safetensors"
measure "python safetensors load_file+save_file (fp32)" "$PY" -c "
import sys
from safetensors.torch import load_file, save_file
save_file(load_file(sys.argv[1]), sys.argv[2])" "$ORIG" "$TMP/py.safetensors"
sync; rm -f "$TMP/py.safetensors"
measure "cp original (again)" cp "$ORIG" "$TMP/cp.safetensors"
sync; rm -f "$TMP/cp.safetensors"
