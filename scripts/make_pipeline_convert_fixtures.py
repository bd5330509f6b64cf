#!/usr/bin/env python3
"""Fixtures for `alter convert --pipeline` (original SD2.x single file <-> diffusers pipeline folder).

Usage (from the repository root, ~/refenv holding torch, diffusers, transformers, safetensors, numpy):

    ~/refenv/bin/python scripts/make_pipeline_convert_fixtures.py            # (re)write Tests/Fixtures/pipeline-convert/
    swift build                                                               # then, with the alter just built:
    ~/refenv/bin/python scripts/make_pipeline_convert_fixtures.py --check-alter .build/debug/alter
                                                                 # writes Tests/Fixtures/pipeline-convert-check.json
    ~/refenv/bin/python scripts/make_pipeline_convert_fixtures.py --check-sd21-size .build/debug/alter /tmp/dir
                                                                 # full SD2.1 size, configs inferred (prints only)

Writes a small random-init SD2.x-structured pipeline made with diffusers and transformers (seed SEED):
a UNet2DConditionModel of make_fixtures.TINY_SD2's config, an AutoencoderKL of make_vae_fixtures.CONFIG and
a CLIPTextModel (TEXT: width 16, 2 layers, 2 heads, gelu, 512 ids; its width is the UNet's context),
every weight stored in fp16 (the float32 models hold exactly the fp16 values), as

- pipeline/: model_index.json, unet/, vae/, text_encoder/ (tensors named text_model.*, as the SD2.1 files
  saved by transformers 4 are; transformers 5 still loads them), scheduler/ (SD2.1's DDIM, v_prediction).
  No tokenizer/ (model_index.json lists none): the tests and the check pass
  Tests/Fixtures/tokenizer/sd21-tokenizer with --tokenizer.
- original.safetensors: the same weights in the original layout (model.diffusion_model.*, first_stage_model.*
  with 1x1-conv attention projections, cond_stage_model.model.* in OpenCLIP names with q/k/v fused), plus
  what an SD2.x file holds beside them: one more resblock than the pipeline's text encoder (random weights:
  SD2.x reads the penultimate layer), text_projection, logit_scale, LDM's betas and alphas_cumprod,
  model_ema.decay / model_ema.num_updates and one EMA copy. The file is checked by converting it back with
  diffusers' own single-file functions (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
  convert_open_clip_checkpoint): every weight equal.
- configs/: the three config.json files (the tiny models' numbers are no SD2.x's, so converting the
  original file needs --config, --text-encoder-config and --vae-config).

--check-alter runs alter: original.safetensors -> pipeline folder (fp32), which diffusers'
StableDiffusionPipeline.from_pretrained must load with no missing or unexpected keys (each model also
loaded with output_loading_info) and whose UNet, VAE and text encoder outputs must equal the source models';
then that folder -> original file, compared tensor by tensor with original.safetensors, loaded with
StableDiffusionPipeline.from_single_file(config=<alter's folder>) offline, outputs compared again; and the
all-zero placeholder resblock checked to be the identity (a text encoder one layer deeper, reading it too,
gives the same last_hidden_state). Also --no-tokenizer: the folder loads with from_pretrained(..., tokenizer=None).

--check-sd21-size BINARY DIR writes a full-size SD2.x original file (SD2.1's UNet, VAE and 24-resblock
text encoder, fp16, all zeros, sparse) under DIR, converts it to a pipeline folder with every config
inferred and back, compares the configs alter wrote with SD2.1's, counts the resblocks written back,
prints seconds and peak resident memory (GNU time) of each direction, and removes what it wrote.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
import make_vae_fixtures as mv  # noqa: E402
from make_forward_fixtures import save_canonical  # noqa: E402

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "Tests", "Fixtures", "pipeline-convert")
CHECK = os.path.join(REPO, "Tests", "Fixtures", "pipeline-convert-check.json")
TOKENIZER = os.path.join(REPO, "Tests", "Fixtures", "tokenizer", "sd21-tokenizer")
SEED = 1130
TE = "cond_stage_model.model."
TEXT = dict(vocab_size=512, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=16,
            bos_token_id=0, eos_token_id=2, pad_token_id=1)
UNET = mf.TINY_SD2
VAE = mv.CONFIG


def randomize(model, g, scale=0.1):
    """Weights of a visible scale everywhere (default inits leave biases 0 and norm scales 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + scale * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def build():
    g = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    text = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    text.config._attn_implementation = "eager"
    for m in (unet, vae, text):
        randomize(m, g)
        with torch.no_grad():  # stored in fp16: the float32 models hold exactly the stored values
            for q in m.parameters():
                q.copy_(q.half().float())
    return unet, vae, text, g


def text_state(text):
    """transformers 5 names CLIPTextModel's tensors without text_model.; SD2.1's files use text_model.*."""
    return {"text_model." + k: v.detach().clone().contiguous() for k, v in text.state_dict().items() if not k.endswith("position_ids")}


def text_to_original(sd, layers, g):
    o = {
        TE + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        TE + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        TE + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        TE + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
    }
    for i in range(layers):
        t, r = f"text_model.encoder.layers.{i}.", f"{TE}transformer.resblocks.{i}."
        for s in ("weight", "bias"):
            o[r + f"ln_1.{s}"] = sd[t + f"layer_norm1.{s}"]
            o[r + f"attn.in_proj_{s}"] = torch.cat([sd[t + f"self_attn.{p}_proj.{s}"] for p in "qkv"], 0)
            o[r + f"attn.out_proj.{s}"] = sd[t + f"self_attn.out_proj.{s}"]
            o[r + f"ln_2.{s}"] = sd[t + f"layer_norm2.{s}"]
            o[r + f"mlp.c_fc.{s}"] = sd[t + f"mlp.fc1.{s}"]
            o[r + f"mlp.c_proj.{s}"] = sd[t + f"mlp.fc2.{s}"]
    r0 = f"{TE}transformer.resblocks.0."
    for k in [k for k in o if k.startswith(r0)]:  # the last resblock, unused by SD2.x, with weights of its own
        o[k.replace(r0, f"{TE}transformer.resblocks.{layers}.")] = (torch.randn(o[k].shape, generator=g) * 0.1).half()
    d = TEXT["hidden_size"]
    o[TE + "text_projection"] = torch.randn((d, TEXT["projection_dim"]), generator=g).half()
    o[TE + "logit_scale"] = torch.tensor(float(np.log(1 / 0.07)), dtype=torch.float32)
    return o


def check_original_with_diffusers(original, unet_sd, vae_sd, text_sd):
    """diffusers' own single-file conversion of original.safetensors gives every weight back."""
    from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                      convert_open_clip_checkpoint)
    u = convert_ldm_unet_checkpoint(dict(original), dict(UNET))
    v = convert_ldm_vae_checkpoint(dict(original), dict(VAE))
    extra = [k for k in original if k.startswith(f"{TE}transformer.resblocks.{TEXT['num_hidden_layers']}.")]
    t = convert_open_clip_checkpoint(CLIPTextModel(CLIPTextConfig(**TEXT)), {k: x for k, x in original.items() if k not in extra})
    t.pop("text_projection.weight", None)  # CLIPTextModel has none: diffusers' loader skips it
    t = {("text_model." + k if not k.startswith("text_model.") else k): x for k, x in t.items()}
    for name, got, ref in (("unet", u, unet_sd), ("vae", v, vae_sd), ("text_encoder", t, text_sd)):
        assert set(got) == set(ref), (name, sorted(set(got) ^ set(ref))[:5])
        for k in ref:
            assert torch.equal(got[k].reshape(ref[k].shape), ref[k]), (name, k)
    return len(u) + len(v) + len(t)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def make():
    unet, vae, text, g = build()
    unet_sd = {k: v.detach().half().contiguous() for k, v in unet.state_dict().items()}
    vae_sd = {k: v.detach().half().contiguous() for k, v in vae.state_dict().items()}
    text_sd = {k: v.half() for k, v in text_state(text).items()}
    p = os.path.join(OUT, "pipeline")
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        os.makedirs(os.path.join(p, sub), exist_ok=True)
    for model, sub, sd in ((unet, "unet", unet_sd), (vae, "vae", vae_sd)):
        model.save_config(os.path.join(p, sub))
        save_canonical(sd, os.path.join(p, sub, "diffusion_pytorch_model.safetensors"), {"format": "pt"})
    text.config.save_pretrained(os.path.join(p, "text_encoder"))
    save_canonical(text_sd, os.path.join(p, "text_encoder", "model.safetensors"), {"format": "pt"})
    mf.sd21_scheduler().save_config(os.path.join(p, "scheduler"))
    index = mf.model_index_json()
    index.update(feature_extractor=[None, None], tokenizer=[None, None])
    index.pop("image_encoder", None)
    write_json(os.path.join(p, "model_index.json"), index)
    # The configs by themselves, for converting the original file (whose tiny numbers inference cannot guess).
    for sub in ("unet", "vae", "text_encoder"):
        os.makedirs(os.path.join(OUT, "configs", sub), exist_ok=True)
        with open(os.path.join(p, sub, "config.json")) as f:
            cfg = f.read()
        with open(os.path.join(OUT, "configs", sub, "config.json"), "w") as f:
            f.write(cfg)

    original = mf.to_ldm(unet_sd, UNET)
    original.update(mv.to_original(vae_sd, VAE))
    original.update(text_to_original(text_sd, TEXT["num_hidden_layers"], g))
    original.update(mf.sd_schedule())
    original["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    original["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    original[mf.ema_key("model.diffusion_model.time_embed.0.weight")] = original["model.diffusion_model.time_embed.0.weight"].clone()
    original = {k: v.contiguous() for k, v in original.items()}
    path = os.path.join(OUT, "original.safetensors")
    save_canonical(original, path, {"format": "pt"})
    checked = check_original_with_diffusers(load_file(path), unet_sd, vae_sd, text_sd)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total} bytes; diffusers' single-file conversion gives back all {checked} weights")


