"""Original (CompVis / Stability AI) single-file SD2.x checkpoints: the UNet under
`model.diffusion_model.`, read as `alter convert` reads it. The key table is alter's
(`Sources/StableDiffusion/OriginalUNetKeys.swift`): each diffusers parameter name maps to one
original key. Loading is strict: a UNet tensor missing, misshapen, or left unused is an error
naming it; tensors of the other components (VAE, text encoder, EMA copies) and LDM's noise
schedule buffers are allowed and ignored. The file does not say the UNet's configuration
(heads, norm groups): a diffusers config.json gives it, as `alter convert --config` does."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

UNET_PREFIX = "model.diffusion_model."
OTHER_COMPONENTS = ("model_ema.", "first_stage_model.", "cond_stage_model.")
SCHEDULE_BUFFERS = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                    "logvar"}
RESNET_RENAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                  "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
TOP_RENAMES = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
               "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}


class OriginalCheckpointError(ValueError):
    pass


def original_key(name: str, config) -> str:
    """The original-layout key of a diffusers UNet parameter name (`OriginalUNetKeys.storedName`)."""
    for d, o in TOP_RENAMES.items():
        if name.startswith(d + "."):
            return UNET_PREFIX + o + name[len(d):]
    parts = name.split(".")
    layers = config.layers_per_block
    stride = layers + 1

    def resnet(base, rest):
        sub = [RESNET_RENAMES.get(rest[0], rest[0])] if rest else [""]
        return ".".join([base] + sub + rest[1:])

    rel = name
    if len(parts) >= 4 and parts[0] == "down_blocks":
        i, j = int(parts[1]), int(parts[3])
        if parts[2] == "resnets":
            rel = resnet(f"input_blocks.{i * stride + j + 1}.0", parts[4:])
        elif parts[2] == "attentions":
            rel = ".".join([f"input_blocks.{i * stride + j + 1}.1"] + parts[4:])
        elif parts[2] == "downsamplers":
            rel = ".".join([f"input_blocks.{(i + 1) * stride}.0.op"] + parts[5:])
    elif len(parts) >= 4 and parts[0] == "mid_block":
        j = int(parts[2])
        rel = ".".join(["middle_block.1"] + parts[3:]) if parts[1] == "attentions" else resnet(f"middle_block.{0 if j == 0 else 2}", parts[3:])
    elif len(parts) >= 4 and parts[0] == "up_blocks":
        i, j = int(parts[1]), int(parts[3])
        has_attention = "CrossAttn" in config.up_block_types[i]
        if parts[2] == "resnets":
            rel = resnet(f"output_blocks.{i * stride + j}.0", parts[4:])
        elif parts[2] == "attentions":
            rel = ".".join([f"output_blocks.{i * stride + j}.1"] + parts[4:])
        elif parts[2] == "upsamplers":
            rel = ".".join([f"output_blocks.{i * stride + layers}.{2 if has_attention else 1}"] + parts[4:])
    return UNET_PREFIX + rel


def is_original(path: str) -> bool:
    with safe_open(path, "pt") as f:
        return any(k.startswith(UNET_PREFIX) for k in f.keys())


def load_original_unet(path: str, config_path: str, dtype=torch.float32):
    """The UNet of an original single-file checkpoint (safetensors) as a diffusers
    `UNet2DConditionModel` with the configuration of `config_path` (a diffusers config.json)."""
    from diffusers import UNet2DConditionModel

    with open(config_path) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    expected = dict(unet.state_dict())
    state = {}
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        used = set()
        for name, t in expected.items():
            key = original_key(name, unet.config)
            if key not in keys:
                raise OriginalCheckpointError(f"{path}: no tensor '{key}' (the UNet's {name})")
            v = f.get_tensor(key)
            if tuple(v.shape) != tuple(t.shape):
                raise OriginalCheckpointError(f"{path}: tensor '{key}' has shape {list(v.shape)}; the UNet's {name} is {list(t.shape)}")
            state[name] = v.to(dtype)
            used.add(key)
    unused = sorted(k for k in keys - used if k.startswith(UNET_PREFIX))
    unknown = sorted(k for k in keys - used if not k.startswith(UNET_PREFIX) and not k.startswith(OTHER_COMPONENTS)
                     and k not in SCHEDULE_BUFFERS)
    if unused or unknown:
        raise OriginalCheckpointError(f"{path}: tensors no part of the model reads: {(unused + unknown)[:8]}"
                                      f"{' ...' if len(unused) + len(unknown) > 8 else ''}")
    unet = UNet2DConditionModel.from_config(unet.config)
    unet.load_state_dict(state, strict=True)
    unet.to(dtype)
    unet.eval()
    return unet
