#!/usr/bin/env python3
"""Generate tiny, deterministic Stable-Diffusion-2.1-shaped UNet fixtures for `alter`.

Usage (from the repository root, with a venv holding torch, diffusers, safetensors, numpy):

    ~/refenv/bin/python scripts/make_fixtures.py                 # (re)write Tests/Fixtures/
    ~/refenv/bin/python scripts/make_fixtures.py --check-alter .build/debug/alter
    ~/refenv/bin/python scripts/make_fixtures.py --bench-models /work/bench
    ~/refenv/bin/python scripts/make_fixtures.py --example examples   # example checkpoint, inputs, training data

Nothing is downloaded: every model is built from a config with fixed seeds. Every
.safetensors file is written by the Python `safetensors` library (directly or through
diffusers' `save_pretrained`). Re-running gives byte-identical files for the same
torch/diffusers/safetensors versions (recorded in Tests/Fixtures/versions.json).
"""

import argparse
import copy
import gc
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import diffusers  # noqa: E402
from diffusers import DDIMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "Tests", "Fixtures")
LDM_PREFIX = "model.diffusion_model."

SD_BLOCKS = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    layers_per_block=2,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
    norm_eps=1e-5,
)

# tiny SD2.1 (768-v) structure: linear proj_in/out, upcast attention, head size 8
TINY_SD2 = dict(
    SD_BLOCKS,
    sample_size=8,
    block_out_channels=[4, 8, 8, 8],
    norm_num_groups=2,
    attention_head_dim=[1, 2, 2, 2],  # diffusers misnomer: number of heads
    cross_attention_dim=16,
    use_linear_projection=True,
    upcast_attention=True,
)

# tiny SD1 structure: 1x1 conv proj_in/out, no upcast, "attention_head_dim" 8 (= 8 heads)
TINY_SD1 = dict(
    SD_BLOCKS,
    sample_size=8,
    block_out_channels=[4, 8, 8, 8],
    norm_num_groups=2,
    attention_head_dim=2,
    cross_attention_dim=12,
    use_linear_projection=False,
    upcast_attention=False,
)

# the real SD2.1 768-v UNet (for benchmarks only, never committed)
FULL_SD21 = dict(
    SD_BLOCKS,
    sample_size=96,
    block_out_channels=[320, 640, 1280, 1280],
    norm_num_groups=32,
    attention_head_dim=[5, 10, 20, 20],
    cross_attention_dim=1024,
    use_linear_projection=True,
    upcast_attention=True,
)
FULL_SD21_PARAMS = 865_910_724

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------------------
# model construction


def build_unet(cfg, seed, perturb=0.01):
    """Deterministic init (torch.manual_seed), then add seeded noise to every parameter."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg)
    unet.eval()
    if perturb:
        g = torch.Generator().manual_seed(seed + 1000)
        with torch.no_grad():
            for _, p in unet.named_parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32) * perturb)
    return unet


def state_dict_of(unet, dtype=torch.float32):
    return {k: v.detach().to(dtype).contiguous().clone() for k, v in unet.state_dict().items()}


# --------------------------------------------------------------------------------------
# diffusers -> original (CompVis / LDM) UNet key mapping (independent of diffusers' code)

RESNET_D2L = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

TOP_D2L = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(rest):
    head, _, tail = rest.partition(".")
    if head not in RESNET_D2L:
        raise KeyError(f"unknown resnet sub-module {head!r}")
    return RESNET_D2L[head] + "." + tail


def diffusers_to_ldm_key(key, cfg):
    """Map one diffusers UNet2DConditionModel key to its LDM name (without 'model.diffusion_model.')."""
    lpb = cfg["layers_per_block"]
    up_has_attn = ["CrossAttn" in t for t in cfg["up_block_types"]]
    for d, l in TOP_D2L.items():
        if key.startswith(d + "."):
            return l + key[len(d):]
    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = 1 + i * (lpb + 1) + j
        return f"input_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    m = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key)
    if m:
        return f"middle_block.1.{m[1]}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = i * (lpb + 1) + j
        return f"output_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m:
        i = int(m[1])
        return f"output_blocks.{i * (lpb + 1) + lpb}.{2 if up_has_attn[i] else 1}.conv.{m[2]}"
    raise KeyError(f"no LDM mapping for diffusers key {key!r}")


def to_ldm(sd, cfg, prefix=LDM_PREFIX):
    out = {}
    for k, v in sd.items():
        nk = prefix + diffusers_to_ldm_key(k, cfg)
        if nk in out:
            raise AssertionError(f"mapping not injective at {nk}")
        out[nk] = v
    return out


def ema_key(ldm_key):
    """LDM LitEma naming: model_ema. + ('diffusion_model.' + rest) with all dots removed."""
    assert ldm_key.startswith(LDM_PREFIX)
    return "model_ema." + ldm_key[len("model."):].replace(".", "")


def assert_same(a, b, what):
    if set(a) != set(b):
        missing = sorted(set(a) - set(b))[:5]
        extra = sorted(set(b) - set(a))[:5]
        raise AssertionError(f"{what}: key sets differ; missing {missing} extra {extra}")
    for k in a:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            raise AssertionError(f"{what}: tensor {k} differs ({x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)})")


def verify_with_diffusers(ldm_sd, diffusers_sd, cfg_dict, what, extract_ema=False):
    """Map an LDM-layout checkpoint back with diffusers' own converter; must be bit-identical."""
    back = convert_ldm_unet_checkpoint(ldm_sd, dict(cfg_dict), extract_ema=extract_ema)
    assert_same(diffusers_sd, back, f"convert_ldm_unet_checkpoint({what})")


