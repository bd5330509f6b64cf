"""Writes image pairs and scikit-image's PSNR and SSIM of each under Tests/Fixtures/image-metrics/.

    ~/refenv/bin/python scripts/make_image_metric_fixtures.py

expected.json lists, per pair (a-NAME.png, b-NAME.png, 8-bit RGB), what
skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255) and
skimage.metrics.structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False) give (null PSNR: infinite; "ssim_error": skimage refused).
"""
import json
import os

import numpy as np
import skimage
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "image-metrics")


def pairs(rng):
    # Natural-ish content: smooth gradients plus noise, and a perturbed copy.
    def smooth(h, w):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 100 * np.sin(x / 5.0 + c) * np.cos(y / 7.0 - c) for c in range(3)], axis=2)
        return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)

    def perturb(a, scale):
        return np.clip(a.astype(np.int32) + rng.normal(0, scale, a.shape).round().astype(np.int32), 0, 255).astype(np.uint8)

    a = smooth(64, 64)
    yield "64x64", a, perturb(a, 20)
    a = smooth(23, 37)
    yield "37x23", a, perturb(a, 6)
    yield "11x11", rng.integers(0, 256, (11, 11, 3), dtype=np.uint8), rng.integers(0, 256, (11, 11, 3), dtype=np.uint8)
    a = smooth(12, 40)
    yield "40x12-dark", (a // 8).astype(np.uint8), perturb(a // 8, 3)
    a = smooth(16, 16)
    yield "16x16-identical", a, a.copy()
    yield "16x16-extremes", np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 255, np.uint8)
    yield "7x7", rng.integers(0, 256, (7, 7, 3), dtype=np.uint8), rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261130)
    expected = {"skimage_version": skimage.__version__, "pairs": []}
    for name, a, b in pairs(rng):
        Image.fromarray(a, "RGB").save(os.path.join(OUT, f"a-{name}.png"))
        Image.fromarray(b, "RGB").save(os.path.join(OUT, f"b-{name}.png"))
        with np.errstate(divide="ignore"):
            psnr = float(peak_signal_noise_ratio(a, b, data_range=255))
        entry = {"name": name, "width": a.shape[1], "height": a.shape[0], "psnr": None if np.isinf(psnr) else psnr}
        try:
            entry["ssim"] = float(structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True,
                                                        sigma=1.5, use_sample_covariance=False))
        except ValueError as e:
            entry["ssim_error"] = str(e)
        expected["pairs"].append(entry)
        print(entry)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
