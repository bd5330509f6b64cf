#!/usr/bin/env python3
"""Writes Tests/Fixtures/bundle-pipeline: the tokenizer, text encoder and VAE of a tiny pipeline
that fits the example UNet (examples/sd21-tiny.config.json: cross_attention_dim 32, in_channels 4),
for `alter export RUN --pipeline DIR` (formats/bundle.md, "Pipeline components").

    ~/refenv/bin/python scripts/make_bundle_pipeline_fixtures.py [--out Tests/Fixtures/bundle-pipeline]

* tokenizer/: SD2.1's tokenizer (Tests/Fixtures/tokenizer/sd21-tokenizer) cut to its first MERGES
  merges: the 512 byte symbols (with and without </w>), one token per merge, then <|startoftext|>
  and <|endoftext|>, in CLIP's id order. SD2.1's full vocabulary (49,408 rows) would make the
  text encoder's token embedding alone 49,408 x 32 x 4 bytes = 6.3 MB in F32.
* text_encoder/: a transformers CLIPTextModel (hidden size 32, 2 layers, gelu) with vocab_size equal
  to the tokenizer's, tensors named text_model.* (as transformers 4 and SD pipelines store them).
* vae/: a diffusers AutoencoderKL (block_out_channels [8, 16], latent_channels 4).
* original.safetensors: the same text encoder and VAE in the original SD2.x single-file layout
  (cond_stage_model.model.*, first_stage_model.*), stored F16, for `--pipeline FILE --tokenizer DIR`.
* expected.safetensors: float64 references, stored F32: `context` = last_hidden_state of PROMPT
  tokenized by transformers' CLIPTokenizer (`input_ids` stored too), `decoded` = the VAE decoder's
  output on the seeded `latent` [1, 4, 8, 8].
"""
import argparse
import json
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_forward_fixtures import save_canonical  # noqa: E402
import make_text_encoder_fixtures as te  # noqa: E402
import make_vae_fixtures as vf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SD21_TOKENIZER = os.path.join(REPO, "Tests", "Fixtures", "tokenizer", "sd21-tokenizer")
SEED = 20261201
MERGES = 488  # 512 + 488 + 2 = 1,002 tokens
PROMPT = "a photo of an astronaut riding a horse on the moon"
HIDDEN = 32   # = the example UNet's cross_attention_dim


def write_tokenizer(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(SD21_TOKENIZER, "vocab.json"), encoding="utf-8") as f:
        full = json.load(f)
    with open(os.path.join(SD21_TOKENIZER, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1:1 + MERGES]
    by_id = sorted(full.items(), key=lambda kv: kv[1])
    vocab = {}
    for token, i in by_id[:512 + MERGES]:
        assert i == len(vocab), (token, i)
        vocab[token] = i
    for m in merges:  # every merge's result is a token of the cut vocabulary
        assert m.replace(" ", "") in vocab, m
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join([lines[0]] + merges) + "\n")
    for name in ["special_tokens_map.json", "tokenizer_config.json"]:
        shutil.copyfile(os.path.join(SD21_TOKENIZER, name), os.path.join(folder, name))
    return len(vocab)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "bundle-pipeline"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)

    vocab_size = write_tokenizer(os.path.join(a.out, "tokenizer"))
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(a.out, "tokenizer"))
    assert len(tokenizer) == vocab_size, (len(tokenizer), vocab_size)
    ids = tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                            projection_dim=HIDDEN, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=0)
    text = CLIPTextModel(config).eval()
    text.config._attn_implementation = "eager"
    te.randomize(text, g)
    sd = {te.LEGACY + k: v.detach().clone().contiguous() for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    folder = os.path.join(a.out, "text_encoder")
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    save_canonical(sd, os.path.join(folder, "model.safetensors"), {"format": "pt"})

    vae = AutoencoderKL(**vf.CONFIG).eval()
    with torch.no_grad():
        for _, q in vae.named_parameters():
            if q.ndim == 1:
                q.add_(0.2 * torch.randn(q.shape, generator=g))
    vae_folder = os.path.join(a.out, "vae")
    vae.save_pretrained(vae_folder, safe_serialization=True)
    with open(os.path.join(vae_folder, "config.json")) as f:
        vae_config = json.load(f)
    vae_sd = {k: v.detach().float().contiguous() for k, v in vae.state_dict().items()}

    original = dict(te.to_original(sd, config.num_hidden_layers, g))
    original.update(vf.to_original(vae_sd, vae_config))
    # F16: half the bytes; the loaders read F16 as they read F32.
    original = {k: v.half().contiguous() for k, v in original.items()}
    save_canonical(original, os.path.join(a.out, "original.safetensors"), {"format": "pt"})

    latent = torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        context = text.double()(input_ids=ids).last_hidden_state
        decoded = vae.double().decode(latent.double()).sample
    save_canonical({"input_ids": ids.to(torch.int64).contiguous(), "context": context.float().contiguous(),
                    "latent": latent.float().contiguous(), "decoded": decoded.float().contiguous()},
                   os.path.join(a.out, "expected.safetensors"), {"prompt": PROMPT, "seed": str(SEED)})
    total = 0
    for root, _, files in os.walk(a.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"wrote {a.out}: vocab {vocab_size}, {total} bytes")


if __name__ == "__main__":
    main()