# --------------------------------------------------------------------------------------
# fake non-UNet tensors and noise schedule


def sd_schedule(n=1000, start=0.00085, end=0.012):
    """LDM make_beta_schedule('linear') == diffusers 'scaled_linear'; stored as fp32 buffers."""
    betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return {"betas": betas.to(torch.float32), "alphas_cumprod": alphas_cumprod.to(torch.float32)}


def fake_extras(seed, text_dim, sd1):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(shape, generator=g) * 0.05).contiguous()

    t = {
        "first_stage_model.encoder.conv_in.weight": r(4, 3, 3, 3),
        "first_stage_model.encoder.conv_in.bias": r(4),
        "first_stage_model.decoder.conv_out.weight": r(3, 4, 3, 3),
        "first_stage_model.decoder.conv_out.bias": r(3),
        "first_stage_model.quant_conv.weight": r(8, 8, 1, 1),
        "first_stage_model.quant_conv.bias": r(8),
    }
    if sd1:  # SD1: HF CLIPTextModel under cond_stage_model.transformer.
        p = "cond_stage_model.transformer.text_model."
        t.update({
            p + "embeddings.token_embedding.weight": r(64, text_dim),
            p + "embeddings.position_embedding.weight": r(77, text_dim),
            p + "final_layer_norm.weight": 1.0 + r(text_dim),
            p + "final_layer_norm.bias": r(text_dim),
        })
    else:  # SD2: OpenCLIP under cond_stage_model.model.
        p = "cond_stage_model.model."
        t.update({
            p + "token_embedding.weight": r(64, text_dim),
            p + "positional_embedding": r(77, text_dim),
            p + "ln_final.weight": 1.0 + r(text_dim),
            p + "ln_final.bias": r(text_dim),
            p + "text_projection": r(text_dim, text_dim),
        })
    t.update(sd_schedule())
    return t


def cast_all(d, dtype):
    return {k: v.to(dtype).contiguous() for k, v in d.items()}


def model_index_json():
    # as StableDiffusionPipeline.save_pretrained writes it for stabilityai/stable-diffusion-2-1
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def sd21_scheduler():
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------------------
# fixture generation


