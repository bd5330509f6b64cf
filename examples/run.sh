#!/usr/bin/env bash
# The README's main job: build alter (release); on the tiny example checkpoint: inspect and convert
# it, run the UNet once, compress it with ALTER, export, inspect and verify the bundle, sample with
# its experts; on the trained example pipeline (examples/teacher): encode training data, compress,
# export with the pipeline, verify, draw the same prompts dense and compressed, and measure the
# compressed images against the dense ones (alter eval).
# On a fresh Debian machine, as root, it first installs the system libraries alter links.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! pkg-config --exists openblas json-c zlib libpng libjpeg 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y libopenblas-dev libjson-c-dev zlib1g-dev libpng-dev libjpeg-dev pkg-config
  else
    echo "missing system libraries: run as root: apt-get install -y libopenblas-dev libjson-c-dev zlib1g-dev libpng-dev libjpeg-dev pkg-config" >&2
    exit 1
  fi
fi
swift build -c release --product alter
ALTER=.build/release/alter
CKPT=examples/sd21-tiny.safetensors
CONFIG=examples/sd21-tiny.config.json
OUT=${OUT:-/tmp/alter-example}
mkdir -p "$OUT"

echo "== inspect: what is in the original single-file checkpoint"
"$ALTER" inspect "$CKPT" --config "$CONFIG"

echo "== convert: original layout (fp16) -> diffusers UNet folder (fp32)"
"$ALTER" convert "$CKPT" --config "$CONFIG" -o "$OUT/unet" --layout diffusers --dtype fp32 --force

echo "== convert back: diffusers folder -> original layout (bf16)"
"$ALTER" convert "$OUT/unet" -o "$OUT/sd21-tiny-bf16.safetensors" --layout original --dtype bf16 --force

echo "== inspect the results"
"$ALTER" inspect "$OUT/unet"
"$ALTER" inspect "$OUT/sd21-tiny-bf16.safetensors" --config "$CONFIG" --json > "$OUT/inspect.json"
echo "wrote $OUT/unet, $OUT/sd21-tiny-bf16.safetensors and $OUT/inspect.json"

echo "== units: ALTER's prunable units with MACs at the example's 16x16 latent, 5 context tokens"
"$ALTER" inspect "$CKPT" --config "$CONFIG" --units --latent 16 --context 5

echo "== forward: one UNet call on examples/sd21-tiny-inputs.safetensors, dense and with 4 units skipped"
"$ALTER" forward "$CKPT" --config "$CONFIG" --inputs examples/sd21-tiny-inputs.safetensors --features -o "$OUT/forward.safetensors" --force
"$ALTER" forward "$CKPT" --config "$CONFIG" --inputs examples/sd21-tiny-inputs.safetensors -o "$OUT/forward-skip.safetensors" --force \
  --skip down_blocks.0.resnets.1,down_blocks.0.attentions.1.transformer_blocks.0,mid_block.resnets.1,up_blocks.3.resnets.2
echo "wrote $OUT/forward.safetensors and $OUT/forward-skip.safetensors"

echo "== compress: ALTER on the example (4 experts, keep 0.70 of the MACs, 300 steps: 90 with the hypernetwork)"
rm -rf "$OUT/run"
"$ALTER" compress "$CKPT" --config "$CONFIG" --data examples/sd21-tiny-data.safetensors \
  --experts 4 --keep 0.7 --steps 300 --batch 2 --lr-unet 1e-4 --lr-hypernet 1e-2 --seed 1 -o "$OUT/run"
echo "wrote $OUT/run (config.json, metrics.jsonl, checkpoint/, final/unet, final/decisions.json)"

echo "== export: the run as a multi-expert bundle carrying the tokenizer, text encoder and VAE, then inspect and verify it"
"$ALTER" export "$OUT/run" -o "$OUT/sd21-tiny.alter" --pipeline examples/sd21-tiny-components --force
"$ALTER" inspect "$OUT/sd21-tiny.alter" --schedule pndm:20
"$ALTER" verify "$OUT/sd21-tiny.alter" --deep --reference "$OUT/run/final/unet"

echo "== sample: 2 latents with the bundle's experts (PNDM, 20 steps, guidance 7.5)"
"$ALTER" sample "$OUT/sd21-tiny.alter" --context examples/sd21-tiny-data.safetensors --rows 0,1 \
  --scheduler pndm --steps 20 --guidance 7.5 --seed 1 -o "$OUT/latents.safetensors" --force

echo "== the trained example: a small SD2.1-structured pipeline trained on captioned shapes (scripts/train_teacher.py, examples/teacher/README.md)"
TEACHER=examples/teacher
"$ALTER" inspect "$TEACHER"
"$ALTER" convert --pipeline "$TEACHER" -o "$OUT/teacher.safetensors" --force   # the same model as one original-layout file
"$ALTER" inspect "$OUT/teacher.safetensors" --config "$TEACHER/unet/config.json"

echo "== encode-data: 256 captioned training images -> ALTER training data (VAE latents, text-encoder context)"
"$ALTER" encode-data "$TEACHER" --images examples/teacher-data/images --captions examples/teacher-data/captions.jsonl \
  --size 64 -o "$OUT/teacher-data.safetensors" --force

echo "== compress the trained example: 10 experts, keep 0.65 of the MACs, 300 steps at batch 4 (90 with the hypernetwork)"
rm -rf "$OUT/teacher-run"
"$ALTER" compress "$TEACHER" --data "$OUT/teacher-data.safetensors" --prediction-type v_prediction \
  --experts 10 --keep 0.65 --steps 300 --batch 4 --lr-unet 1e-4 --lr-hypernet 7e-4 --seed 1 -o "$OUT/teacher-run"

echo "== export it with the pipeline's tokenizer, text encoder and VAE; verify it; show its routing"
"$ALTER" export "$OUT/teacher-run" -o "$OUT/teacher.alter" --pipeline "$TEACHER" --force
"$ALTER" verify "$OUT/teacher.alter" --deep --reference "$OUT/teacher-run/final/unet" --keep 0.65
"$ALTER" inspect "$OUT/teacher.alter" --schedule ddim:50

echo "== draw the same prompts and seeds with the dense model and with the compressed bundle"
"$ALTER" sample "$TEACHER" --prompts examples/teacher-prompts.txt --seed 1,2 --scheduler ddim --steps 50 --grid -o "$OUT/dense.png" --force
"$ALTER" sample "$OUT/teacher.alter" --prompts examples/teacher-prompts.txt --seed 1,2 --scheduler ddim --steps 50 --grid \
  -o "$OUT/compressed.png" --force

echo "== fidelity: the bundle against the dense model (DDIM 50, guidance 7.5), the pairs side by side"
"$ALTER" eval "$OUT/teacher.alter" --reference "$TEACHER" --prompts examples/teacher-prompts.txt --seed 1,2 \
  --side-by-side "$OUT/side-by-side.png" --force
echo "wrote $OUT/dense.png, $OUT/compressed.png (a row per prompt, a column per seed) and $OUT/side-by-side.png (dense | compressed per seed)"
