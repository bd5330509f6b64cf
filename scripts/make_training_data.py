#!/usr/bin/env python3
"""Encode a folder of images and captions into an `alter compress` training-data file.

    ~/refenv/bin/python scripts/make_training_data.py --model SD21_PIPELINE_DIR --images DIR \\
        -o pairs.safetensors [--resolution 512] [--latent-mode sample|mean] [--dtype fp16]
    ~/refenv/bin/python scripts/make_training_data.py --selftest

The output follows formats/training-data.md: `latents` [N, 4, R/8, R/8] (the VAE latent times the
VAE's scaling factor), `context` [N, 77, 1024] (what a diffusers StableDiffusionPipeline passes to
the UNet as encoder_hidden_states: for SD2.1 the text encoder's last hidden state, which is
OpenCLIP's penultimate layer plus the final layer norm, because the SD2.1 text_encoder stores 23 of
its 24 layers) and `uncond` [77, 1024] (the empty prompt).

--model is a local diffusers pipeline folder (vae/, text_encoder/, tokenizer/; the UNet is not
loaded). Nothing is downloaded. --images holds .png/.jpg/.jpeg/.webp/.bmp files with their
captions either in a `metadata.jsonl` (one {"file_name": ..., "text": ...} per line, as
Hugging Face's imagefolder) or in a .txt file of the same name (cat.png -> cat.txt). Each image is
converted to RGB, resized so its shorter side is --resolution (bicubic) and centre-cropped to a
square, as diffusers' text-to-image training does.

The file is written as it is computed (memory holds one batch), under a temporary name renamed
into place at the end. Requires torch, diffusers, transformers, safetensors, numpy and Pillow.
--selftest builds a tiny random pipeline (VAE, CLIP text encoder with a character tokenizer, UNet)
and checks the output against the pipeline's own encode_prompt and VAE.
"""

import argparse
import json
import os
import struct
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DTYPES = {"fp32": (torch.float32, "F32"), "fp16": (torch.float16, "F16"), "bf16": (torch.bfloat16, "BF16")}