# ---------------------------------------------------------------------------------------------- check


def run(cmd):
    print("$", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def max_diff(a, b):
    return float((a.double() - b.double()).abs().max())


def outputs(unet, vae, text):
    """UNet, VAE (encoder mean, decoder) and text encoder outputs on fixed inputs, float32."""
    g = torch.Generator().manual_seed(7)
    sample = torch.randn((2, 4, 8, 8), generator=g)
    context = torch.randn((2, 5, TEXT["hidden_size"]), generator=g)
    image = torch.randn((1, 3, 16, 16), generator=g)
    latent = torch.randn((1, 4, 8, 8), generator=g)
    ids = torch.randint(0, TEXT["vocab_size"], (2, 77), generator=g)
    with torch.no_grad():
        return {
            "unet": unet.float()(sample, torch.tensor([10, 900]), encoder_hidden_states=context).sample,
            "vae_encode_mean": vae.float().encode(image).latent_dist.mean,
            "vae_decode": vae.float().decode(latent).sample,
            "text_encoder": text.float()(input_ids=ids).last_hidden_state,
        }


def compare(got, ref):
    return {k: max_diff(got[k], ref[k]) for k in ref}


def check_alter(binary):
    unet, vae, text, _ = build()
    text.config._attn_implementation = "eager"
    reference = outputs(unet, vae, text)
    original = load_file(os.path.join(OUT, "original.safetensors"))
    result = {"diffusers_version": diffusers.__version__, "torch_version": torch.__version__}
    import transformers
    result["transformers_version"] = transformers.__version__
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "pipeline")
        to_pipeline = [binary, "convert", "--pipeline", os.path.join(OUT, "original.safetensors"), "-o", folder,
                       "--tokenizer", TOKENIZER, "--prediction-type", "v_prediction", "--dtype", "fp32",
                       "--config", os.path.join(OUT, "configs/unet/config.json"),
                       "--text-encoder-config", os.path.join(OUT, "configs/text_encoder/config.json"),
                       "--vae-config", os.path.join(OUT, "configs/vae/config.json"), "--json"]
        summary = json.loads(run(to_pipeline))
        result["to_pipeline"] = {"cmd": " ".join(c.replace(tmp, "$TMPDIR").replace(REPO + "/", "") for c in to_pipeline),
                                 "tensor_count": summary["tensor_count"],
                                 "dropped": {d["reason"]: d["tensor_count"] for d in summary["dropped"]},
                                 "files": sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)}
        infos = {}
        loaded = {}
        for sub, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
            model, info = cls.from_pretrained(folder, subfolder=sub, output_loading_info=True)
            infos[sub] = {k: sorted(v) if isinstance(v, (list, set)) else str(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
            loaded[sub] = model.eval()
        pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
        pipe.text_encoder.config._attn_implementation = "eager"
        got = outputs(pipe.unet, pipe.vae, pipe.text_encoder)
        result["from_pretrained"] = {
            "loaded": True, "loading_info": infos, "tokenizer_vocab_size": pipe.tokenizer.vocab_size,
            "scheduler": type(pipe.scheduler).__name__, "prediction_type": pipe.scheduler.config.prediction_type,
            "max_abs_diff": compare(got, reference),
        }
        no_tok = os.path.join(tmp, "no-tokenizer")
        result["no_tokenizer"] = check_no_tokenizer(binary, to_pipeline, no_tok)

        back = os.path.join(tmp, "back.safetensors")
        to_original = [binary, "convert", "--pipeline", folder, "-o", back, "--json"]
        summary = json.loads(run(to_original))
        written = load_file(back)
        placeholder = {k for k in written if k.startswith(f"{TE}transformer.resblocks.{TEXT['num_hidden_layers']}.")}
        dropped = set(original) - set(written)
        # The pipeline was written in fp32 from fp16: values compare exactly after the exact upcast.
        same = [k for k in written if k in original and torch.equal(written[k], original[k].to(written[k].dtype))]
        result["to_original"] = {
            "cmd": " ".join(c.replace(tmp, "$TMPDIR") for c in to_original),
            "tensor_count": len(written), "equal_to_source_count": len(same),
            "differing": sorted(k for k in written if k in original and k not in same and k not in placeholder),
            "not_in_source": sorted(set(written) - set(original)),
            "placeholder_resblock": sorted(placeholder), "placeholder_all_zero": all(float(written[k].abs().max()) == 0 for k in placeholder),
            "left_out": sorted(dropped),
            "dropped": {d["reason"]: d["tensor_count"] for d in summary["dropped"]},
            "added": {a["reason"]: a["tensor_count"] for a in summary["added"]},
        }
        assert not result["to_original"]["not_in_source"], result["to_original"]["not_in_source"]
        assert not result["to_original"]["differing"], result["to_original"]["differing"]
        # The placeholder is the identity: a text encoder one layer deeper that runs it gives the same output.
        from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
        deeper_cfg = CLIPTextConfig(**dict(TEXT, num_hidden_layers=TEXT["num_hidden_layers"] + 1))
        deeper = CLIPTextModel(deeper_cfg).eval()
        deeper.config._attn_implementation = "eager"
        sd = convert_open_clip_checkpoint(deeper, written)
        sd.pop("text_projection.weight", None)
        missing, unexpected = deeper.load_state_dict({k.removeprefix("text_model."): v for k, v in sd.items()}, strict=False)
        assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
        ids = torch.randint(0, TEXT["vocab_size"], (2, 77), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            a = deeper(input_ids=ids).last_hidden_state
            b = text(input_ids=ids).last_hidden_state
        result["placeholder_identity_max_abs_diff"] = max_diff(a, b)

        try:
            single = StableDiffusionPipeline.from_single_file(back, config=folder, local_files_only=True)
            single.text_encoder.config._attn_implementation = "eager"
            result["from_single_file"] = {"loaded": True, "config": "the folder alter wrote (config=...)",
                                          "max_abs_diff": compare(outputs(single.unet, single.vae, single.text_encoder), reference)}
        except Exception as e:  # noqa: BLE001  (recorded: why diffusers did not load it)
            result["from_single_file"] = {"loaded": False, "error": f"{type(e).__name__}: {e}"[:500]}
    ok = (all(not v for i in result["from_pretrained"]["loading_info"].values() for v in i.values())
          and all(v == 0 for v in result["from_pretrained"]["max_abs_diff"].values())
          and result["to_original"]["placeholder_all_zero"] and result["placeholder_identity_max_abs_diff"] == 0
          and result["from_single_file"].get("loaded") and all(v == 0 for v in result["from_single_file"]["max_abs_diff"].values()))
    result["ok"] = bool(ok)
    write_json(CHECK, result)
    print(json.dumps(result, indent=2))
    print("ok" if ok else "NOT OK")
    return 0 if ok else 1


def check_no_tokenizer(binary, to_pipeline, folder):
    cmd = [c for c in to_pipeline if c != "--json"]
    i = cmd.index("--tokenizer")
    cmd = cmd[:i] + ["--no-tokenizer"] + cmd[i + 2:]
    cmd[cmd.index("-o") + 1] = folder
    run(cmd)
    # diffusers requires every non-optional component: a missing tokenizer is passed as None.
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, tokenizer=None)
    return {"loaded": True, "from_pretrained_kwargs": "tokenizer=None", "tokenizer_is_none": pipe.tokenizer is None}


def check_sd21_size(binary, out_dir):
    """A full-size SD2.x original file (SD2.1's UNet, VAE and 24-resblock OpenCLIP text encoder, fp16,
    all zeros, written sparse: the header, then a hole) converted with every config inferred; the
    configs alter writes are compared with SD2.1's, and both directions are timed (wall, peak RSS)."""
    import struct
    import time
    with torch.device("meta"):
        unet = UNet2DConditionModel(**mf.FULL_SD21)
        vae = AutoencoderKL(**mv.SD21_CONFIG)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                            num_attention_heads=16, hidden_act="gelu", projection_dim=1024))
    shapes = {k: list(v.shape) for k, v in mf.to_ldm(unet.state_dict(), mf.FULL_SD21).items()}
    shapes.update({k: list(v.shape) for k, v in mv.to_original(vae.state_dict(), mv.SD21_CONFIG).items()})
    te_sd = {"text_model." + k: v for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    te = text_to_original(te_sd, 23, torch.Generator().manual_seed(0))  # meta tensors, but the random extra resblock
    shapes.update({k: list(v.shape) for k, v in te.items()})
    shapes.update({"betas": [1000], "alphas_cumprod": [1000]})
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "sd21-zeros.safetensors")
    header, offset = {}, 0
    for k in sorted(shapes):
        n = int(np.prod(shapes[k])) * 2
        header[k] = {"dtype": "F16", "shape": shapes[k], "data_offsets": [offset, offset + n]}
        offset += n
    text_ = json.dumps(header, separators=(",", ":")).encode()
    text_ += b" " * (-len(text_) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text_)) + text_)
        f.truncate(8 + len(text_) + offset)
    params = offset // 2
    result = {"tensor_count": len(shapes), "parameter_count": params, "bytes": offset}
    folder = os.path.join(out_dir, "sd21-pipeline")
    back = os.path.join(out_dir, "sd21-back.safetensors")
    for label, cmd in (("to_pipeline", [binary, "convert", "--pipeline", path, "-o", folder, "--force", "--tokenizer", TOKENIZER,
                                        "--prediction-type", "v_prediction", "--upcast-attention", "--sample-size", "96", "--json"]),
                       ("to_original", [binary, "convert", "--pipeline", folder, "-o", back, "--force", "--json"])):
        rss = os.path.join(out_dir, "rss.txt")
        start = time.time()
        summary = json.loads(run(["/usr/bin/time", "-f", "%M", "-o", rss] + cmd))  # GNU time: peak resident set (KB)
        with open(rss) as f:
            peak = int(f.read().split()[-1])
        result[label] = {"seconds": round(time.time() - start, 1), "tensor_count": summary["tensor_count"], "bytes": summary["bytes"],
                         "peak_rss_mb": peak // 1024, "assumptions": {c["component"]: c["assumptions"] for c in summary["components"]}}
    def cfg(sub):
        with open(os.path.join(folder, sub, "config.json")) as f:
            return json.load(f)
    u, v, te_cfg = cfg("unet"), cfg("vae"), cfg("text_encoder")
    expect_u = {k: mf.FULL_SD21[k] for k in ("block_out_channels", "attention_head_dim", "cross_attention_dim", "use_linear_projection",
                                             "upcast_attention", "layers_per_block", "down_block_types", "up_block_types", "sample_size",
                                             "norm_num_groups")}
    expect_v = {k: mv.SD21_CONFIG[k] for k in ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "scaling_factor")}
    expect_t = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, vocab_size=49408, hidden_act="gelu")
    result["config_mismatches"] = {
        "unet": {k: [u.get(k), x] for k, x in expect_u.items() if u.get(k) != x},
        "vae": {k: [v.get(k), x] for k, x in expect_v.items() if v.get(k) != x},
        "text_encoder": {k: [te_cfg.get(k), x] for k, x in expect_t.items() if te_cfg.get(k) != x},
    }
    with safe_open_header(back) as names:
        result["back_resblocks"] = len({n.split(".")[4] for n in names if n.startswith(TE + "transformer.resblocks.")})
    print(json.dumps(result, indent=2))
    for p in (path, back):
        os.remove(p)
    subprocess.run(["rm", "-rf", folder], check=True)
    return 0 if not any(result["config_mismatches"].values()) and result["back_resblocks"] == 24 else 1


class safe_open_header:
    """The tensor names of a safetensors file (header only)."""
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        import struct
        with open(self.path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            return [k for k in json.loads(f.read(n)) if k != "__metadata__"]

    def __exit__(self, *a):
        return False


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check-alter":
        sys.exit(check_alter(sys.argv[2]))
    if len(sys.argv) == 4 and sys.argv[1] == "--check-sd21-size":
        sys.exit(check_sd21_size(sys.argv[2], sys.argv[3]))
    make()
