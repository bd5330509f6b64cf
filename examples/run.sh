#!/usr/bin/env bash
# The README's main job: build alter (release) and run it on the small example checkpoint:
# inspect and convert it, run the UNet once, compress it with ALTER (a few hundred steps), export
# the run as a multi-expert bundle, inspect and verify the bundle, and sample with its experts.
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
"$ALTER" forward "$CKPT" --config "$CONFIG" --inputs examples/sd21-tiny-inputs.safetensors --features -o "$OUT/forward.safetensors"
"$ALTER" forward "$CKPT" --config "$CONFIG" --inputs examples/sd21-tiny-inputs.safetensors -o "$OUT/forward-skip.safetensors" \
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

echo "== draw: the same prompts and seeds with the dense model and with the compressed bundle (PNG grids: a row per prompt)"
printf '%s\n' "a red circle on a grey background" "two blue squares" > "$OUT/prompts.txt"
"$ALTER" sample "$CKPT" --config "$CONFIG" --pipeline examples/sd21-tiny-components --prompts "$OUT/prompts.txt" \
  --seed 1,2 --scheduler ddim --steps 20 --guidance 7.5 --grid -o "$OUT/dense.png" --force
"$ALTER" sample "$OUT/sd21-tiny.alter" --prompts "$OUT/prompts.txt" \
  --seed 1,2 --scheduler ddim --steps 20 --guidance 7.5 --grid -o "$OUT/compressed.png" --force
echo "wrote $OUT/dense.png and $OUT/compressed.png (the example's weights are random: the images are noise, not pictures)"