def fail(msg):
    print(f"make_training_data: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------------------
# inputs


def find_pairs(folder):
    """[(image path, caption)] sorted by file name, from metadata.jsonl or same-name .txt files."""
    if not os.path.isdir(folder):
        fail(f"{folder}: not a directory")
    images = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        fail(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    meta = os.path.join(folder, "metadata.jsonl")
    captions = {}
    if os.path.exists(meta):
        with open(meta, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    captions[row["file_name"]] = str(row["text"])
                except (ValueError, KeyError, TypeError) as e:
                    fail(f"{meta}:{n}: expected {{\"file_name\": ..., \"text\": ...}} ({e})")
    pairs, missing = [], []
    for name in images:
        if name in captions:
            pairs.append((os.path.join(folder, name), captions[name]))
            continue
        txt = os.path.join(folder, os.path.splitext(name)[0] + ".txt")
        if os.path.exists(txt):
            with open(txt, encoding="utf-8") as f:
                pairs.append((os.path.join(folder, name), f.read().strip()))
        else:
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        fail(f"{folder}: no caption for {shown} (give metadata.jsonl or a .txt file per image)")
    return pairs


def load_image(path, resolution):
    """[3, R, R] in [-1, 1]: RGB, shorter side resized to R (bicubic), centre crop."""
    try:
        im = Image.open(path).convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many types
        fail(f"{path}: cannot read the image ({e})")
    w, h = im.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    im = im.crop((left, top, left + resolution, top + resolution))
    a = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------
# models


def load_models(model_dir, device):
    import transformers
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    transformers.utils.logging.disable_progress_bar()

    for sub in ("vae", "text_encoder", "tokenizer"):
        if not os.path.isdir(os.path.join(model_dir, sub)):
            fail(f"{model_dir}: no {sub}/ folder (expected a diffusers pipeline folder)")
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae").to(device).eval()
    text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder").to(device).eval()
    tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    return vae, text_encoder, tokenizer


@torch.no_grad()
def encode_text(prompts, text_encoder, tokenizer, device):
    """StableDiffusionPipeline.encode_prompt's prompt_embeds (no LoRA, no clip_skip)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").attention_mask.to(device)
    return text_encoder(ids, attention_mask=mask)[0].float()


@torch.no_grad()
def encode_images(images, vae, mode, generator):
    dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    z = dist.mode() if mode == "mean" else dist.sample(generator)
    return z.float() * vae.config.scaling_factor


# --------------------------------------------------------------------------------------
# streaming safetensors writer


class StreamingSafetensors:
    """Writes a safetensors file whose shapes are known up front, filling tensors in any order
    (`write(name, first_row, tensor)`), under a temporary name renamed into place by `finish()`."""

    def __init__(self, path, specs, metadata):
        self.path = path
        self.specs = {}
        header = {"__metadata__": dict(sorted(metadata.items()))}
        offset = 0
        for name, (dtype, shape) in specs.items():
            nbytes = int(np.prod(shape)) * DTYPES[dtype][0].itemsize
            header[name] = {"dtype": DTYPES[dtype][1], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self.specs[name] = (DTYPES[dtype][0], shape, offset, nbytes)
            offset += nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.data_start = 8 + len(text)
        d = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
        self.f = os.fdopen(fd, "wb")
        self.f.write(struct.pack("<Q", len(text)) + text)
        self.f.truncate(self.data_start + offset)
        self.written = {name: 0 for name in self.specs}

    def write(self, name, first_row, t):
        dtype, shape, offset, nbytes = self.specs[name]
        row_bytes = nbytes // shape[0] if len(shape) > 0 and shape[0] else nbytes
        b = t.detach().to("cpu", dtype).contiguous().flatten().view(torch.uint8).numpy().tobytes()
        self.f.seek(self.data_start + offset + first_row * row_bytes)
        self.f.write(b)
        self.written[name] += len(b)

    def finish(self):
        for name, (_, _, _, nbytes) in self.specs.items():
            if self.written[name] != nbytes:
                self.abort()
                raise RuntimeError(f"{name}: wrote {self.written[name]} of {nbytes} bytes")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def abort(self):
        if not self.f.closed:
            self.f.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


# --------------------------------------------------------------------------------------
# the conversion


def make_training_data(model_dir, images_dir, out, resolution=512, latent_mode="sample", dtype="fp16",
                       batch=8, seed=0, device="cpu", uncond=True, quiet=False):
    pairs = find_pairs(images_dir)
    vae, text_encoder, tokenizer = load_models(model_dir, device)
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % (down * 8) != 0:
        print(f"make_training_data: note: a {resolution} px image gives {resolution // down} px latents; "
              f"SD2.1's UNet needs latent sides that are multiples of 8", file=sys.stderr)
    n = len(pairs)
    c, h = vae.config.latent_channels, resolution // down
    s, d = tokenizer.model_max_length, text_encoder.config.hidden_size
    specs = {"latents": (dtype, [n, c, h, h]), "context": (dtype, [n, s, d])}
    if uncond:
        specs["uncond"] = (dtype, [s, d])
    metadata = {
        "format": "alter.training-data",
        "format_version": "1",
        "vae_scaling_factor": repr(float(vae.config.scaling_factor)),
        "source": f"{n} images and captions from {os.path.abspath(images_dir)} at {resolution} px "
                  f"(scripts/make_training_data.py)",
        "vae": os.path.join(os.path.abspath(model_dir), "vae"),
        "text_encoder": f"{os.path.join(os.path.abspath(model_dir), 'text_encoder')}: last_hidden_state of "
                        f"{text_encoder.config.num_hidden_layers} layers (as StableDiffusionPipeline.encode_prompt)",
        "latent_mode": latent_mode,
    }
    writer = StreamingSafetensors(out, specs, metadata)
    generator = torch.Generator(device).manual_seed(seed)
    try:
        for start in range(0, n, batch):
            chunk = pairs[start:start + batch]
            images = torch.stack([load_image(p, resolution) for p, _ in chunk])
            writer.write("latents", start, encode_images(images, vae, latent_mode, generator))
            writer.write("context", start, encode_text([t for _, t in chunk], text_encoder, tokenizer, device))
            if not quiet and sys.stderr.isatty():
                print(f"\r{min(start + batch, n)}/{n}", end="", file=sys.stderr, flush=True)
        if uncond:
            writer.write("uncond", 0, encode_text([""], text_encoder, tokenizer, device)[0])
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    if not quiet:
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(f"{out}: {n} samples, latents {specs['latents'][1]}, context {specs['context'][1]}, {dtype}")
    return out


# --------------------------------------------------------------------------------------
# self-test on a tiny random pipeline


def tiny_pipeline(folder):
    """A tiny random StableDiffusionPipeline saved to `folder`: VAE with 2 levels (latents at 1/2),
    CLIP text encoder (2 layers, 32 wide) with a character-level BPE tokenizer, SD2-style UNet."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], latent_channels=4,
                        norm_num_groups=4, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=600,
        max_position_embeddings=77, projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    # byte-level BPE vocabulary of single characters (no merges): every word spells itself out
    # GPT-2/CLIP's byte-to-character table: printable bytes map to themselves, the rest above 255
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for ch in chars:
        vocab.setdefault(ch + "</w>", len(vocab))
    tok_dir = os.path.join(folder, "_tokenizer_src")
    os.makedirs(tok_dir, exist_ok=True)
    with open(os.path.join(tok_dir, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tok_dir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"),
                              model_max_length=77, pad_token="<|endoftext|>")
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=[8, 16],
                                down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1,
                                norm_num_groups=4, attention_head_dim=[2, 4], cross_attention_dim=32,
                                use_linear_projection=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)


def selftest():
    from safetensors import safe_open
    from safetensors.torch import load_file

    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory(prefix="make-training-data-") as tmp:
        model = os.path.join(tmp, "pipeline")
        pipe = tiny_pipeline(model)
        rng = np.random.default_rng(0)
        captions = ["a red square", "two cats on a mat", "", "an astronaut riding a horse", "x" * 200]
        sizes = [(40, 48), (64, 32), (32, 32), (50, 70), (33, 90)]
        for layout in ("txt", "jsonl"):
            images = os.path.join(tmp, "images-" + layout)
            os.makedirs(images)
            rows = []
            for i, ((w, h), cap) in enumerate(zip(sizes, captions)):
                yy, xx = np.mgrid[0:h, 0:w]
                a = np.stack([np.sin(xx / (3 + i + k)) * np.cos(yy / (5 + k)) for k in range(3)], -1)
                a = ((a + rng.normal(0, 0.1, a.shape)) * 100 + 128).clip(0, 255).astype(np.uint8)
                name = f"img{i}.{'png' if i % 2 == 0 else 'jpg'}"
                Image.fromarray(a).save(os.path.join(images, name))
                if layout == "txt":
                    with open(os.path.join(images, f"img{i}.txt"), "w") as f:
                        f.write(cap + "\n")
                else:
                    rows.append(json.dumps({"file_name": name, "text": cap}))
            if rows:
                with open(os.path.join(images, "metadata.jsonl"), "w") as f:
                    f.write("\n".join(rows) + "\n")
            for dtype, mode in (("fp32", "mean"), ("fp16", "sample"), ("bf16", "mean")):
                out = os.path.join(tmp, f"data-{layout}-{dtype}.safetensors")
                make_training_data(model, images, out, resolution=32, latent_mode=mode, dtype=dtype, batch=2,
                                   seed=1, quiet=True)
                data = load_file(out)
                with safe_open(out, "pt") as f:
                    meta = f.metadata()
                assert set(data) == {"latents", "context", "uncond"}, sorted(data)
                assert list(data["latents"].shape) == [5, 4, 16, 16], data["latents"].shape
                assert list(data["context"].shape) == [5, 77, 32], data["context"].shape
                assert list(data["uncond"].shape) == [77, 32], data["uncond"].shape
                assert all(v.dtype == DTYPES[dtype][0] for v in data.values())
                assert meta["format"] == "alter.training-data" and meta["format_version"] == "1"
                assert float(meta["vae_scaling_factor"]) == pipe.vae.config.scaling_factor
                # the reference: the pipeline's own encode_prompt and VAE
                with torch.no_grad():
                    ctx, unc = pipe.encode_prompt(captions, "cpu", 1, True)
                    ims = torch.stack([load_image(os.path.join(images, f"img{i}.{'png' if i % 2 == 0 else 'jpg'}"), 32)
                                       for i in range(5)])
                    lat = pipe.vae.encode(ims).latent_dist.mode() * pipe.vae.config.scaling_factor
                tol = {"fp32": 1e-6, "fp16": 2e-3, "bf16": 1e-2}[dtype]

                def close(a, b, what):
                    err = (a.float() - b.float()).abs().max().item()
                    scale = b.float().abs().max().item()
                    assert err <= tol * max(1.0, scale), f"{what} ({layout}, {dtype}): max error {err}"
                close(data["context"], ctx, "context")
                close(data["uncond"], unc[0], "uncond")
                if mode == "sample":  # the same draws: one generator over the batches of 2
                    g = torch.Generator().manual_seed(1)
                    with torch.no_grad():
                        lat = torch.cat([pipe.vae.encode(ims[i:i + 2]).latent_dist.sample(g) for i in range(0, 5, 2)])
                    lat = lat * pipe.vae.config.scaling_factor
                close(data["latents"], lat, "latents")
                print(f"selftest: {layout} captions, {dtype}, latents {mode}: ok")
        # errors: an image without a caption
        os.remove(os.path.join(tmp, "images-txt", "img3.txt"))
        try:
            find_pairs(os.path.join(tmp, "images-txt"))
            raise AssertionError("a missing caption was not reported")
        except SystemExit as e:
            assert e.code == 1
    print("selftest passed")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="diffusers pipeline folder (vae/, text_encoder/, tokenizer/)")
    ap.add_argument("--images", help="folder of images with captions (metadata.jsonl or NAME.txt)")
    ap.add_argument("-o", "--output", help="the training-data file to write (.safetensors)")
    ap.add_argument("--resolution", type=int, default=512, help="square image size in pixels (default 512; 768 for SD2.1 768-v)")
    ap.add_argument("--latent-mode", choices=["sample", "mean"], default="sample",
                    help="take a sample of the VAE's latent distribution (default, as diffusers' training) or its mean")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="storage dtype (default fp16)")
    ap.add_argument("--batch", type=int, default=8, help="images encoded at once (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the latent samples (default 0)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--no-uncond", action="store_true", help="do not store the empty prompt's context")
    ap.add_argument("--selftest", action="store_true", help="check the script on a tiny random pipeline and exit")
    a = ap.parse_args()
    if a.selftest:
        return selftest()
    if not (a.model and a.images and a.output):
        ap.error("--model, --images and -o are required (or --selftest)")
    if a.resolution <= 0 or a.batch <= 0:
        ap.error("--resolution and --batch must be positive")
    make_training_data(a.model, a.images, a.output, resolution=a.resolution, latent_mode=a.latent_mode,
                       dtype=a.dtype, batch=a.batch, seed=a.seed, device=a.device, uncond=not a.no_uncond)
    return 0


if __name__ == "__main__":
    sys.exit(main())
