#!/usr/bin/env python3
"""Writes captioned training images of the teacher's data set (scripts/train_teacher.py) as PNGs.

    ~/refenv/bin/python scripts/make_teacher_images.py OUT_DIR [--count 256] [--seed 1]

OUT_DIR gets `images/NNNN.png` (64x64 RGB: train_teacher.IMAGE) and `captions.jsonl` (one `{"file": ..., "text": ...}`
per line, the format `alter encode-data --captions` reads). The captions cycle through the
training captions (never a held-out shape/colour pair) in a seeded order, with the same grammar,
renderer and jitter as the teacher's training set; the same arguments give the same bytes. Nothing
is written when OUT_DIR exists. `alter encode-data TEACHER --images OUT_DIR/images --captions
OUT_DIR/captions.jsonl -o DATA.safetensors --size 64` turns them into ALTER training data.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_teacher as T  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--count", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if os.path.exists(a.out):
        sys.exit(f"error: {a.out} exists")
    if a.count < 1:
        sys.exit("error: --count must be at least 1")
    from PIL import Image
    order, jitter = T.training_draws(np.random.default_rng(a.seed), a.count)
    tmp = a.out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "images"))
    with open(os.path.join(tmp, "captions.jsonl"), "w") as f:
        for i, c in enumerate(order):
            name = f"{i:04d}.png"
            Image.fromarray(T.render(c, jitter[i])).save(os.path.join(tmp, "images", name), optimize=True)
            f.write(json.dumps({"file": name, "text": T.caption(c)}) + "\n")
    os.replace(tmp, a.out)
    print(f"wrote {a.count} images and captions to {a.out}")


if __name__ == "__main__":
    main()
