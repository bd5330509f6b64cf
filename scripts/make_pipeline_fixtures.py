#!/usr/bin/env python3
"""End-to-end reference for `alter`'s prompt-to-image path (diffusers' StableDiffusionPipeline).

Usage (from the repository root, with ~/refenv holding torch, diffusers, transformers, safetensors):

    ~/refenv/bin/python scripts/make_pipeline_fixtures.py     # (re)write Tests/Fixtures/pipeline/

Writes under Tests/Fixtures/pipeline/:

- sd21-tiny/: a diffusers pipeline folder (model_index.json, tokenizer/, text_encoder/, unet/, vae/,
  scheduler/) of a random-init, SD2.1-structured model in float32:
  - UNet: SD2.1's blocks (3 cross-attention down blocks + 1 plain, mirrored up), linear proj_in/out,
    upcast attention, 8 channels, 1-2 heads, cross_attention_dim 16;
  - text encoder: CLIPTextModel, width 16, 2 layers, 2 heads, gelu (tensors named text_model.* as
    transformers 4 saved them, which SD pipelines on the Hub hold);
  - VAE: AutoencoderKL with SD's 4 levels (factor 8), 8 channels, scaling_factor 0.18215;
  - tokenizer: Tests/Fixtures/tokenizer/sd21-tokenizer cut to its first MERGES merges (the byte
    symbols, those merges' results, then <|startoftext|> and <|endoftext|>; pad "!" = id 0): the
    full 49,408-token vocabulary would make the text encoder's embedding alone several MB, and the
    text encoder's vocab_size must equal the tokenizer's;
  - scheduler: SD2.1's DDIMScheduler config (v_prediction).
  The folder is reloaded with StableDiffusionPipeline.from_pretrained and every reference below is
  computed with the reloaded pipeline.
- sd21-tiny-original.safetensors: the same UNet, VAE and text encoder as one original SD2.x file
  (model.diffusion_model.*, first_stage_model.*, cond_stage_model.model.* with one extra, unused
  resblock as SD2.x files have); each part is converted back with diffusers' own single-file
  converters and checked bit-identical.
- expected.safetensors: for PROMPTS with NEGATIVE prompts:
  - input_ids.prompt / input_ids.negative (I64 [2, 77]) from transformers' CLIPTokenizer as
    encode_prompt calls it (padding to max length, truncation);
  - prompt_embeds, negative_prompt_embeds [2, 77, 16] from pipe.encode_prompt (guidance > 1), and
    negative_prompt_embeds.default from encode_prompt with negative_prompt None (the empty prompt);
  - noise [2, 4, 8, 8]: the initial latents passed as `latents=` (torch.randn, seed NOISE_SEED);
  - for each of ddim, pndm, euler (STEPS steps, guidance GUIDANCE, 64x64 pixels, the scheduler made
    from_config of the pipeline's; PNDM runs with negative_prompt None, the others with NEGATIVE):
    `<s>.latents` (output_type="latent") and `<s>.decoded` (vae.decode(latents / scaling_factor):
    the image before postprocessing, [2, 3, 64, 64]). The pipeline's output_type="np" image is
    checked equal to (decoded / 2 + 0.5).clamp(0, 1) (NHWC) and not stored.
  Metadata: prompts, steps, guidance, which runs used which negative prompts, versions.
Everything runs in float32 on the CPU with torch.use_deterministic_algorithms(True).
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (SD_BLOCKS, to_ldm, verify_with_diffusers)
import make_text_encoder_fixtures as te  # noqa: E402  (to_original, check_with_diffusers, randomize)
import make_vae_fixtures as vaefx  # noqa: E402  (to_original)
from make_forward_fixtures import save_canonical  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler,  # noqa: E402
                       StableDiffusionPipeline, UNet2DConditionModel)
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "Tests", "Fixtures", "pipeline")
PIPELINE = os.path.join(OUT_DIR, "sd21-tiny")
SOURCE_TOKENIZER = os.path.join(REPO, "Tests", "Fixtures", "tokenizer", "sd21-tokenizer")
SEED = 1130
NOISE_SEED = 7
MERGES = 1000
STEPS = 4
GUIDANCE = 7.5
HEIGHT = WIDTH = 64
PROMPTS = [
    "a photograph of an astronaut riding a horse on the moon, highly detailed!",
    "a watercolor painting of a lighthouse at dusk, waves crashing on black rocks, seagulls circling "
    "overhead, warm light in the windows, a small boat returning to the harbour, clouds tinted pink and "
    "orange, reflections on the wet sand, in the style of an old storybook illustration with soft edges",
]
NEGATIVE = ["blurry, low quality", "ugly, deformed, extra limbs"]

UNET = dict(
    make_fixtures.SD_BLOCKS,
    sample_size=8,
    block_out_channels=[8, 8, 8, 8],
    norm_num_groups=4,
    attention_head_dim=[1, 2, 2, 2],  # diffusers' name for the number of heads (head sizes 8, 4, 4, 4)
    cross_attention_dim=16,
    use_linear_projection=True,
    upcast_attention=True,
)
TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=16, pad_token_id=0)
VAE = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 8, 8, 8], layers_per_block=1, act_fn="silu", latent_channels=4,
    norm_num_groups=4, sample_size=HEIGHT, scaling_factor=0.18215,
)
# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json
SD21_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
                      num_train_timesteps=1000, prediction_type="v_prediction", set_alpha_to_one=False,
                      skip_prk_steps=True, steps_offset=1, trained_betas=None)


def versions():
    import safetensors
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}


def write_tokenizer(folder):
    """sd21-tokenizer with only its first MERGES merges; returns the vocabulary size."""
    vocab = json.load(open(os.path.join(SOURCE_TOKENIZER, "vocab.json"), encoding="utf-8"))
    lines = open(os.path.join(SOURCE_TOKENIZER, "merges.txt"), encoding="utf-8").read().split("\n")
    header, merges = lines[0], [m for m in lines[1:] if m]
    assert header.startswith("#version")
    # CLIP's vocabulary: 256 byte symbols, the same with </w>, then merge r's result at 512 + r.
    for r in range(MERGES):
        assert vocab[merges[r].replace(" ", "")] == 512 + r, merges[r]
    kept = {t: i for t, i in vocab.items() if i < 512 + MERGES}
    kept["<|startoftext|>"] = 512 + MERGES
    kept["<|endoftext|>"] = 513 + MERGES
    os.makedirs(folder)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(dict(sorted(kept.items(), key=lambda kv: kv[1])), f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join([header] + merges[:MERGES]) + "\n")
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(SOURCE_TOKENIZER, name), os.path.join(folder, name))
    return len(kept)


def perturb(module, g, scale):
    """Seeded noise on every parameter: norms and biases away from 1 and 0."""
    with torch.no_grad():
        for _, p in module.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def rel_l2(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if os.path.isdir(OUT_DIR):
        shutil.rmtree(OUT_DIR)
    os.makedirs(OUT_DIR)
    tmp_tokenizer = os.path.join(OUT_DIR, "tokenizer.tmp")
    vocab_size = write_tokenizer(tmp_tokenizer)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_tokenizer)
    assert not os.path.exists(os.path.join(tmp_tokenizer, "tokenizer.json"))
    assert tokenizer.pad_token_id == 0 and len(tokenizer) == vocab_size, (tokenizer.pad_token_id, len(tokenizer))

    g = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    text_config = CLIPTextConfig(**TEXT, vocab_size=vocab_size, bos_token_id=512 + MERGES, eos_token_id=513 + MERGES)
    text_encoder = CLIPTextModel(text_config).eval()
    te.randomize(text_encoder, g)
    unet = UNet2DConditionModel(**UNET).eval()
    perturb(unet, g, 0.05)
    vae = AutoencoderKL(**VAE).eval()
    perturb(vae, g, 0.05)
    scheduler = DDIMScheduler.from_config(SD21_SCHEDULER)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(PIPELINE, safe_serialization=True)
    # transformers 5 saves tokenizer.json only; SD pipelines hold vocab.json + merges.txt (reloaded below).
    shutil.rmtree(os.path.join(PIPELINE, "tokenizer"))
    shutil.move(tmp_tokenizer, os.path.join(PIPELINE, "tokenizer"))

    # transformers 5 saves CLIPTextModel without the text_model. prefix; SD pipelines hold text_model.*.
    te_file = os.path.join(PIPELINE, "text_encoder", "model.safetensors")
    te_state = {k if k.startswith(te.LEGACY) else te.LEGACY + k: v.clone().contiguous() for k, v in load_file(te_file).items()
                if not k.endswith("position_ids")}
    save_canonical(te_state, te_file, {"format": "pt"})
    for part, name in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors")):
        path = os.path.join(PIPELINE, part, name)
        save_canonical({k: v.clone() for k, v in load_file(path).items()}, path, {"format": "pt"})

    pipe = StableDiffusionPipeline.from_pretrained(PIPELINE, safety_checker=None, requires_safety_checker=False).to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
    saved, reloaded = text_encoder.state_dict(), pipe.text_encoder.state_dict()
    assert set(saved) == set(reloaded) and all(torch.equal(saved[k], reloaded[k]) for k in saved), "the text encoder did not reload"

    # The original single file.
    unet_sd = {k: v.detach().contiguous() for k, v in pipe.unet.state_dict().items()}
    vae_sd = {k: v.detach().contiguous() for k, v in pipe.vae.state_dict().items()}
    unet_cfg = dict(pipe.unet.config)
    vae_cfg = dict(pipe.vae.config)
    te.CONFIG = dict(TEXT, vocab_size=vocab_size)  # to_original reads the width and projection size from it
    text_original = {k: v for k, v in te.to_original(te_state, TEXT["num_hidden_layers"], g).items() if k.startswith(te.PREFIX)}
    original = {**make_fixtures.to_ldm(unet_sd, unet_cfg), **vaefx.to_original(vae_sd, vae_cfg), **text_original}
    original_path = os.path.join(OUT_DIR, "sd21-tiny-original.safetensors")
    save_canonical(original, original_path, {"format": "pt"})
    make_fixtures.verify_with_diffusers(load_file(original_path), unet_sd, unet_cfg, "pipeline UNet")
    for k, v in make_fixtures.convert_ldm_unet_checkpoint(load_file(original_path), unet_cfg).items():
        assert torch.equal(v, unet_sd[k]), k
    vae_back = convert_ldm_vae_checkpoint(load_file(original_path), vae_cfg)
    assert set(vae_back) == set(vae_sd) and all(torch.equal(vae_back[k], vae_sd[k]) for k in vae_sd)
    checked = te.check_with_diffusers(original_path, text_config, te_state)

    # References.
    out, meta = {}, dict(versions(), prompts=json.dumps(PROMPTS), negative_prompts=json.dumps(NEGATIVE), steps=str(STEPS),
                         guidance=str(GUIDANCE), height=str(HEIGHT), width=str(WIDTH), seed=str(SEED), noise_seed=str(NOISE_SEED),
                         merges=str(MERGES), text_encoder_conversion_checked=str(checked))
    ids = lambda texts: pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                                       return_tensors="pt").input_ids
    out["input_ids.prompt"], out["input_ids.negative"] = ids(PROMPTS), ids(NEGATIVE)
    untruncated = pipe.tokenizer(PROMPTS[1]).input_ids
    assert len(untruncated) > 77, f"the long prompt has only {len(untruncated)} tokens"
    meta["long_prompt_tokens"] = str(len(untruncated))
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(PROMPTS, "cpu", 1, True, NEGATIVE)
        _, default = pipe.encode_prompt(PROMPTS, "cpu", 1, True, None)
    out["prompt_embeds"], out["negative_prompt_embeds"], out["negative_prompt_embeds.default"] = pe, ne, default

    noise = torch.randn((len(PROMPTS), 4, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(NOISE_SEED))
    out["noise"] = noise
    runs = {"ddim": (DDIMScheduler, NEGATIVE), "pndm": (PNDMScheduler, None), "euler": (EulerDiscreteScheduler, NEGATIVE)}
    for name, (cls, negative) in runs.items():
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        kw = dict(prompt=PROMPTS, negative_prompt=negative, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  height=HEIGHT, width=WIDTH)
        with torch.no_grad():
            latents = pipe(**kw, latents=noise.clone(), output_type="latent").images
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            image = pipe(**kw, latents=noise.clone(), output_type="np").images
        expect = (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(image, expect), np.abs(image - expect).max()
        out[f"{name}.latents"], out[f"{name}.decoded"] = latents, decoded
        meta[f"{name}.negative_prompts"] = "given" if negative else "none (empty prompt)"
        meta[f"{name}.timesteps"] = ",".join(f"{float(t):g}" for t in pipe.scheduler.timesteps)
        clipped = float((decoded.abs() > 1).double().mean())
        meta[f"{name}.clipped_fraction"] = f"{clipped:.4f}"
        print(f"{name}: latents std {float(latents.std()):.3f}, decoded range [{float(decoded.min()):.3f}, "
              f"{float(decoded.max()):.3f}], {clipped:.1%} of the values outside [-1, 1]")
    save_canonical({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT_DIR, "expected.safetensors"), meta)

    total = 0
    for root, _, files in os.walk(OUT_DIR):
        for f in sorted(files):
            total += os.path.getsize(os.path.join(root, f))
    print(f"wrote {OUT_DIR}: {total} bytes; vocabulary {vocab_size}; {versions()}")


if __name__ == "__main__":
    main()
