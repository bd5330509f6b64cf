#!/usr/bin/env python3
"""Reference for `alter encode-data` (images + captions -> training-data file).

Usage (from the repository root, with ~/refenv holding torch, diffusers, transformers, Pillow):

    ~/refenv/bin/python scripts/make_encode_data_fixtures.py    # (re)write Tests/Fixtures/encode-data/

Writes under Tests/Fixtures/encode-data/:

- images/: three PNGs of smooth colour patterns (80x64, 64x96, 70x70; numpy, fixed formulas) and a
  copy of Tests/Fixtures/images/ycbcr420.jpg (64x48);
- captions.jsonl and captions.csv: the same four captions (with a comma, quotes and a non-ASCII
  character, so that CSV quoting matters), in the same order;
- expected.safetensors: what encode-data must write for them with the tiny pipeline
  Tests/Fixtures/pipeline/sd21-tiny at --size 64, computed in float64 with diffusers' AutoencoderKL
  and transformers' CLIPTextModel / CLIPTokenizer loaded from that folder:
  - images: Pillow `Image.open(p).convert("RGB")`, then torchvision's `Resize(64,
    InterpolationMode.BILINEAR)` + `CenterCrop(64)` as diffusers' train_text_to_image.py does
    (torchvision is not installed here, so its two steps are spelt out: the shorter side to 64, the
    longer to int(64 * long / short), `Image.resize(..., Image.BILINEAR)`, crop offsets
    int(round((side - 64) / 2))), then ToTensor + Normalize([0.5], [0.5]);
  - `latents` [4, 4, 8, 8]: vae.encode(x).latent_dist.mean * vae.config.scaling_factor;
  - `context` [4, 77, 16]: text_encoder(input_ids).last_hidden_state (encode_prompt's prompt_embeds);
  - `uncond` [77, 16]: the same for "";
  - `input_ids` [4, 77] I64: tokenizer(captions, padding="max_length", max_length=77, truncation=True).
  Stored as F32 (from float64). Metadata: the image names and captions as JSON arrays, versions.
"""

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PIPELINE = os.path.join(ROOT, "Tests/Fixtures/pipeline/sd21-tiny")
OUT = os.path.join(ROOT, "Tests/Fixtures/encode-data")
SIZE = 64
# file, caption
ENTRIES = [
    ("wide.png", "a red square, on a \"blue\" mat"),
    ("tall.png", "two cats; one naïve dog"),
    ("square.png", ""),
    ("photo.jpg", "an astronaut riding a horse " * 8),
]
SHAPES = {"wide.png": (80, 64), "tall.png": (64, 96), "square.png": (70, 70)}


def pattern(name, w, h):
    """Smooth 8-bit RGB pattern [h, w, 3] that differs per image (fixed formulas, no random draws)."""
    k = sum(map(ord, name)) % 7 + 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [np.sin(xx / (3.0 + k + c)) * np.cos(yy / (4.0 + c)) + 0.3 * np.sin((xx + yy) / (5.0 + k)) for c in range(3)]
    return (np.stack(chans, -1) * 90 + 128).clip(0, 255).round().astype(np.uint8)


def preprocess(path):
    """torchvision Resize(SIZE, BILINEAR) + CenterCrop(SIZE) + ToTensor + Normalize(0.5, 0.5): [3, S, S] float64."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(SIZE * long / short)
    nw, nh = (SIZE, new_long) if w <= h else (new_long, SIZE)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - SIZE) / 2.0)), int(round((nh - SIZE) / 2.0))
    im = im.crop((left, top, left + SIZE, top + SIZE))
    a = np.asarray(im, dtype=np.float64) / 255.0
    return torch.from_numpy((a - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def main():
    import diffusers
    import transformers
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.use_deterministic_algorithms(True)
    images = os.path.join(OUT, "images")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(images)
    for name, (w, h) in SHAPES.items():
        Image.fromarray(pattern(name, w, h)).save(os.path.join(images, name))
    shutil.copyfile(os.path.join(ROOT, "Tests/Fixtures/images/ycbcr420.jpg"), os.path.join(images, "photo.jpg"))
    with open(os.path.join(OUT, "captions.jsonl"), "w", encoding="utf-8") as f:
        for name, text in ENTRIES:
            f.write(json.dumps({"file": name, "text": text}, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "captions.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("file,text\r\n")
        for name, text in ENTRIES:
            quoted = '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
            f.write(f"{name},{quoted}\r\n")

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(PIPELINE, "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(PIPELINE, "text_encoder")).double().eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(PIPELINE, "vae")).double().eval()
    captions = [t for _, t in ENTRIES]
    with torch.no_grad():
        x = torch.stack([preprocess(os.path.join(images, n)) for n, _ in ENTRIES])
        latents = vae.encode(x).latent_dist.mean * vae.config.scaling_factor

        def encode(texts):
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            return ids, text_encoder(ids).last_hidden_state

        ids, context = encode(captions)
        _, uncond = encode([""])
    save_file(
        {"latents": latents.float().contiguous(), "context": context.float().contiguous(), "uncond": uncond[0].float().contiguous(),
         "input_ids": ids.to(torch.int64).contiguous()},
        os.path.join(OUT, "expected.safetensors"),
        metadata={
            "images": json.dumps([n for n, _ in ENTRIES]),
            "captions": json.dumps(captions),
            "size": str(SIZE),
            "vae_scaling_factor": repr(float(vae.config.scaling_factor)),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "pillow": Image.__version__,
        })
    print(f"wrote {OUT}: latents {list(latents.shape)}, context {list(context.shape)}, "
          f"{sum(len(tokenizer(t).input_ids) > 77 for t in captions)} caption(s) truncated")


if __name__ == "__main__":
    main()
