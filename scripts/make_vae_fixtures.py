#!/usr/bin/env python3
"""Writes Tests/Fixtures/vae: a small diffusers AutoencoderKL (seeded), the same weights in the
original LDM layout (`first_stage_model.*`, mapped here and checked back through diffusers' own
converter `diffusers.loaders.single_file_utils.convert_ldm_vae_checkpoint`), an input image and a
latent, and float64 references (`vae.double()`): encoder mean and logvar, decoder output.

    ~/refenv/bin/python scripts/make_vae_fixtures.py [--out Tests/Fixtures/vae]
    ~/refenv/bin/python scripts/make_vae_fixtures.py --sd21 [--out Tests/Fixtures/vae]

--sd21 writes only sd21-random.safetensors: the full SD2.1 VAE (SD21_CONFIG) at alter's
deterministic random init (RandomParameters, ported in make_text_encoder_fixtures.random_parameter,
seed SD21_SEED, each tensor by its diffusers name and shape), run in float64 on a seeded latent
[1, 4, 16, 16] (decoder, [1, 3, 128, 128]) and a seeded image [1, 3, 64, 64] (encoder mean and
logvar, [1, 4, 8, 8]); it stores the inputs and the outputs (F32) only; metadata: seed, two
values of one weight (the Swift test checks the port with them), versions.
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
import diffusers
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    block_out_channels=[8, 16], layers_per_block=1, act_fn="silu", latent_channels=4,
    norm_num_groups=4, sample_size=32, scaling_factor=0.18215,
)


def to_original(sd, config):
    """diffusers AutoencoderKL names -> original LDM names (the table OriginalVAEKeys.swift holds)."""
    n = len(config["block_out_channels"])
    out = {}

    for k, v in sd.items():
        parts = k.split(".")
        side = parts[0]  # encoder / decoder / quant_conv / post_quant_conv
        rest = ".".join(parts[1:])
        if side in ("quant_conv", "post_quant_conv"):
            out[k] = v
            continue
        if rest.startswith("conv_norm_out."):
            rest = "norm_out." + rest[len("conv_norm_out."):]
        elif rest.startswith("down_blocks."):
            i, kind, j, tail = parts[2], parts[3], parts[4], ".".join(parts[5:])
            if kind == "resnets":
                rest = f"down.{i}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                rest = f"down.{i}.downsample.{tail}"
        elif rest.startswith("up_blocks."):
            i, kind, j, tail = int(parts[2]), parts[3], parts[4], ".".join(parts[5:])
            b = n - 1 - i
            if kind == "resnets":
                rest = f"up.{b}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                rest = f"up.{b}.upsample.{tail}"
        elif rest.startswith("mid_block.resnets."):
            j, tail = int(parts[3]), ".".join(parts[4:])
            rest = f"mid.block_{j + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        elif rest.startswith("mid_block.attentions.0."):
            tail = ".".join(parts[4:])
            ren = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
            mod, p = tail.rsplit(".", 1)
            rest = f"mid.attn_1.{ren[mod]}.{p}"
            if p == "weight" and mod != "group_norm":
                v = v[:, :, None, None]  # LDM's AttnBlock: 1x1 convolutions
        out[f"{side}.{rest}"] = v
    return {"first_stage_model." + k: v.contiguous() for k, v in out.items()}


SD21_SEED = 21
SD21_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, act_fn="silu", latent_channels=4,
    norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
)
SD21_PROBE = "decoder.up_blocks.0.resnets.0.conv1.weight"


def make_sd21(out_dir):
    """The full SD2.1 VAE at alter's random init: only inputs and float64 outputs are stored."""
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_text_encoder_fixtures import random_parameter
    from make_forward_fixtures import save_canonical

    vae = AutoencoderKL(**SD21_CONFIG).eval()
    sd = {}
    for name, p in vae.state_dict().items():
        sd[name] = torch.from_numpy(random_parameter(name, tuple(p.shape), SD21_SEED))
    vae.load_state_dict(sd, strict=True)
    vae = vae.double()
    g = torch.Generator().manual_seed(SD21_SEED)
    latent = torch.randn(1, 4, 16, 16, generator=g).float()
    image = (torch.rand(1, 3, 64, 64, generator=g) * 2 - 1).float()
    with torch.no_grad():
        decoded = vae.decode(latent.double()).sample
        dist = vae.encode(image.double()).latent_dist
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__,
            "seed": str(SD21_SEED), "probe_name": SD21_PROBE,
            "probe": str(sd[SD21_PROBE].flatten()[:2].tolist()),
            "parameters": str(sum(v.numel() for v in sd.values()))}
    path = os.path.join(out_dir, "sd21-random.safetensors")
    save_canonical({"latent": latent.contiguous(), "decoded": decoded.float().contiguous(),
                    "image": image.contiguous(), "mean": dist.mean.float().contiguous(),
                    "logvar": dist.logvar.float().contiguous()}, path, meta)
    print(path, os.path.getsize(path), meta)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="Tests/Fixtures/vae")
    ap.add_argument("--sd21", action="store_true", help="write only sd21-random.safetensors")
    a = ap.parse_args()
    if a.sd21:
        return make_sd21(a.out)
    torch.manual_seed(0)
    vae = AutoencoderKL(**CONFIG).eval()
    # Non-trivial norms and biases (diffusers initialises them to 1 and 0).
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    sd = {k: v.detach().float().contiguous() for k, v in vae.state_dict().items()}

    folder = os.path.join(a.out, "diffusers")
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    vae.save_pretrained(folder, safe_serialization=True)
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)

    original = to_original(sd, cfg)
    back = convert_ldm_vae_checkpoint(original, cfg)
    assert set(back) == set(sd), (set(back) ^ set(sd))
    for k in sd:
        assert back[k].shape == sd[k].shape and torch.equal(back[k], sd[k]), k
    save_file(original, os.path.join(a.out, "original.safetensors"))

    g = torch.Generator().manual_seed(1)
    image = (torch.rand(1, 3, 32, 32, generator=g) * 2 - 1).double()
    latent = torch.randn(1, 4, 16, 16, generator=g).double()
    v64 = vae.double()
    with torch.no_grad():
        dist = v64.encode(image).latent_dist
        decoded = v64.decode(latent).sample
        # A logvar clamp check: the same encoder with conv_out's bias shifted far down.
        lo = AutoencoderKL(**CONFIG).double().eval()
        lo.load_state_dict({k: v.double() for k, v in sd.items()})
        lo.quant_conv.bias[4:] -= 100.0
        clamped = lo.encode(image).latent_dist.logvar
    assert float(clamped.min()) == -30.0
    save_file({
        "image": image.float().contiguous(),
        "latent": latent.float().contiguous(),
        "mean": dist.mean.float().contiguous(),
        "logvar": dist.logvar.float().contiguous(),
        "decoded": decoded.float().contiguous(),
    }, os.path.join(a.out, "expected.safetensors"))
    with open(os.path.join(a.out, "versions.json"), "w") as f:
        json.dump({"torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__,
                   "seed": 0, "input_seed": 1}, f, indent=2, sort_keys=True)
        f.write("\n")
    for r, _, fs in os.walk(a.out):
        for x in sorted(fs):
            print(os.path.join(r, x), os.path.getsize(os.path.join(r, x)))


if __name__ == "__main__":
    main()