def make_fixtures():
    for d in ("tiny-sd2", "tiny-sd1"):
        shutil.rmtree(os.path.join(FIXTURES, d), ignore_errors=True)
    sd2_dir = os.path.join(FIXTURES, "tiny-sd2")
    sd1_dir = os.path.join(FIXTURES, "tiny-sd1")
    os.makedirs(sd2_dir)
    os.makedirs(sd1_dir)

    # ---------------- tiny-sd2
    unet = build_unet(TINY_SD2, seed=21)
    cfg = dict(unet.config)
    sd32 = state_dict_of(unet)
    nparams = sum(v.numel() for v in sd32.values())
    for k, v in sd32.items():
        assert not torch.all(v == 0) and not torch.all(v == 1), k

    # 1. diffusers fp32
    unet.save_pretrained(os.path.join(sd2_dir, "diffusers"), safe_serialization=True)
    # 2. diffusers fp16 variant
    copy.deepcopy(unet).to(torch.float16).save_pretrained(
        os.path.join(sd2_dir, "diffusers-fp16"), safe_serialization=True, variant="fp16")
    # 3. sharded fp32 (~871 KB of tensors -> 3 shards of <= 350 KB)
    unet.save_pretrained(os.path.join(sd2_dir, "sharded"), safe_serialization=True, max_shard_size="90KB")
    # 4. pipeline skeleton with a bf16 unet
    pdir = os.path.join(sd2_dir, "pipeline")
    write_json(os.path.join(pdir, "model_index.json"), model_index_json())
    sd21_scheduler().save_config(os.path.join(pdir, "scheduler"))
    copy.deepcopy(unet).to(torch.bfloat16).save_pretrained(os.path.join(pdir, "unet"), safe_serialization=True)

    # sanity: what diffusers wrote is what we hold
    assert_same(sd32, load_file(os.path.join(sd2_dir, "diffusers", "diffusion_pytorch_model.safetensors")), "diffusers fp32 file")
    assert_same(cast_all(sd32, torch.float16),
                load_file(os.path.join(sd2_dir, "diffusers-fp16", "diffusion_pytorch_model.fp16.safetensors")), "diffusers fp16 file")
    assert_same(cast_all(sd32, torch.bfloat16),
                load_file(os.path.join(pdir, "unet", "diffusion_pytorch_model.safetensors")), "pipeline bf16 file")
    shards = sorted(f for f in os.listdir(os.path.join(sd2_dir, "sharded")) if f.endswith(".safetensors"))
    assert 2 <= len(shards) <= 3, shards
    merged = {}
    for f in shards:
        merged.update(load_file(os.path.join(sd2_dir, "sharded", f)))
    assert_same(sd32, merged, "sharded files")
    reloaded = UNet2DConditionModel.from_pretrained(os.path.join(sd2_dir, "sharded"))
    assert_same(sd32, state_dict_of(reloaded), "sharded from_pretrained")

    # 5./6. original single-file layout
    ldm32 = to_ldm(sd32, TINY_SD2)
    verify_with_diffusers(ldm32, sd32, cfg, "tiny-sd2 fp32")
    extras = fake_extras(seed=2101, text_dim=16, sd1=False)
    orig32 = dict(ldm32, **extras)
    save_file(orig32, os.path.join(sd2_dir, "original.safetensors"))
    for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        od = cast_all(orig32, dt)
        verify_with_diffusers(od, cast_all(sd32, dt), cfg, f"tiny-sd2 {name}")
        save_file(od, os.path.join(sd2_dir, f"original-{name}.safetensors"))
    assert_same(orig32, load_file(os.path.join(sd2_dir, "original.safetensors")), "original.safetensors")

    # 7. EMA checkpoint
    g = torch.Generator().manual_seed(2102)
    ema32 = {k: (v + torch.randn(v.shape, generator=g) * 0.003).contiguous() for k, v in sd32.items()}
    for k in sd32:
        assert not torch.equal(ema32[k], sd32[k]), k
    ema_ckpt = dict(ldm32)
    for k, v in to_ldm(ema32, TINY_SD2).items():
        ema_ckpt[ema_key(k)] = v
    ema_ckpt["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    ema_ckpt["model_ema.num_updates"] = torch.tensor(123456, dtype=torch.int32)
    ema_ckpt.update(extras)
    assert len({k for k in ema_ckpt if k.startswith("model_ema.")}) == len(sd32) + 2
    verify_with_diffusers(ema_ckpt, ema32, cfg, "tiny-sd2 EMA, extract_ema=True", extract_ema=True)
    verify_with_diffusers(ema_ckpt, sd32, cfg, "tiny-sd2 EMA file, plain weights")
    save_file(ema_ckpt, os.path.join(sd2_dir, "original-ema.safetensors"))
    save_file(ema32, os.path.join(sd2_dir, "ema-diffusers.safetensors"))

    # extra check: diffusers' from_single_file (offline, local config) loads original.safetensors exactly
    single_file_ok = None
    try:
        sf = UNet2DConditionModel.from_single_file(
            os.path.join(sd2_dir, "original.safetensors"), config=os.path.join(sd2_dir, "diffusers"),
            local_files_only=True)
        assert_same(sd32, state_dict_of(sf), "from_single_file(original.safetensors)")
        single_file_ok = True
    except Exception as e:  # informational only
        single_file_ok = f"{type(e).__name__}: {e}"[:300]
    del unet

    # ---------------- tiny-sd1 (fp16 only)
    unet1 = build_unet(TINY_SD1, seed=15)
    cfg1 = dict(unet1.config)
    sd1_16 = state_dict_of(unet1, torch.float16)
    unet1.save_config(sd1_dir)
    save_file(sd1_16, os.path.join(sd1_dir, "diffusers.safetensors"))
    ldm1 = to_ldm(sd1_16, TINY_SD1)
    verify_with_diffusers(ldm1, sd1_16, cfg1, "tiny-sd1 fp16")
    proj_in = [k for k in ldm1 if k.endswith("proj_in.weight")]
    assert proj_in and all(ldm1[k].dim() == 4 for k in proj_in), "SD1 proj_in must be 1x1 conv"
    orig1 = dict(ldm1, **cast_all(fake_extras(seed=1501, text_dim=12, sd1=True), torch.float16))
    save_file(orig1, os.path.join(sd1_dir, "original.safetensors"))
    nparams1 = sum(v.numel() for v in sd1_16.values())

    vers = versions()
    write_json(os.path.join(FIXTURES, "versions.json"), vers)
    total = write_readme(nparams, len(sd32), nparams1, len(sd1_16), vers)
    print(json.dumps({
        "tiny_sd2_params": nparams, "tiny_sd2_tensors": len(sd32),
        "tiny_sd1_params": nparams1, "tiny_sd1_tensors": len(sd1_16),
        "from_single_file_check": single_file_ok, "total_bytes": total, **vers}, indent=2))


def listing():
    rows = []
    for root, _, files in os.walk(FIXTURES):
        for f in files:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, FIXTURES)
            if rel in ("README.md",) or rel.startswith("forward" + os.sep):
                continue  # forward/ belongs to make_forward_fixtures.py
            with open(p, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()[:16]
            rows.append((rel, os.path.getsize(p), digest))
    return sorted(rows)


DESCRIPTIONS = {
    "versions.json": "library versions used to generate these files",
    "diffusers-load-check.json": "result of `--check-alter`: alter's conversions loaded by diffusers",
    "tiny-sd2/diffusers/config.json": "diffusers UNet2DConditionModel config (tiny SD2.1 768-v shape)",
    "tiny-sd2/diffusers/diffusion_pytorch_model.safetensors": "fp32 weights, `save_pretrained`",
    "tiny-sd2/diffusers-fp16/config.json": "same config",
    "tiny-sd2/diffusers-fp16/diffusion_pytorch_model.fp16.safetensors": "fp16 weights, `variant=\"fp16\"`",
    "tiny-sd2/sharded/config.json": "same config",
    "tiny-sd2/sharded/diffusion_pytorch_model.safetensors.index.json": "shard index (`weight_map`)",
    "tiny-sd2/pipeline/model_index.json": "StableDiffusionPipeline index (only scheduler/ and unet/ exist)",
    "tiny-sd2/pipeline/scheduler/scheduler_config.json": "DDIM, v_prediction, scaled_linear 0.00085..0.012, steps_offset 1",
    "tiny-sd2/pipeline/unet/config.json": "same UNet config",
    "tiny-sd2/pipeline/unet/diffusion_pytorch_model.safetensors": "bf16 weights",
    "tiny-sd2/original.safetensors": "original (CompVis/LDM) single file, fp32: `model.diffusion_model.*` + fake "
                                     "`first_stage_model.*`, `cond_stage_model.model.*`, `betas`, `alphas_cumprod`",
    "tiny-sd2/original-fp16.safetensors": "same keys, every tensor fp16",
    "tiny-sd2/original-bf16.safetensors": "same keys, every tensor bf16",
    "tiny-sd2/original-ema.safetensors": "fp32 original layout with plain weights plus LitEma copies "
                                         "(`model_ema.diffusion_modelinput_blocks00weight`...), "
                                         "`model_ema.decay` (f32 []), `model_ema.num_updates` (i32 [])",
    "tiny-sd2/ema-diffusers.safetensors": "the EMA UNet of original-ema.safetensors in diffusers keys, fp32 "
                                          "(expected result of loading with --ema)",
    "tiny-sd1/config.json": "diffusers config of a tiny SD1-shaped UNet (conv 1x1 proj_in/out, no upcast)",
    "tiny-sd1/diffusers.safetensors": "its weights in diffusers keys, fp16",
    "tiny-sd1/original.safetensors": "same weights in the original layout, fp16, with fake VAE and "
                                     "`cond_stage_model.transformer.text_model.*` tensors",
}


def write_readme(nparams, ntensors, nparams1, ntensors1, vers):
    rows = listing()
    lines = [
        "# Test fixtures",
        "",
        "Generated by `scripts/make_fixtures.py`; do not edit by hand. Regenerate (byte-identical",
        "with the versions below) from the repository root with:",
        "",
        "    ~/refenv/bin/python scripts/make_fixtures.py",
        "",
        "(the venv needs `torch diffusers safetensors numpy` from PyPI; nothing is downloaded from the",
        "Hugging Face hub: models are built from configs with fixed seeds, then every parameter gets small",
        "seeded noise so no tensor is all zeros or ones).",
        "",
        "`scripts/make_fixtures.py --check-alter .build/debug/alter` converts `tiny-sd2/original.safetensors`",
        "with alter to diffusers layout in fp32/fp16/bf16, loads the results with diffusers",
        "`UNet2DConditionModel.from_pretrained`, converts back to the original layout and compares every",
        "tensor; it writes `diffusers-load-check.json`.",
        "",
        "`scripts/make_fixtures.py --bench-models DIR` writes a full-size random SD2.1 UNet",
        "(865,910,724 parameters) as `DIR/sd21-unet/` (diffusers, fp32) and",
        "`DIR/sd21-original.safetensors` (original layout, fp32) for benchmarks; never commit those.",
        "",
        "## Models",
        "",
        f"* **tiny-sd2**: SD2.1 768-v UNet structure (CrossAttnDownBlock2D x3 + DownBlock2D, UpBlock2D +",
        "  CrossAttnUpBlock2D x3, layers_per_block 2, linear proj_in/proj_out, upcast_attention) with",
        "  block_out_channels [4, 8, 8, 8], norm_num_groups 2, attention_head_dim [1, 2, 2, 2] (heads;",
        f"  head size 4), cross_attention_dim 16, sample_size 8. {nparams:,} parameters, {ntensors} tensors.",
        "* **tiny-sd1**: same blocks, SD1 style: proj_in/proj_out are 1x1 convs, attention_head_dim 2",
        f"  (2 heads in every block), cross_attention_dim 12, no upcast. {nparams1:,} parameters, {ntensors1} tensors.",
        "",
        "The original-layout files were produced with the script's own diffusers->LDM key mapping and",
        "verified by mapping them back with diffusers' `convert_ldm_unet_checkpoint` (bit-identical,",
        "same keys; for the EMA file with `extract_ema=True` too).",
        "",
        "## Files",
        "",
        "| file | bytes | sha256[:16] | content |",
        "|---|---:|---|---|",
    ]
    total = 0
    for rel, size, digest in rows:
        total += size
        desc = DESCRIPTIONS.get(rel)
        if desc is None and "/sharded/diffusion_pytorch_model-" in "/" + rel:
            desc = "fp32 shard"
        lines.append(f"| `{rel}` | {size:,} | `{digest}` | {desc or ''} |")
    lines += [
        "",
        f"Total (without this README): {total:,} bytes.",
        "",
        "## Versions",
        "",
    ] + [f"* {k} {v}" for k, v in vers.items()] + [""]
    # Keep the section make_forward_fixtures.py owns.
    readme = os.path.join(FIXTURES, "README.md")
    kept = ""
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as f:
            old = f.read()
        marker = "## Forward references"
        if marker in old:
            kept = "\n" + old[old.index(marker):]
    with open(readme, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + kept)
    return total


# --------------------------------------------------------------------------------------
# --check-alter


def _load_dir_tensors(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            if f.endswith(".safetensors"):
                out.update(load_file(os.path.join(root, f)))
    return out


def _compare(ref, got):
    mism, maxdiff = [], 0.0
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    for k in sorted(set(ref) & set(got)):
        a, b = ref[k], got[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            mism.append(f"{k}: {b.dtype}{list(b.shape)} != {a.dtype}{list(a.shape)}")
            continue
        if not torch.equal(a, b):
            mism.append(k)
            maxdiff = max(maxdiff, (a.double() - b.double()).abs().max().item())
    return missing, extra, mism, maxdiff


def check_alter(binary):
    binary = os.path.abspath(binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        sys.exit(f"--check-alter: alter binary not found or not executable: {binary}\n"
                 "Build it first (swift build) and pass its path, e.g. .build/debug/alter.")
    h = subprocess.run([binary, "convert", "--help"], capture_output=True, text=True)
    if h.returncode != 0:
        sys.exit(f"--check-alter: `{binary} convert --help` failed (rc {h.returncode}):\n{h.stderr or h.stdout}")
    if "--layout" not in (h.stdout + h.stderr):
        sys.exit(f"--check-alter: `{binary} convert --help` does not mention --layout; "
                 f"alter convert does not look implemented yet. Help text was:\n{h.stdout}{h.stderr}")

    sd2 = os.path.join(FIXTURES, "tiny-sd2")
    src = os.path.join(sd2, "original.safetensors")
    cfg_json = os.path.join(sd2, "diffusers", "config.json")
    ref32 = load_file(os.path.join(sd2, "diffusers", "diffusion_pytorch_model.safetensors"))
    results = []
    with tempfile.TemporaryDirectory(prefix="alter-check-") as tmp:
        for name, dt in DTYPES.items():
            r = {"dtype": name, "loaded": False, "tensors": 0, "max_abs_diff": None, "mismatched": []}
            results.append(r)
            ref = cast_all(ref32, dt)
            out = os.path.join(tmp, f"out-{name}")
            cmd = [binary, "convert", src, "-o", out, "--layout", "diffusers", "--dtype", name, "--config", cfg_json]
            p = subprocess.run(cmd, capture_output=True, text=True)
            r["convert_cmd"] = " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd)
            if p.returncode != 0:
                r["error"] = f"convert rc {p.returncode}: {(p.stderr or p.stdout)[-800:]}"
                continue
            if not os.path.isdir(out) or not os.listdir(out):
                r["error"] = f"convert exited 0 but wrote no directory/files at {out}: {(p.stderr or p.stdout)[-400:]}"
                continue
            # 1) the raw files: dtype and bits as written
            try:
                raw = _load_dir_tensors(out)
                missing, extra, mism, md = _compare(ref, raw)
                r["files"] = sorted(os.path.relpath(os.path.join(a, f), out) for a, _, fs in os.walk(out) for f in fs)
                r["raw_file_check"] = {"tensors": len(raw), "missing": missing[:20], "extra": extra[:20],
                                       "mismatched": mism[:20], "max_abs_diff": md}
            except Exception as e:
                r["raw_file_check"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            # 2) diffusers from_pretrained
            model, err = None, []
            for kw in ({}, {"variant": "fp16"}):
                try:
                    model = UNet2DConditionModel.from_pretrained(out, torch_dtype=dt, **kw)
                    r["from_pretrained_kwargs"] = kw
                    break
                except Exception as e:
                    err.append(f"{kw}: {type(e).__name__}: {e}"[:400])
            if model is None:
                r["error"] = " | ".join(err)
                continue
            r["loaded"] = True
            got = {k: v.detach() for k, v in model.state_dict().items()}
            missing, extra, mism, md = _compare(ref, got)
            r["tensors"] = len(got)
            r["max_abs_diff"] = md
            r["mismatched"] = (mism + [f"missing {k}" for k in missing] + [f"extra {k}" for k in extra])[:50]
            del model, got
            # 3) back to the original layout
            back = os.path.join(tmp, f"back-{name}.safetensors")
            cmd = [binary, "convert", out, "-o", back, "--layout", "original", "--dtype", name]
            p = subprocess.run(cmd, capture_output=True, text=True)
            rt = {"cmd": " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd)}
            r["original_roundtrip"] = rt
            if p.returncode != 0:
                rt["error"] = f"rc {p.returncode}: {(p.stderr or p.stdout)[-800:]}"
                continue
            if not os.path.exists(back):
                rt["error"] = f"convert exited 0 but wrote nothing at {back}"
                continue
            try:
                got = load_file(back) if os.path.isfile(back) else _load_dir_tensors(back)
                ref_file = "original.safetensors" if name == "fp32" else f"original-{name}.safetensors"
                ref_o = {k: v for k, v in load_file(os.path.join(sd2, ref_file)).items() if k.startswith(LDM_PREFIX)}
                got_u = {k: v for k, v in got.items() if k.startswith(LDM_PREFIX)}
                missing, extra, mism, md = _compare(ref_o, got_u)
                rt.update({"ok": not (missing or extra or mism), "tensors": len(got_u),
                           "other_keys": len(got) - len(got_u), "max_abs_diff": md,
                           "missing": missing[:20], "extra": extra[:20], "mismatched": mism[:20]})
            except Exception as e:
                rt["error"] = f"{type(e).__name__}: {e}"[:500]
        report_text = json.dumps(results).replace(tmp, "$TMPDIR")
    results = json.loads(report_text)
    report = {"diffusers_version": diffusers.__version__, "torch_version": torch.__version__,
              "safetensors_version": safetensors.__version__, "results": results}
    write_json(os.path.join(FIXTURES, "diffusers-load-check.json"), report)
    print(json.dumps(report, indent=2))
    ok = all(r["loaded"] and not r["mismatched"] and r.get("original_roundtrip", {}).get("ok") for r in results)
    print("check-alter:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------
# --bench-models


def bench_models(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    unet = build_unet(FULL_SD21, seed=2100, perturb=0.0)
    n = sum(p.numel() for p in unet.parameters())
    print(f"SD2.1 UNet parameters: {n:,}")
    assert n == FULL_SD21_PARAMS, f"expected {FULL_SD21_PARAMS:,}"
    cfg = dict(unet.config)
    ddir = os.path.join(out_dir, "sd21-unet")
    unet.save_pretrained(ddir, safe_serialization=True, max_shard_size="10GB")
    print("wrote", ddir, os.path.getsize(os.path.join(ddir, "diffusion_pytorch_model.safetensors")), "bytes")
    sd = {k: v.detach() for k, v in unet.state_dict().items()}
    ldm = to_ldm(sd, FULL_SD21)
    verify_with_diffusers(ldm, sd, cfg, "full SD2.1")
    ldm.update(fake_extras(seed=2101, text_dim=16, sd1=False))
    opath = os.path.join(out_dir, "sd21-original.safetensors")
    save_file(ldm, opath)
    del ldm
    gc.collect()
    print("wrote", opath, os.path.getsize(opath), "bytes")
    back = load_file(opath)
    verify_with_diffusers(back, sd, cfg, "full SD2.1 file")
    print("verified", opath, "maps back to the diffusers weights bit-identically")
    del back, sd, unet
    gc.collect()


# the small example checkpoint shipped in examples/ (SD2.1 structure, 16..32 channels)
EXAMPLE_SD2 = dict(
    TINY_SD2,
    sample_size=16,
    block_out_channels=[16, 32, 32, 32],
    norm_num_groups=8,
    attention_head_dim=[2, 4, 4, 4],  # heads; head size 8
    cross_attention_dim=32,
)


def make_example(out_dir):
    """examples/: an original-layout single-file checkpoint (fp16, UNet + stand-in VAE and text
    encoder tensors) and the UNet's diffusers config.json."""
    os.makedirs(out_dir, exist_ok=True)
    unet = build_unet(EXAMPLE_SD2, seed=31, perturb=0.01)
    sd32 = state_dict_of(unet)
    ldm = to_ldm(sd32, EXAMPLE_SD2)
    verify_with_diffusers(ldm, sd32, unet.config, "example")
    ckpt = cast_all(dict(ldm, **fake_extras(seed=3101, text_dim=32, sd1=False)), torch.float16)
    save_file(ckpt, os.path.join(out_dir, "sd21-tiny.safetensors"))
    unet.save_config(out_dir)
    os.replace(os.path.join(out_dir, "config.json"), os.path.join(out_dir, "sd21-tiny.config.json"))
    g = torch.Generator().manual_seed(3102)
    inputs = {
        "sample": torch.randn(2, 4, 16, 16, generator=g),
        "timestep": torch.tensor([999.0, 250.0]),
        "context": torch.randn(2, 5, EXAMPLE_SD2["cross_attention_dim"], generator=g),
    }
    save_file(inputs, os.path.join(out_dir, "sd21-tiny-inputs.safetensors"))
    n = sum(v.numel() for v in sd32.values())
    print(f"example: {n:,} UNet parameters -> {out_dir}")
    make_example_data(out_dir)
    return 0


# training data for the example model (formats/training-data.md)
EXAMPLE_DATA_SAMPLES = 32
EXAMPLE_DATA_TOKENS = 5      # S: [start, word, word, end, end (padding)]
EXAMPLE_DATA_WORDS = 12      # the synthetic "vocabulary"


def example_training_data(n=EXAMPLE_DATA_SAMPLES, seed=3103):
    """A synthetic, deterministic training set shaped like real SD2.1 data for the example model.

    Not white noise: each sample's "prompt" is two words out of a 12-word vocabulary; every word
    has a hidden-state vector (the context rows) and a smooth low-frequency latent pattern (the
    latents are the sum of the two words' patterns, a per-sample smooth variation and a little
    noise, scaled to unit variance like SD's scaled VAE latents). The start and end rows are shared
    by all prompts, as in CLIP; the end rows also carry a summary of the words (causal attention
    makes CLIP's later tokens depend on the earlier ones). `uncond` is the empty prompt: start,
    then end rows only."""
    g = torch.Generator().manual_seed(seed)
    d = EXAMPLE_SD2["cross_attention_dim"]
    h = w = EXAMPLE_SD2["sample_size"]
    s, vocab = EXAMPLE_DATA_TOKENS, EXAMPLE_DATA_WORDS
    start, end = torch.randn(d, generator=g), torch.randn(d, generator=g)
    words = torch.randn(vocab, d, generator=g)
    # a word's latent look: per channel, a cosine of 0..2 cycles across the latent in y and x
    freq = torch.randint(0, 3, (vocab, 4, 2), generator=g).to(torch.float32)
    phase = torch.rand(vocab, 4, generator=g) * (2 * np.pi)
    amp = 0.5 + torch.rand(vocab, 4, generator=g)
    yy, xx = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    looks = amp[..., None, None] * torch.cos(
        2 * np.pi * (freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx) + phase[..., None, None])
    chosen = torch.stack([torch.randperm(vocab, generator=g)[:2] for _ in range(n)])  # [n, 2]
    variation = torch.nn.functional.interpolate(
        torch.randn(n, 4, 4, 4, generator=g), size=(h, w), mode="bilinear", align_corners=False)
    latents = looks[chosen[:, 0]] + looks[chosen[:, 1]] + 0.5 * variation + 0.1 * torch.randn(n, 4, h, w, generator=g)
    latents = (latents - latents.mean()) / latents.std()
    summary = words[chosen].mean(dim=1)  # [n, d]
    endrow = end + 0.5 * summary
    context = torch.stack([start.expand(n, d), words[chosen[:, 0]], words[chosen[:, 1]], endrow, endrow], dim=1)
    context = context + 0.05 * torch.randn(n, s, d, generator=g)
    uncond = torch.stack([start] + [end] * (s - 1)) + 0.05 * torch.randn(s, d, generator=g)
    return {
        "latents": latents.to(torch.float16).contiguous(),
        "context": context.to(torch.float16).contiguous(),
        "uncond": uncond.to(torch.float16).contiguous(),
        "extra.words": chosen.to(torch.int64).contiguous(),
    }


def save_file_sorted_metadata(tensors, path, metadata):
    """safetensors' save_file, with the __metadata__ keys in sorted order: the library writes them
    in hash-map order, which changes from run to run, and the example files must be reproducible."""
    blob = safetensors.torch.save(tensors, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n, "re-serialised header is longer than the library's"
    with open(path, "wb") as f:
        f.write(blob[:8] + text + b" " * (n - len(text)) + blob[8 + n:])


def make_example_data(out_dir):
    """examples/sd21-tiny-data.safetensors: training data for the example model (fp16)."""
    data = example_training_data()
    metadata = {
        "format": "alter.training-data",
        "format_version": "1",
        "vae_scaling_factor": "0.18215",
        "source": "synthetic: scripts/make_fixtures.py --example (seed 3103); two-word prompts over a "
                  "12-word vocabulary, smooth latent patterns per word; not real VAE or text-encoder output",
    }
    path = os.path.join(out_dir, "sd21-tiny-data.safetensors")
    save_file_sorted_metadata(data, path, metadata)
    print(f"example data: {data['latents'].shape[0]} samples, latents {list(data['latents'].shape)}, "
          f"context {list(data['context'].shape)} -> {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-alter", metavar="ALTER", help="check alter convert output against diffusers")
    ap.add_argument("--bench-models", metavar="DIR", help="write full-size random SD2.1 UNets to DIR")
    ap.add_argument("--example", metavar="DIR", help="write the small example checkpoint, its forward inputs and training data to DIR (examples/)")
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    if a.check_alter:
        return check_alter(a.check_alter)
    if a.bench_models:
        return bench_models(a.bench_models)
    if a.example:
        return make_example(a.example)
    make_fixtures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
