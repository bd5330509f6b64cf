#!/usr/bin/env python3
"""Writes Tests/Fixtures/images: small PNGs of every colour type and bit depth (written here by
hand, so each IHDR/PLTE/tRNS combination is exactly what the name says; one Adam7-interlaced),
JPEGs saved by Pillow (YCbCr 4:2:0 and 4:4:4, progressive, gray, CMYK), and what Pillow makes of
them; Pillow resizes as torchvision's Resize + CenterCrop do them on PIL images; diffusers'
VaeImageProcessor pre- and post-processing; diffusers' make_image_grid.

    ~/refenv/bin/python scripts/make_image_fixtures.py [--out Tests/Fixtures/images]

Every expected image is raw 8-bit RGB (`NAME.rgb`, rows of R, G, B bytes, from
`np.asarray(image.convert("RGB"))`); tensors are raw little-endian float32. `manifest.json`
lists each case with its sizes. torchvision is not installed in the reference venv:
`resized_size` and `center_crop` below transcribe torchvision.transforms.functional
(`_compute_resized_output_size`, `center_crop`) and call Pillow's `Image.resize` and
`Image.crop` as torchvision's PIL backend does.
"""
import argparse
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
from PIL import Image, features
import torch
import diffusers
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import make_image_grid


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_row(samples, bit_depth):
    """One scanline of samples (already flattened per pixel) at `bit_depth`."""
    if bit_depth == 16:
        return b"".join(struct.pack(">H", int(v)) for v in samples)
    if bit_depth == 8:
        return bytes(int(v) for v in samples)
    per = 8 // bit_depth
    out = bytearray()
    for i in range(0, len(samples), per):
        byte = 0
        group = list(samples[i:i + per]) + [0] * (per - len(samples[i:i + per]))
        for v in group:
            byte = (byte << bit_depth) | int(v)
        out.append(byte)
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_bytes(pixels, color_type, bit_depth, plte=None, trns=None, interlace=False):
    """pixels: [H, W, C] integer samples. Filter type 0 for every row."""
    h, w = pixels.shape[:2]
    raw = bytearray()
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = pixels[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for row in sub:
                raw += b"\x00" + pack_row(row.reshape(-1), bit_depth)
    else:
        for row in pixels:
            raw += b"\x00" + pack_row(row.reshape(-1), bit_depth)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0))
    if plte is not None:
        out += chunk(b"PLTE", np.asarray(plte, dtype=np.uint8).tobytes())
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")


def pattern(w, h, seed):
    """RGB uint8 [h, w, 3]: gradients, sharp blocks (so filters overshoot and clip) and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1))
    g = (y * 255 // max(h - 1, 1))
    b = np.where(((x // 5) + (y // 4)) % 2 == 0, 255, 0)
    img = np.stack([r, g, b], axis=-1).astype(np.int32)
    img += rng.integers(-12, 13, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def resized_size(w, h, size):
    """torchvision _compute_resized_output_size for an int size (shorter side), as (w, h)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def tv_resize(img, size, resample):
    w, h = resized_size(img.width, img.height, size)
    if (w, h) == img.size:
        return img
    return img.resize((w, h), resample)


