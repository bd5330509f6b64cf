#!/usr/bin/env python3
"""Reference CLIP text encoder outputs for `alter` (transformers' CLIPTextModel, float64).

Usage (from the repository root, with ~/refenv holding torch, transformers, safetensors, numpy and,
for the conversion check, diffusers):

    ~/refenv/bin/python scripts/make_text_encoder_fixtures.py     # (re)write Tests/Fixtures/text-encoder/

Writes, for a small CLIPTextConfig built at a fixed seed (CONFIG):

- diffusers/config.json + diffusers/model.safetensors: the text encoder as a diffusers pipeline's
  text_encoder/ folder holds it (tensors named text_model.*, as transformers 4 saved them; the
  script checks that transformers loads the folder to the same outputs).
- config-quick-gelu.json: the same config with hidden_act quick_gelu (the SD1.x activation); the
  Swift tests run the same weights with it.
- original.safetensors: the same weights in the original SD2.x single-file layout (OpenCLIP names
  under cond_stage_model.model., q/k/v fused into in_proj_weight/in_proj_bias), plus what an SD2.x
  file holds and the text encoder does not use: one extra resblock (SD2.x reads the penultimate
  layer), text_projection, logit_scale, and a UNet and a VAE tensor. The file is checked by
  converting it back with diffusers' own convert_open_clip_checkpoint (single-file loader) and
  comparing every tensor with the transformers model's.
- expected.safetensors: input_ids (I64 [B, 77]: rows with end token and padding 0, padding with the
  end token, a full row, a row of plain ids) and last_hidden_state.gelu /
  last_hidden_state.quick_gelu [B, 77, D]: CLIPTextModel run in float64 (model.double()), with
  attention_mask None as diffusers' SD pipelines call it, stored as F32. Metadata: the rel. L2 error
  of a float32 transformers run (fp32_rel_l2.*) and the versions.
- sd21-random.safetensors: the full SD2.1 text encoder (23 layers, width 1024, 16 heads, gelu) at
  alter's deterministic random init (RandomParameters, ported in `random_parameter`, seed 21): only
  input_ids (I64 [1, 77], SD21_PROMPT through transformers' CLIPTokenizer on
  Tests/Fixtures/tokenizer/sd21-tokenizer) and the float64 last_hidden_state (F32 [1, 77, 1024]);
  metadata: seed, prompt, two values of one weight (the Swift test checks the port with them).
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_forward_fixtures import save_canonical  # noqa: E402  (metadata keys sorted: byte-identical reruns)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "Tests", "Fixtures", "text-encoder")
SEED = 20261130
PREFIX = "cond_stage_model.model."
LEGACY = "text_model."

CONFIG = dict(
    vocab_size=520,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=2,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=16,
    bos_token_id=518,
    eos_token_id=519,
    pad_token_id=0,
)
BOS, EOS, PAD = 518, 519, 0


def versions():
    import safetensors
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}


def randomize(model, g):
    """Weights of a visible scale everywhere (transformers' init leaves biases 0 and LN scales 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def input_ids(g):
    v = CONFIG["vocab_size"]
    n = CONFIG["max_position_embeddings"]

    def words(k):
        return torch.randint(1, v - 2, (k,), generator=g).tolist()

    rows = [
        [BOS] + words(5) + [EOS] + [PAD] * (n - 7),        # SD2.x: padding with 0
        [BOS] + words(20) + [EOS] * (n - 21),              # SD1.x: padding with the end token
        [BOS] + words(n - 2) + [EOS],                      # a full row
        torch.randint(0, v, (n,), generator=g).tolist(),   # any ids
    ]
    return torch.tensor(rows, dtype=torch.int64)


def to_original(sd, layers, g):
    """transformers names -> OpenCLIP names under cond_stage_model.model. (inverse of diffusers'
    convert_open_clip_checkpoint), plus the tensors an SD2.x file holds that are not used."""
    o = {
        PREFIX + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        PREFIX + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        PREFIX + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        PREFIX + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
    }
    for i in range(layers):
        t = f"text_model.encoder.layers.{i}."
        r = f"{PREFIX}transformer.resblocks.{i}."
        for s in ("weight", "bias"):
            o[r + f"ln_1.{s}"] = sd[t + f"layer_norm1.{s}"]
            o[r + f"attn.in_proj_{s}"] = torch.cat([sd[t + f"self_attn.{p}_proj.{s}"] for p in "qkv"], 0)
            o[r + f"attn.out_proj.{s}"] = sd[t + f"self_attn.out_proj.{s}"]
            o[r + f"ln_2.{s}"] = sd[t + f"layer_norm2.{s}"]
            o[r + f"mlp.c_fc.{s}"] = sd[t + f"mlp.fc1.{s}"]
            o[r + f"mlp.c_proj.{s}"] = sd[t + f"mlp.fc2.{s}"]
    # The last resblock (unused by SD2.x), with weights of its own.
    r0 = f"{PREFIX}transformer.resblocks.0."
    for k in [k for k in o if k.startswith(r0)]:
        o[k.replace(r0, f"{PREFIX}transformer.resblocks.{layers}.")] = torch.randn(o[k].shape, generator=g)
    d = CONFIG["hidden_size"]
    o[PREFIX + "text_projection"] = torch.randn((d, CONFIG["projection_dim"]), generator=g)  # OpenCLIP: [width, embed]
    o[PREFIX + "logit_scale"] = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
    o["model.diffusion_model.time_embed.0.weight"] = torch.randn((8, 4), generator=g)
    o["first_stage_model.decoder.conv_in.weight"] = torch.randn((4, 4, 1, 1), generator=g)
    return {k: v.contiguous() for k, v in o.items()}


def check_with_diffusers(original_path, config, reference):
    """Converts the original file with diffusers' own single-file code and compares."""
    from diffusers.loaders.single_file_utils import SD_2_TEXT_ENCODER_KEYS_TO_IGNORE, convert_open_clip_checkpoint
    layers = config.num_hidden_layers
    checkpoint = load_file(original_path)
    # diffusers lists SD2.x's unused 24th block by name (resblocks.23); this model's is resblocks.<layers>.
    extra = [k for k in checkpoint if k.startswith(f"{PREFIX}transformer.resblocks.{layers}.")]
    assert extra, "no extra resblock"
    SD_2_TEXT_ENCODER_KEYS_TO_IGNORE.extend(extra)
    try:
        converted = convert_open_clip_checkpoint(CLIPTextModel(config), checkpoint)
    finally:
        for k in extra:
            SD_2_TEXT_ENCODER_KEYS_TO_IGNORE.remove(k)
    converted.pop("text_model.embeddings.position_ids", None)
    assert set(converted) == set(reference), sorted(set(converted) ^ set(reference))
    for k, v in reference.items():
        assert torch.equal(converted[k], v), k
    return len(converted)


SD21_SEED = 21
SD21 = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
            num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
            projection_dim=1024, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
SD21_PROMPT = "a photograph of an astronaut riding a horse"
SD21_TOKENIZER = os.path.join(REPO, "Tests", "Fixtures", "tokenizer", "sd21-tokenizer")


def random_parameter(name, shape, seed):
    """alter's RandomParameters (Sources/NN/ParameterSource.swift) in numpy: a SplitMix64 stream
    per tensor seeded by seed XOR FNV-1a(name); u = (next >> 40) / 2^24; value = offset + (2u - 1) *
    bound in float32, bound 1/sqrt(fan-in) for matrices and 0.1 for vectors, offset 1 for vectors
    named *.weight."""
    m = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & m
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        state = np.uint64(seed ^ h) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
    if len(shape) > 1:
        bound = np.float32(1) / np.sqrt(np.float32(int(np.prod(shape[1:]))))
    else:
        bound = np.float32(0.1)
    offset = np.float32(1 if len(shape) == 1 and name.endswith(".weight") else 0)
    return (offset + (np.float32(2) * u - np.float32(1)) * bound).astype(np.float32).reshape(shape)


def make_sd21():
    """The full SD2.1 text encoder at alter's random init (seed SD21_SEED): only the reference output
    for one prompt is stored (sd21-random.safetensors); the Swift test makes the same weights."""
    config = CLIPTextConfig(**SD21)
    model = CLIPTextModel(config).eval()
    model.config._attn_implementation = "eager"
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids"):
            continue
        sd[k] = torch.from_numpy(random_parameter(LEGACY + k, list(v.shape), SD21_SEED))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    from transformers import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(SD21_TOKENIZER)
    ids = tokenizer([SD21_PROMPT], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        f32 = model(input_ids=ids).last_hidden_state
        ref = model.double()(input_ids=ids).last_hidden_state
    meta = dict(versions(), seed=str(SD21_SEED), prompt=SD21_PROMPT, fp32_rel_l2=f"{rel_l2(f32.double(), ref):.3e}",
                probe=str(sd["encoder.layers.0.mlp.fc1.weight"].flatten()[:2].tolist()))
    path = os.path.join(OUT_DIR, "sd21-random.safetensors")
    save_canonical({"input_ids": ids, "last_hidden_state": ref.float().contiguous()}, path, meta)
    print(f"sd21: float32 transformers vs float64 rel. L2 {meta['fp32_rel_l2']}; wrote {path}")


def rel_l2(a, b):
    return float(torch.linalg.norm((a - b).flatten()) / torch.linalg.norm(b.flatten()))


def main():
    os.makedirs(os.path.join(OUT_DIR, "diffusers"), exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    config = CLIPTextConfig(**CONFIG)
    model = CLIPTextModel(config).eval()
    model.config._attn_implementation = "eager"
    randomize(model, g)
    # transformers 5 names CLIPTextModel's tensors without the text_model. prefix; the files of
    # SD pipelines (saved by transformers 4) and diffusers' conversion use text_model.*.
    reference = {LEGACY + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
                 if not k.endswith("position_ids")}
    folder = os.path.join(OUT_DIR, "diffusers")
    config.save_pretrained(folder)
    save_canonical(reference, os.path.join(folder, "model.safetensors"), {"format": "pt"})
    reloaded = CLIPTextModel.from_pretrained(folder).eval()  # the folder loads in transformers as it is
    probe = torch.tensor([[BOS, 5, 6, 7, EOS, PAD]])
    with torch.no_grad():
        a, b = reloaded(input_ids=probe).last_hidden_state, model(input_ids=probe).last_hidden_state
    assert rel_l2(a.double(), b.double()) < 1e-6, f"the saved folder reloads to other outputs: {rel_l2(a.double(), b.double())}"

    quick = json.load(open(os.path.join(OUT_DIR, "diffusers", "config.json")))
    quick["hidden_act"] = "quick_gelu"
    with open(os.path.join(OUT_DIR, "config-quick-gelu.json"), "w") as f:
        json.dump(quick, f, indent=2, sort_keys=True)
        f.write("\n")

    original = to_original(reference, config.num_hidden_layers, g)
    original_path = os.path.join(OUT_DIR, "original.safetensors")
    save_canonical(original, original_path, {"format": "pt"})
    checked = check_with_diffusers(original_path, config, reference)

    ids = input_ids(g)
    out = {"input_ids": ids}
    meta = dict(versions(), seed=str(SEED), diffusers_conversion_checked=str(checked))
    for act in ("gelu", "quick_gelu"):
        c = CLIPTextConfig(**dict(CONFIG, hidden_act=act))
        m = CLIPTextModel(c).eval()
        m.config._attn_implementation = "eager"
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            f32 = m(input_ids=ids).last_hidden_state
            ref = m.double()(input_ids=ids).last_hidden_state
        out[f"last_hidden_state.{act}"] = ref.float().contiguous()
        meta[f"fp32_rel_l2.{act}"] = f"{rel_l2(f32.double(), ref):.3e}"
        print(f"{act}: float32 transformers vs float64 rel. L2 {meta[f'fp32_rel_l2.{act}']}")
    save_canonical(out, os.path.join(OUT_DIR, "expected.safetensors"), meta)
    total = 0
    for root, _, files in os.walk(OUT_DIR):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"wrote {OUT_DIR} ({total} bytes); diffusers conversion checked on {checked} tensors; {versions()}")


if __name__ == "__main__":
    main()
    make_sd21()