def center_crop(img, ch, cw):
    """torchvision.transforms.functional.center_crop on a PIL image."""
    iw, ih = img.size
    if cw > iw or ch > ih:
        pl = (cw - iw) // 2 if cw > iw else 0
        pt = (ch - ih) // 2 if ch > ih else 0
        pr = (cw - iw + 1) // 2 if cw > iw else 0
        pb = (ch - ih + 1) // 2 if ch > ih else 0
        padded = Image.new(img.mode, (iw + pl + pr, ih + pt + pb), 0)
        padded.paste(img, (pl, pt))
        img = padded
        iw, ih = img.size
        if cw == iw and ch == ih:
            return img
    top = int(round((ih - ch) / 2.0))
    left = int(round((iw - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="Tests/Fixtures/images")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    manifest = {"versions": {"pillow": PIL.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__,
                             "libjpeg_turbo": features.version("libjpeg_turbo"), "zlib": features.version("zlib")},
                "decode": [], "resize": [], "crop": [], "preprocess": [], "postprocess": [], "grid": []}

    def save_rgb(name, img):
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(arr.tobytes())
        return arr.shape[1], arr.shape[0]

    def decode_case(name, data, note):
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
        img = Image.open(io.BytesIO(data))
        mode = img.mode
        w, h = save_rgb(name + ".rgb", img)
        manifest["decode"].append({"file": name, "expected": name + ".rgb", "width": w, "height": h, "pillow_mode": mode, "note": note})

    rng = np.random.default_rng(11)
    W, H = 13, 7  # odd sizes: partial bytes at the end of 1/2/4-bit rows, partial Adam7 passes
    rgb = pattern(W, H, 1)
    gray8 = rgb[..., 0:1]
    # Gray at 1, 2, 4, 8, 16 bits (16-bit values around 255 and above: Pillow clamps them).
    for bd in (1, 2, 4, 8):
        px = rng.integers(0, 1 << bd, size=(H, W, 1))
        decode_case(f"gray{bd}.png", png_bytes(px, 0, bd), f"gray, {bd}-bit")
    g16 = rng.choice([0, 1, 200, 255, 256, 257, 1000, 40000, 65535], size=(H, W, 1))
    decode_case("gray16.png", png_bytes(g16, 0, 16), "gray, 16-bit (values above 255 clamp to 255)")
    decode_case("gray8-trns.png", png_bytes(gray8, 0, 8, trns=struct.pack(">H", int(gray8[0, 0, 0]))), "gray with tRNS (ignored)")
    decode_case("gray4-trns.png", png_bytes(rng.integers(0, 16, size=(H, W, 1)), 0, 4, trns=struct.pack(">H", 3)), "4-bit gray with tRNS")
    ga8 = np.concatenate([gray8, rng.integers(0, 256, size=(H, W, 1))], axis=-1)
    decode_case("gray-alpha8.png", png_bytes(ga8, 4, 8), "gray+alpha, 8-bit (alpha dropped)")
    ga16 = rng.integers(0, 65536, size=(H, W, 2))
    decode_case("gray-alpha16.png", png_bytes(ga16, 4, 16), "gray+alpha, 16-bit (high byte)")
    decode_case("rgb8.png", png_bytes(rgb, 2, 8), "RGB, 8-bit")
    rgb16 = rng.integers(0, 65536, size=(H, W, 3))
    decode_case("rgb16.png", png_bytes(rgb16, 2, 16), "RGB, 16-bit (high byte)")
    decode_case("rgb8-trns.png", png_bytes(rgb, 2, 8, trns=struct.pack(">HHH", *[int(v) for v in rgb[0, 0]])), "RGB with tRNS (ignored)")
    rgba8 = np.concatenate([rgb, rng.integers(0, 256, size=(H, W, 1))], axis=-1)
    decode_case("rgba8.png", png_bytes(rgba8, 6, 8), "RGBA, 8-bit (alpha dropped, not composited)")
    rgba16 = rng.integers(0, 65536, size=(H, W, 4))
    decode_case("rgba16.png", png_bytes(rgba16, 6, 16), "RGBA, 16-bit (high byte, alpha dropped)")
    for bd in (1, 2, 4, 8):
        n = min(1 << bd, 200)
        plte = rng.integers(0, 256, size=n * 3)
        px = rng.integers(0, 1 << bd if bd < 8 else n + 20, size=(H, W, 1))  # 8-bit: some indexes past the palette
        note = f"palette, {bd}-bit" + (", indexes past the palette (black)" if bd == 8 else "")
        decode_case(f"palette{bd}.png", png_bytes(px, 3, bd, plte=plte), note)
    plte = rng.integers(0, 256, size=16 * 3)
    decode_case("palette4-trns.png", png_bytes(rng.integers(0, 16, size=(H, W, 1)), 3, 4, plte=plte, trns=bytes(rng.integers(0, 256, size=10).tolist())),
                "palette with tRNS (ignored)")
    decode_case("rgb8-interlaced.png", png_bytes(rgb, 2, 8, interlace=True), "RGB, Adam7-interlaced")
    decode_case("rgba16-interlaced.png", png_bytes(rgba16, 6, 16, interlace=True), "RGBA 16-bit, Adam7-interlaced")
    decode_case("gray2-interlaced.png", png_bytes(rng.integers(0, 4, size=(H, W, 1)), 0, 2, interlace=True), "2-bit gray, Adam7-interlaced")

    photo = Image.fromarray(pattern(64, 48, 2))
    for name, kw, note in [("ycbcr420.jpg", dict(quality=90), "YCbCr 4:2:0, baseline"),
                           ("ycbcr444.jpg", dict(quality=95, subsampling=0), "YCbCr 4:4:4"),
                           ("progressive.jpg", dict(quality=85, progressive=True), "YCbCr 4:2:0, progressive"),
                           ("odd-size.jpg", dict(quality=80), "YCbCr 4:2:0, 37x23 (partial MCUs)")]:
        src = photo if name != "odd-size.jpg" else Image.fromarray(pattern(37, 23, 3))
        buf = io.BytesIO()
        src.save(buf, "JPEG", **kw)
        decode_case(name, buf.getvalue(), note)
    buf = io.BytesIO()
    photo.convert("L").save(buf, "JPEG", quality=90)
    decode_case("gray.jpg", buf.getvalue(), "gray JPEG")
    buf = io.BytesIO()
    photo.convert("CMYK").save(buf, "JPEG", quality=90)
    with open(os.path.join(args.out, "cmyk.jpg"), "wb") as f:
        f.write(buf.getvalue())
    manifest["cmyk"] = "cmyk.jpg"

    # Resizing: torchvision Resize(size) with Pillow's filters, then CenterCrop(size).
    sources = {"src-37x23.png": pattern(37, 23, 4), "src-300x200.png": pattern(300, 200, 5), "src-20x45.png": pattern(20, 45, 6)}
    for name, arr in sources.items():
        Image.fromarray(arr).save(os.path.join(args.out, name))
    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    cases = [("src-37x23.png", 16), ("src-300x200.png", 64), ("src-37x23.png", 50), ("src-20x45.png", 16),
             ("src-20x45.png", 33), ("src-20x45.png", 20)]
    for src, size in cases:
        img = Image.open(os.path.join(args.out, src)).convert("RGB")
        for fname, f in filters.items():
            resized = tv_resize(img, size, f)
            out = center_crop(resized, size, size)
            stem = f"{src[4:-4]}-to{size}-{fname}"
            rw, rh = save_rgb(stem + "-resized.rgb", resized)
            save_rgb(stem + ".rgb", out)
            manifest["resize"].append({"source": src, "size": size, "filter": fname, "resized": stem + "-resized.rgb",
                                       "resized_width": rw, "resized_height": rh, "expected": stem + ".rgb"})
    # Plain resizes to both sides (one side up, the other down; one side unchanged; both down with
    # the vertical pass first (the height loses more than twice the pixels the width loses: Pillow
    # 13's order rule) and with the horizontal pass first).
    for src, (w, h) in [("src-37x23.png", (20, 30)), ("src-37x23.png", (37, 11)), ("src-37x23.png", (36, 23)),
                        ("src-37x23.png", (33, 5)), ("src-37x23.png", (30, 20))]:
        img = Image.open(os.path.join(args.out, src)).convert("RGB")
        for fname, f in filters.items():
            stem = f"{src[4:-4]}-{w}x{h}-{fname}"
            save_rgb(stem + ".rgb", img.resize((w, h), f))
            manifest["resize"].append({"source": src, "width": w, "height": h, "filter": fname, "expected": stem + ".rgb"})
    # Center crops, including one larger than the image (torchvision pads with black).
    img = Image.open(os.path.join(args.out, "src-37x23.png")).convert("RGB")
    for cw, ch in [(16, 16), (36, 22), (35, 21), (40, 23), (41, 30), (10, 25)]:
        name = f"37x23-crop{cw}x{ch}.rgb"
        save_rgb(name, center_crop(img, ch, cw))
        manifest["crop"].append({"source": "src-37x23.png", "width": cw, "height": ch, "expected": name})

    # diffusers VaeImageProcessor.preprocess (a 16x8 image: no resize at vae_scale_factor 8).
    processor = VaeImageProcessor()
    pre_src = Image.fromarray(pattern(16, 8, 7))
    pre_src.save(os.path.join(args.out, "pre-16x8.png"))
    t = processor.preprocess(pre_src)
    assert tuple(t.shape) == (1, 3, 8, 16), t.shape
    t.numpy().astype("<f4").tofile(os.path.join(args.out, "pre-16x8.f32"))
    manifest["preprocess"].append({"source": "pre-16x8.png", "expected": "pre-16x8.f32", "shape": list(t.shape)})

    # postprocess + numpy_to_pil on a decoder-like output [2, 3, 5, 7]: values around [-1, 1],
    # outside it, exact edges, NaN-free; some values land exactly on .5 after * 255.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float32) * 0.8
    flat = x.view(-1)
    specials = [-1.0, 1.0, 0.0, -1.5, 1.5, 2.0 * (0.5 / 255) - 1, 2.0 * (254.5 / 255) - 1, 2.0 * (127.5 / 255) - 1,
                2.0 * (128.5 / 255) - 1, 1e-8, -1e-8, 0.99999, -0.99999]
    flat[:len(specials)] = torch.tensor(specials, dtype=torch.float32)
    # Values whose (x * 0.5 + 0.5) * 255 is an exact .5 in float32 (round half to even).
    for i, k in enumerate(range(0, 255, 37)):
        v = np.float32((k + 0.5) / 255.0)
        flat[len(specials) + i] = float(np.float32(np.float32(v - np.float32(0.5)) / np.float32(0.5)))
    x.numpy().astype("<f4").tofile(os.path.join(args.out, "post-2x3x5x7.f32"))
    images = processor.postprocess(x, output_type="pil")
    for i, im in enumerate(images):
        save_rgb(f"post-{i}.rgb", im)
    manifest["postprocess"].append({"input": "post-2x3x5x7.f32", "shape": list(x.shape), "expected": ["post-0.rgb", "post-1.rgb"]})

    # make_image_grid: 2 rows x 3 cols; cells take the first image's size (5x4); other sizes are
    # pasted at the cell corner as Pillow's paste does.
    sizes = [(5, 4), (5, 4), (3, 2), (7, 6), (5, 4), (5, 4)]
    grid_imgs = []
    for i, (w, h) in enumerate(sizes):
        arr = pattern(w, h, 20 + i)
        Image.fromarray(arr).save(os.path.join(args.out, f"grid-{i}.png"))
        grid_imgs.append(Image.fromarray(arr))
    gw, gh = save_rgb("grid-2x3.rgb", make_image_grid(grid_imgs, rows=2, cols=3))
    manifest["grid"].append({"sources": [f"grid-{i}.png" for i in range(6)], "rows": 2, "cols": 3, "expected": "grid-2x3.rgb",
                             "width": gw, "height": gh})

    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"{len(os.listdir(args.out))} files, {total} bytes in {args.out}")


if __name__ == "__main__":
    main()
