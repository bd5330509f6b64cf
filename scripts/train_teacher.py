#!/usr/bin/env python3
"""Trains the example teacher: a small SD2.1-structured text-to-image pipeline on a procedural data set.

Usage (from the repository root; ~/refenv holds torch, diffusers 0.42, transformers 5.24, Pillow):

    ~/refenv/bin/python scripts/train_teacher.py                      # every stage, then examples/teacher/
    ~/refenv/bin/python scripts/train_teacher.py --resume             # continue after an interruption
    ~/refenv/bin/python scripts/train_teacher.py --stage unet --resume --minutes 20
    ~/refenv/bin/python scripts/train_teacher.py --quick --threads 1  # smoke test (minutes; no export
                                                                      # to examples/ unless --out says so)

Stages (`--stage`, default `all` = in this order): data, vae, unet, classifier, eval, export. Each
writes under `--work` (default /tmp/alter-teacher) in its own folder; a finished stage leaves
`done.json` there and is skipped when run again (`--force` redoes it; the later stages are then
stale and must be redone too). Training stages checkpoint every `--checkpoint-minutes` and when
their time budget (`--minutes`, else the stage's default below) runs out; a stage with a checkpoint
and no done.json continues only with `--resume` (bit for bit as an uninterrupted run at the same
thread count: the checkpoint holds the weights, optimizer, EMA, step and random generator state).
A stage stopped by its time budget is finished with what it has (the report says so); `--resume
--stage X` with a larger `--minutes` continues it to its planned step count.

## The data set (stage `data`)

Every image is 64x64 RGB (IMAGE), one flat-coloured shape on a flat background. Sizes, positions and
jitter below are given on a 128-pixel design grid (CANVAS): the shape is drawn with Pillow at 4x
that grid (512x512) and box-filtered down to 64x64 (anti-aliased), so a "24 px" shape is 12 pixels
wide in the image. Attributes and caption grammar:

    caption    := "a " SIZE " " COLOUR " " SHAPE " " POSITION " on a " BACKGROUND " background"
    SIZE       := small | medium | large                     (24, 34, 46 px box, +-2 px jitter, on CANVAS)
    COLOUR     := red | yellow | green | cyan | blue | purple  (+-12 per channel jitter)
    SHAPE      := circle | square | triangle                   (triangle: apex up, base = height)
    POSITION   := in the top left | at the top | in the top right | on the left | in the center |
                  on the right | in the bottom left | at the bottom | in the bottom right
                  (3x3 grid, centres at 28, 64, 100 px, +-4 px jitter, on CANVAS)
    BACKGROUND := black | grey | white                         (+-8 jitter)

e.g. "a small red triangle in the top left on a grey background". 3 x 6 x 3 x 9 x 3 = 1458
captions. Held out: every caption of the (shape, colour) pairs red triangle, blue circle and yellow
square (HELD_OUT_PAIRS; 3 x 3 x 9 x 3 = 243 captions): no training image shows them, while each
shape, each colour and every other attribute combination is seen. The training set cycles through
the 1215 other captions in a seeded order (`--images` images, jitter from the seed); `heldout.npz`
holds one real image per held-out caption (for the classifier's check and Frechet statistics).

## The pipeline

- Tokenizer: SD2.1's (Tests/Fixtures/tokenizer/sd21-tokenizer: open_clip's BPE vocabulary, pad "!",
  77 tokens), copied as it is.
- Text encoder: transformers' CLIPTextModel with SD2.1's structure (gelu, causal, final layer norm;
  the pipeline uses last_hidden_state) at width 64, 4 layers, 2 heads, MLP 256, vocab 49408; kept at
  its seeded random init (frozen, never trained), except that each layer's residual branches (the
  attention output projection and the second MLP matrix) are scaled by `--text-residual-scale`
  (default 0.1) once at init. Why: at transformers' plain init the MLPs' outputs dwarf the token
  embeddings, so every state is mostly a random function of the words before it. Measured on the
  1458 captions (share of the variance of a state explained by each attribute, one at a time): at
  scale 1 the shape word's own state is 13% shape, 37% colour and 41% size, and the padding states
  that follow the caption 11% shape; at scale 0.1 the shape word's state is 47% shape, 26% colour.
  Shape was the attribute the earlier teachers learned worst (held-out shape accuracy near chance).
  The scaled init makes the frozen states carry their own word without training the encoder. The
  scale is recorded in the work folder's text_encoder/init.json. Saved with SD pipelines'
  `text_model.*` names.
- VAE: diffusers' AutoencoderKL with SD's blocks (2 resnets per level, mid attention, quant convs)
  at 3 levels of widths 32, 64, 64: 64x64x3 <-> 16x16x4, downsampling 4 (SD: 4 levels, 8). The
  earlier teachers used SD's 4 levels on 128x128 images (widths 32, 64, 64, 64, the same 16x16
  latents): the second, after its 24-minute budget (975 steps of 4 images), the classifier read its
  reconstructions of the real held-out images with mean accuracy 0.796 (colour 0.469), a ceiling
  below the 90% the teacher must reach; 64x64 images hold what the classifier needs (it always read
  images average-pooled to 64x64) and a 3-level VAE sees 7x more images per second (measured step:
  16 images of 64x64 under bf16 autocast 0.67-0.78 s, 4 of 128x128 in fp32 1.07-1.30 s).
  Trained with L1 + L2 + 1e-6 KL (weighted as LDM: KL summed over the latent against L1 summed over
  pixels), the shape's pixels weighted `--vae-fg-weight` (a flat background otherwise dominates the
  loss), on `--vae-crop` crops (default: whole images) under bf16 autocast (`--vae-autocast`; the
  weights, the optimizer, the loss and the KL stay float32), the log-variance bias starting at -8;
  `scaling_factor` = 1 / std of posterior samples of training images (as SD). Latents for the UNet
  are encoded once, under bf16 autocast (error in the report).
- Group norms: 8 groups in the VAE and the UNet (SD: 32), so that a group holds 4..16 channels as in
  SD's models (32 groups at width 32 would be instance norm, which erases flat colours: measured, the
  VAE then hardly learned). An original-layout file cannot state this (LDM hard-codes 32): loaders
  need the config (alter: `--config`).
- UNet: diffusers' UNet2DConditionModel with SD2.1's blocks (CrossAttn x3 + plain down, plain +
  CrossAttn x3 up, 2 layers per block, linear projections, upcast_attention, head size 32 so heads
  1, 2, 4, 4) at widths 32, 64, 128, 128, cross-attention dim 64. v-prediction, scaled_linear betas
  0.00085..0.012, 1000 steps; trained on the VAE latents with 10% caption dropout (empty prompt),
  plain v MSE over uniform timesteps (`--unet-weighting v`, SD2.1-768's objective; `min-snr-5`
  down-weights the noisiest timesteps, which decide colour, shape and layout: the first full run
  used it and after 1,250 steps hardly followed the captions), AdamW, warm-up + cosine decay, EMA
  (the EMA weights are exported).
- Scheduler: SD2.1's DDIMScheduler config (scheduler/), v_prediction.

## Evaluation (stage `eval`)

A CNN attribute classifier (stage `classifier`; trained with blur/noise augmentation on its own
images, `--cls-images` drawn over all 1458 captions, held-out ones included: it is the measuring
instrument, and trained without them it reads colour as a cue for shape (measured: 9% shape
accuracy on held-out pairs); checked on the fresh held-out real images and on training images) scores images generated with DDIM (`--steps`,
default 50) and classifier-free guidance (`--guidance`, default 7.5; a comma list evaluates each)
from the held-out captions (all of them by default) and from `--eval-train` training captions; one
seeded generator per caption. Reported: accuracy per attribute (shape, colour, position, size,
background), their mean, and the share of images with all five right; and the Frechet distance
between the classifier's features of generated and real held-out images.

## Export (stage `export`, to `--out`, default examples/teacher/)

A diffusers StableDiffusionPipeline folder in fp16 (model_index.json, tokenizer/, text_encoder/,
vae/, unet/, scheduler/), classifier/ (model.safetensors in fp16, architecture.json read by
`build_classifier`, heldout-real-stats.safetensors: mean and covariance of the classifier features of
the real held-out images), eval-prompts.txt (the held-out captions, one per line), eval-prompts.jsonl
(caption and attribute labels), train-prompts.jsonl (the training captions the report scored) and
report.json (settings, parameter counts, losses, accuracies, times, versions). The folder is written
beside the target and renamed into place; an existing one is replaced only with `--force`.

## Run time (full defaults, 2 threads)

Measured on this project's 2-core Xeon with AMX (`--threads 2`, the default passive OpenMP wait)
in the third run (2026-12-01, the machine otherwise nearly idle): data 11 s; VAE 1,300 steps of 16
images in 10 min 56 s (1.97 steps/s) + 18 s encoding; UNet 4,034 steps in 50 min (1.34-1.43
steps/s, batch 32); classifier and eval about 12 min. The run that made examples/teacher/ (the
fourth, same day) reused that VAE; its UNet's 4,200 steps took 77.7 min of wall time because
other jobs shared the cores for most of it (1.1-1.35 CPU s per step in its progress lines), so its times in
report.json are not those of an idle machine. The budgets (`--minutes` or per stage: VAE 16, UNet
55, classifier 6, eval 15 minutes) give the UNet its 4,200 steps alone (about 52 min at the rate
above) and keep the whole run under 90 minutes (about 80). Under
load 1 thread can be faster (`--threads 1`: spinning or oversubscribed OpenMP threads measured up
to 8x slower). The progress lines print the CPU seconds per step.

Older measurements (1 thread, other jobs running; CPU seconds per step): UNet step (batch 32)
0.94-1.30 s; UNet forward (batch 64) 0.56-0.79 s; classifier step (batch 64) 0.41 s; rendering
1-4 ms per image. torch.compile made the UNet step 1.25x faster after 262 s of compilation (not
worth it within the budget); bf16 autocast did not speed the UNet up (0.92-0.97 s against
0.86-0.89 s per step) while it made the VAE's 1.5x faster.

Reproducibility: every random draw comes from generators seeded by `--seed` (the text encoder's
init, the data, each stage); results are bitwise equal for the same seed, thread count and library
versions (float reductions depend on the thread count).
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

# OpenMP threads that spin while waiting make a 2-thread run up to ~8x slower than 1 thread when
# other jobs share the 2 cores (measured UNet step, batch 32: 12.9 s spinning, 2.0 s passive, 1.5 s
# with 1 thread); passive waiting avoids that. On an otherwise idle machine spinning is faster
# (0.67 s against 1.30 s in a quieter moment): run with OMP_WAIT_POLICY=ACTIVE there. Read when the
# OpenMP runtime loads, so it is set before torch is imported; the environment's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(REPO, "Tests", "Fixtures", "tokenizer", "sd21-tokenizer")
STAGES = ["data", "vae", "unet", "classifier", "eval", "export"]

# ----------------------------------------------------------------------------------------------
# Data set
# ----------------------------------------------------------------------------------------------

IMAGE = 64        # image side in pixels
CANVAS = 128      # the side of the design grid that sizes, positions and jitter below are given in
LATENT = IMAGE // 4
SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (215, 35, 35), "yellow": (235, 210, 35), "green": (35, 165, 55),
           "cyan": (35, 200, 210), "blue": (35, 65, 215), "purple": (140, 55, 195)}
COLOUR_NAMES = list(COLOURS)
SIZES = {"small": 24, "medium": 34, "large": 46}
SIZE_NAMES = list(SIZES)
POSITIONS = ["in the top left", "at the top", "in the top right", "on the left", "in the center",
             "on the right", "in the bottom left", "at the bottom", "in the bottom right"]
GRID = [28, 64, 100]
BACKGROUNDS = {"black": (20, 20, 20), "grey": (128, 128, 128), "white": (238, 238, 238)}
BACKGROUND_NAMES = list(BACKGROUNDS)
HELD_OUT_PAIRS = [("triangle", "red"), ("circle", "blue"), ("square", "yellow")]
ATTRIBUTES = ["shape", "colour", "size", "position", "background"]
LABELS = {"shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZE_NAMES, "position": POSITIONS,
          "background": BACKGROUND_NAMES}
JITTER = {"position_px": 4, "size_px": 2, "colour": 12, "background": 8}


def caption(a):
    """a: (shape, colour, size, position, background) indices."""
    s, c, z, p, b = a
    return f"a {SIZE_NAMES[z]} {COLOUR_NAMES[c]} {SHAPES[s]} {POSITIONS[p]} on a {BACKGROUND_NAMES[b]} background"


def all_combos():
    return [(s, c, z, p, b) for s in range(3) for c in range(6) for z in range(3) for p in range(9) for b in range(3)]


def is_held_out(a):
    return (SHAPES[a[0]], COLOUR_NAMES[a[1]]) in HELD_OUT_PAIRS


def render(a, jitter):
    """a: attribute indices; jitter: (dx, dy, ds, dr, dg, db, dbg) -> uint8 [IMAGE, IMAGE, 3]. Drawn
    at 4x the CANVAS grid and box-filtered down to IMAGE (anti-aliased)."""
    from PIL import Image, ImageDraw
    s, c, z, p, b = a
    dx, dy, ds, dr, dg, db, dbg = jitter
    k = 4
    bg = tuple(int(np.clip(v + dbg, 0, 255)) for v in BACKGROUNDS[BACKGROUND_NAMES[b]])
    fg = tuple(int(np.clip(v + d, 0, 255)) for v, d in zip(COLOURS[COLOUR_NAMES[c]], (dr, dg, db)))
    im = Image.new("RGB", (CANVAS * k, CANVAS * k), bg)
    draw = ImageDraw.Draw(im)
    cx, cy = GRID[p % 3] + dx, GRID[p // 3] + dy
    h = (SIZES[SIZE_NAMES[z]] + ds) / 2
    box = [(cx - h) * k, (cy - h) * k, (cx + h) * k, (cy + h) * k]
    if SHAPES[s] == "circle":
        draw.ellipse(box, fill=fg)
    elif SHAPES[s] == "square":
        draw.rectangle(box, fill=fg)
    else:
        draw.polygon([(cx * k, (cy - h) * k), ((cx - h) * k, (cy + h) * k), ((cx + h) * k, (cy + h) * k)], fill=fg)
    return np.asarray(im.resize((IMAGE, IMAGE), Image.BOX), dtype=np.uint8)


def draw_jitter(rng, n):
    j = np.stack([
        rng.integers(-JITTER["position_px"], JITTER["position_px"] + 1, n),
        rng.integers(-JITTER["position_px"], JITTER["position_px"] + 1, n),
        rng.integers(-JITTER["size_px"], JITTER["size_px"] + 1, n),
        rng.integers(-JITTER["colour"], JITTER["colour"] + 1, n),
        rng.integers(-JITTER["colour"], JITTER["colour"] + 1, n),
        rng.integers(-JITTER["colour"], JITTER["colour"] + 1, n),
        rng.integers(-JITTER["background"], JITTER["background"] + 1, n)], 1)
    return j.astype(np.int64)


def training_draws(rng, n):
    """n training captions (attribute rows; never a held-out pair), cycling through all of them in
    seeded permutations, and their jitter: the order of the training set and of every image set
    rendered from training captions."""
    train = [a for a in all_combos() if not is_held_out(a)]
    order = []
    while len(order) < n:
        order += [train[i] for i in rng.permutation(len(train))]
    order = order[:n]
    return order, draw_jitter(rng, n)


def to_tensor(images):
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

TEXT_CONFIG = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                   num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu",
                   layer_norm_eps=1e-5, projection_dim=64, bos_token_id=0, eos_token_id=2, pad_token_id=1)
VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                  up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[32, 64, 64],
                  layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=8, sample_size=IMAGE)
UNET_CONFIG = dict(sample_size=LATENT, in_channels=4, out_channels=4, center_input_sample=False,
                   flip_sin_to_cos=True, freq_shift=0,
                   down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                   up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                   block_out_channels=[32, 64, 128, 128], layers_per_block=2, downsample_padding=1,
                   mid_block_scale_factor=1, act_fn="silu", norm_num_groups=8, norm_eps=1e-5,
                   cross_attention_dim=64, attention_head_dim=[1, 2, 4, 4], use_linear_projection=True,
                   upcast_attention=True, dual_cross_attention=False, only_cross_attention=False)
# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json
SCHEDULER_CONFIG = {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                    "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
                    "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
                    "steps_offset": 1, "trained_betas": None}
CLASSIFIER_ARCH = {
    "format": "alter-teacher-classifier", "version": 1,
    "input": {"channels": 3, "size": 64, "range": [-1, 1],
              "preprocess": "RGB image scaled to [-1, 1], average-pooled to 64x64 if larger (the example's images are 64x64)"},
    "convs": [[3, 32], [32, 64], [64, 64], [64, 64]],
    "conv": "3x3 conv (padding 1) + ReLU + 2x2 max pool, per entry [in, out]",
    "features": 128, "hidden": "flatten [64, 4, 4] -> linear 1024->128 + ReLU = features",
    "heads": {a: len(LABELS[a]) for a in ATTRIBUTES}, "labels": LABELS,
}


class AttributeClassifier(nn.Module):
    """Input x: [N, 3, 64, 64] in [-1, 1]; forward returns ({attribute: logits [N, classes]}, features [N, F])."""

    def __init__(self, arch):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(i, o, 3, padding=1) for i, o in arch["convs"]])
        side = arch["input"]["size"] >> len(arch["convs"])
        self.fc = nn.Linear(arch["convs"][-1][1] * side * side, arch["features"])
        self.heads = nn.ModuleDict({a: nn.Linear(arch["features"], n) for a, n in arch["heads"].items()})

    def forward(self, x):
        for c in self.convs:
            x = F.max_pool2d(F.relu(c(x)), 2)
        f = F.relu(self.fc(x.flatten(1)))
        return {a: h(f) for a, h in self.heads.items()}, f


def build_classifier(folder):
    """Loads classifier/ (architecture.json + model.safetensors) as exported; float32, eval mode."""
    from safetensors.torch import load_file
    with open(os.path.join(folder, "architecture.json")) as f:
        arch = json.load(f)
    m = AttributeClassifier(arch)
    m.load_state_dict({k: v.float() for k, v in load_file(os.path.join(folder, "model.safetensors")).items()})
    return m.eval(), arch


def classifier_input(images):
    """float [N, 3, 64k, 64k] in [-1, 1] -> [N, 3, 64, 64]."""
    k = images.shape[-1] // CLASSIFIER_ARCH["input"]["size"]
    return images if k == 1 else F.avg_pool2d(images, k)


def count(m):
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------

FULL = dict(images=6000, cls_images=4374, vae_steps=1300, vae_batch=16, vae_crop=64, vae_lr=5e-4, vae_minutes=16, vae_fg_weight=10.0,
            vae_autocast="bf16", text_residual_scale=0.1,
            unet_steps=4200, unet_batch=32, unet_lr=5e-4, unet_minutes=55, ema_max=0.999, unet_weighting="v",
            cls_steps=800, cls_batch=64, cls_lr=2e-3, cls_minutes=6,
            eval_heldout=0, eval_train=64, eval_batch=32, steps=50, guidance="3,5,7.5", eval_minutes=15)
QUICK = dict(images=256, cls_images=256, vae_steps=12, vae_batch=4, vae_crop=32, vae_lr=5e-4, vae_minutes=2, vae_fg_weight=10.0,
             vae_autocast="bf16", text_residual_scale=0.1,
             unet_steps=12, unet_batch=8, unet_lr=5e-4, unet_minutes=2, ema_max=0.999, unet_weighting="v",
             cls_steps=12, cls_batch=16, cls_lr=2e-3, cls_minutes=1,
             eval_heldout=4, eval_train=2, eval_batch=4, steps=4, guidance="7.5", eval_minutes=2)


def versions():
    import diffusers, transformers, safetensors, PIL
    return {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__}


def fmt_time(s):
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Prints step, rate, elapsed and ETA (the earlier of the step ETA and the budget's end)."""

    def __init__(self, name, total, start, budget_s, every_s=20):
        self.name, self.total, self.start_step = name, total, start
        self.t0, self.budget_s, self.every_s, self.last = time.time(), budget_s, every_s, 0.0
        self.c0 = time.process_time()

    def update(self, step, extra="", force=False):
        now = time.time()
        if not force and now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        el = now - self.t0
        done = step - self.start_step
        rate = done / el if el > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        eta = min(eta, max(0.0, self.budget_s - el))
        cpu = (time.process_time() - self.c0) / done if done else 0.0
        print(f"[{self.name}] {step}/{self.total} {rate:.2f} it/s ({cpu:.3f} cpu-s/it) elapsed {fmt_time(el)} eta "
              f"{fmt_time(eta) if math.isfinite(eta) else '?'} {extra}", flush=True)

    def out_of_time(self):
        return time.time() - self.t0 >= self.budget_s


def atomic_torch_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    q = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, q))))


class Stage:
    """A stage's folder: done.json when finished, checkpoint.pt while training."""

    def __init__(self, args, name):
        self.args, self.name = args, name
        self.dir = os.path.join(args.work, name)
        self.done_path = os.path.join(self.dir, "done.json")
        self.ckpt_path = os.path.join(self.dir, "checkpoint.pt")

    def done(self):
        return os.path.exists(self.done_path)

    def report(self):
        return read_json(self.done_path)

    def begin(self):
        """False when the stage is already done (and neither forced nor resumed after a time-budget
        stop with `--stage NAME --resume`); prepares the folder otherwise."""
        has_ck = os.path.exists(self.ckpt_path)
        if self.done():
            again = self.args.resume and self.args.stage == self.name and has_ck and self.report().get("truncated")
            if again:
                os.remove(self.done_path)
            elif not self.args.force:
                print(f"[{self.name}] already done ({self.done_path}); --force redoes it")
                return False
        if has_ck and not (self.args.resume or self.args.force):
            sys.exit(f"error: stage {self.name} has a checkpoint ({self.ckpt_path}): pass --resume to continue or --force to start over")
        if os.path.exists(self.dir) and (self.args.force or not (self.args.resume and has_ck)):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        return True

    def checkpoint(self):
        if self.args.resume and os.path.exists(self.ckpt_path):
            print(f"[{self.name}] resuming from {self.ckpt_path}")
            return torch.load(self.ckpt_path, weights_only=False)
        return None

    def finish(self, report):
        write_json(self.done_path, report)

    def budget_s(self, default_minutes):
        return 60 * (self.args.minutes if self.args.minutes is not None else default_minutes)


def require(args, *names):
    for n in names:
        if not Stage(args, n).done():
            sys.exit(f"error: stage {n} is not done (run --stage {n} first)")


def seed_for(args, name):
    return args.seed * 16 + STAGES.index(name) + 1


# ----------------------------------------------------------------------------------------------
# Stage: data
# ----------------------------------------------------------------------------------------------

def stage_data(args, cfg):
    st = Stage(args, "data")
    if not st.begin():
        return
    t0 = time.time()
    rng = np.random.default_rng(seed_for(args, "data"))
    combos = all_combos()
    train = [a for a in combos if not is_held_out(a)]
    held = [a for a in combos if is_held_out(a)]
    n = cfg["images"]
    order, jitter = training_draws(rng, n)
    images = np.empty((n, IMAGE, IMAGE, 3), np.uint8)
    prog = Progress("data", n, 0, float("inf"))
    for i, a in enumerate(order):
        images[i] = render(a, jitter[i])
        prog.update(i + 1)
    labels = np.array(order, np.int64)
    hj = draw_jitter(rng, len(held))
    held_images = np.stack([render(a, hj[i]) for i, a in enumerate(held)])
    np.savez_compressed(os.path.join(st.dir, "train.npz"), images=images, labels=labels, jitter=jitter)
    np.savez_compressed(os.path.join(st.dir, "heldout.npz"), images=held_images, labels=np.array(held, np.int64), jitter=hj)
    # The classifier's own images: every caption, held-out ones included (it is the measuring
    # instrument; trained without them it reads colour as a cue for shape on held-out pairs).
    crng = np.random.default_rng(seed_for(args, "classifier"))
    m = cfg["cls_images"]
    corder = []
    while len(corder) < m:
        corder += [combos[i] for i in crng.permutation(len(combos))]
    corder = corder[:m]
    cj = draw_jitter(crng, m)
    cimages = np.empty((m, IMAGE, IMAGE, 3), np.uint8)
    for i, a in enumerate(corder):
        cimages[i] = render(a, cj[i])
    np.savez_compressed(os.path.join(st.dir, "classifier.npz"), images=cimages, labels=np.array(corder, np.int64), jitter=cj)
    write_json(os.path.join(st.dir, "captions.json"), {
        "train": [caption(a) for a in train], "held_out": [caption(a) for a in held],
        "held_out_pairs": HELD_OUT_PAIRS})
    from PIL import Image
    grid = images[:64].reshape(8, 8, IMAGE, IMAGE, 3).transpose(0, 2, 1, 3, 4).reshape(8 * IMAGE, 8 * IMAGE, 3)
    Image.fromarray(grid).save(os.path.join(st.dir, "train-grid.png"))
    with open(os.path.join(st.dir, "train-grid.txt"), "w") as f:
        f.write("\n".join(caption(a) for a in order[:64]) + "\n")
    rep = {"images": n, "train_captions": len(train), "held_out_captions": len(held),
           "held_out_pairs": HELD_OUT_PAIRS, "seconds": round(time.time() - t0, 1)}
    st.finish(rep)
    print(f"[data] {n} training images ({len(train)} captions), {len(held)} held-out captions, {rep['seconds']} s")


def load_train(args):
    d = np.load(os.path.join(args.work, "data", "train.npz"))
    return d["images"], d["labels"]


def load_classifier_set(args):
    d = np.load(os.path.join(args.work, "data", "classifier.npz"))
    return d["images"], d["labels"]


def load_heldout(args):
    d = np.load(os.path.join(args.work, "data", "heldout.npz"))
    return d["images"], d["labels"]


# ----------------------------------------------------------------------------------------------
# Stage: vae
# ----------------------------------------------------------------------------------------------

def make_vae():
    from diffusers import AutoencoderKL
    return AutoencoderKL(**VAE_CONFIG)


@torch.no_grad()
def encode_all(vae, images, batch, name):
    """uint8 images -> (mean, std) of the posterior, float32 [N, 4, LATENT, LATENT] each. Runs under bf16
    autocast in channels-last layout (2.5x faster on CPUs with AMX; the report gives its error)."""
    means, stds = [], []
    prog = Progress(name, len(images), 0, float("inf"))
    vae = vae.to(memory_format=torch.channels_last)
    for i in range(0, len(images), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            d = vae.encode(to_tensor(images[i:i + batch]).contiguous(memory_format=torch.channels_last)).latent_dist
        means.append(d.mean.float().contiguous())
        stds.append(d.std.float().contiguous())
        prog.update(min(len(images), i + batch))
    vae.to(memory_format=torch.contiguous_format)
    return torch.cat(means), torch.cat(stds)


def foreground_weights(x, fg_weight):
    """x: [N, 3, H, W] in [-1, 1] -> weights [N, 1, H, W]: fg_weight on the shape's pixels (those
    more than 0.1 from the median colour of the image's border, i.e. the flat background), 1 elsewhere."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)  # [N, 3, 4W]
    bg = border.median(dim=2).values[:, :, None, None]
    mask = (x - bg).abs().amax(dim=1, keepdim=True) > 0.1
    return 1 + (fg_weight - 1) * mask.float()


def stage_vae(args, cfg):
    st = Stage(args, "vae")
    if not st.begin():
        return
    require(args, "data")
    images, _ = load_train(args)
    ck = st.checkpoint()
    torch.manual_seed(seed_for(args, "vae"))
    vae = make_vae()
    with torch.no_grad():  # log-variance starts at -8 (std 0.02): early latents are not pure noise
        vae.quant_conv.bias[VAE_CONFIG["latent_channels"]:] = -8.0
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["vae_lr"], weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed_for(args, "vae"))
    step, log, spent = 0, [], 0.0
    if ck is not None:
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        step, log, spent = ck["step"], ck["log"], ck["seconds"]
    total, bs, crop = cfg["vae_steps"], cfg["vae_batch"], cfg["vae_crop"]
    if cfg["vae_autocast"] not in ("bf16", "fp32"):
        sys.exit(f"error: --vae-autocast must be bf16 or fp32, not {cfg['vae_autocast']!r}")
    factor = 2 ** (len(VAE_CONFIG["block_out_channels"]) - 1)
    if not factor <= crop <= IMAGE or crop % factor:
        sys.exit(f"error: --vae-crop must be a multiple of {factor} within {factor}..{IMAGE}, not {crop}")
    warmup = max(1, min(50, total // 10))
    budget = st.budget_s(cfg["vae_minutes"])
    prog = Progress("vae", total, step, budget)
    t0, last_ck = time.time(), time.time()
    vae.train()
    run = None
    while step < total and not prog.out_of_time():
        idx = torch.randint(0, len(images), (bs,), generator=gen)
        off = torch.randint(0, IMAGE - crop + 1, (bs, 2), generator=gen)
        x = torch.stack([to_tensor(images[int(i):int(i) + 1])[0, :, int(o[0]):int(o[0]) + crop, int(o[1]):int(o[1]) + crop]
                         for i, o in zip(idx, off)])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg["vae_lr"], warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["vae_autocast"] == "bf16"):
            post = vae.encode(x).latent_dist
            z = post.sample(generator=gen)
            rec = vae.decode(z).sample.float()
        w = foreground_weights(x, cfg["vae_fg_weight"])
        l1 = ((rec - x).abs() * w).sum() / w.sum()
        l2 = ((rec - x).pow(2) * w).sum() / w.sum()
        mu, logvar = post.mean.float(), post.logvar.float()   # post.kl() in float32 (autocast makes them bf16)
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))).mean() / x[0].numel()
        loss = l1 + l2 + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        if step % 10 == 0 or step == total:
            log.append([step, round(l1.item(), 5), round(l2.item(), 5), round(kl.item(), 3)])
        prog.update(step, f"loss {run:.4f} (l1 {l1.item():.4f})")
        if time.time() - last_ck > 60 * args.checkpoint_minutes:
            atomic_torch_save({"model": vae.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                               "step": step, "log": log, "seconds": spent + time.time() - t0}, st.ckpt_path)
            last_ck = time.time()
    spent += time.time() - t0
    atomic_torch_save({"model": vae.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                       "step": step, "log": log, "seconds": spent}, st.ckpt_path)
    truncated = step < total
    if truncated:
        print(f"[vae] time budget reached at step {step} of {total}: finishing with these weights")
    vae.eval()
    t1 = time.time()
    # Scaling factor as SD computed it: 1 / std of posterior samples of training images.
    enc_gen = torch.Generator().manual_seed(seed_for(args, "vae") + 1)
    mean, std = encode_all(vae, images, 32, "vae-encode")
    sample = mean + std * torch.randn(mean.shape, generator=enc_gen)
    scaling = float(1.0 / sample.std())
    vae.register_to_config(scaling_factor=scaling)
    with torch.no_grad():
        x = to_tensor(images[:32])
        m32 = torch.cat([vae.encode(x[i:i + 16]).latent_dist.mean for i in range(0, 32, 16)])
        rec = torch.cat([vae.decode(m32[i:i + 16]).sample for i in range(0, 32, 16)])
        psnr = float(10 * torch.log10(4 / (rec.clamp(-1, 1) - x).pow(2).mean()))
        bf16_err = float((mean[:32] - m32).norm() / m32.norm())
    from PIL import Image
    pair = torch.cat([x[:8], rec[:8].clamp(-1, 1)], 0).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
    Image.fromarray(pair.reshape(2, 8, IMAGE, IMAGE, 3).transpose(0, 2, 1, 3, 4).reshape(2 * IMAGE, 8 * IMAGE, 3)).save(
        os.path.join(st.dir, "reconstructions.png"))
    vae.save_pretrained(os.path.join(st.dir, "final"))
    torch.save({"mean": mean, "std": std}, os.path.join(st.dir, "latents.pt"))
    rep = {"steps": step, "planned_steps": total, "truncated": truncated, "batch": bs, "crop": crop,
           "foreground_weight": cfg["vae_fg_weight"],
           "train_seconds": round(spent, 1), "encode_seconds": round(time.time() - t1, 1),
           "scaling_factor": scaling, "encode_bf16_rel_l2_vs_fp32": bf16_err, "latent_std_raw": float(sample.std()), "psnr_db_32_train_images": round(psnr, 2),
           "parameters": count(vae), "log_step_l1_l2_kl": log}
    st.finish(rep)
    print(f"[vae] done: {step} steps in {fmt_time(spent)}, scaling_factor {scaling:.5f}, reconstruction PSNR {psnr:.2f} dB, bf16 encoding rel. L2 {bf16_err:.1e}")


# ----------------------------------------------------------------------------------------------
# Stage: unet (also creates the frozen text encoder)
# ----------------------------------------------------------------------------------------------

def load_tokenizer():
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def text_encoder(args, cfg):
    """The frozen text encoder: created once at the seeded random init, its residual branches (each
    layer's attention output projection and second MLP matrix) scaled by `text_residual_scale`,
    then read back."""
    from transformers import CLIPTextConfig, CLIPTextModel
    folder = os.path.join(args.work, "text_encoder")
    init_path = os.path.join(folder, "init.json")
    scale = cfg["text_residual_scale"]
    if not os.path.exists(os.path.join(folder, "config.json")):
        torch.manual_seed(args.seed)
        m = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        with torch.no_grad():
            for layer in m.encoder.layers:
                for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
                    lin.weight.mul_(scale)
                    lin.bias.mul_(scale)
        tmp = folder + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        m.save_pretrained(tmp)
        write_json(os.path.join(tmp, "init.json"), {"seed": args.seed, "residual_scale": scale})
        os.replace(tmp, folder)
    made = read_json(init_path)["residual_scale"] if os.path.exists(init_path) else 1.0
    if made != scale:
        sys.exit(f"error: {folder} was made with --text-residual-scale {made}, not {scale}; use another --work")
    m = CLIPTextModel.from_pretrained(folder).eval()
    m.requires_grad_(False)
    return m


@torch.no_grad()
def encode_prompts(tok, te, prompts, batch=64):
    out = []
    for i in range(0, len(prompts), batch):
        ids = tok(prompts[i:i + batch], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids
        out.append(te(ids).last_hidden_state)
    return torch.cat(out)


def make_unet():
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(**UNET_CONFIG)


def stage_unet(args, cfg):
    from diffusers import DDPMScheduler
    st = Stage(args, "unet")
    if not st.begin():
        return
    require(args, "data", "vae")
    _, labels = load_train(args)
    lat = torch.load(os.path.join(args.work, "vae", "latents.pt"))
    scaling = Stage(args, "vae").report()["scaling_factor"]
    tok, te = load_tokenizer(), text_encoder(args, cfg)
    combos = all_combos()
    cap_index = {a: i for i, a in enumerate(combos)}
    emb = encode_prompts(tok, te, [caption(a) for a in combos] + [""])
    uncond = len(combos)
    sample_caps = torch.tensor([cap_index[tuple(int(v) for v in a)] for a in labels])
    sched = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    acp = sched.alphas_cumprod.float()
    snr = acp / (1 - acp)
    if cfg["unet_weighting"] == "min-snr-5":
        weight = torch.clamp(snr, max=5.0) / (snr + 1)   # Min-SNR-5 for v-prediction
    elif cfg["unet_weighting"] == "v":
        weight = torch.ones_like(snr)                      # plain v MSE, as SD2.1-768 was trained
    else:
        sys.exit(f"error: --unet-weighting must be v or min-snr-5, not {cfg['unet_weighting']!r}")
    ck = st.checkpoint()
    torch.manual_seed(seed_for(args, "unet"))
    unet = make_unet()
    ema = make_unet()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg["unet_lr"], weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed_for(args, "unet"))
    step, log, spent = 0, [], 0.0
    if ck is not None:
        unet.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        step, log, spent = ck["step"], ck["log"], ck["seconds"]
    total, bs = cfg["unet_steps"], cfg["unet_batch"]
    warmup = max(1, min(100, total // 10))
    budget = st.budget_s(cfg["unet_minutes"])
    prog = Progress("unet", total, step, budget)
    t0, last_ck = time.time(), time.time()
    unet.train()

    def save():
        atomic_torch_save({"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                           "generator": gen.get_state(), "step": step, "log": log,
                           "seconds": spent + time.time() - t0}, st.ckpt_path)

    run, acc = None, []
    while step < total and not prog.out_of_time():
        idx = torch.randint(0, len(labels), (bs,), generator=gen)
        z0 = (lat["mean"][idx] + lat["std"][idx] * torch.randn(lat["mean"][idx].shape, generator=gen)) * scaling
        t = torch.randint(0, 1000, (bs,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        drop = torch.rand(bs, generator=gen) < 0.1
        c = emb[torch.where(drop, torch.full_like(idx, uncond), sample_caps[idx])]
        zt = sched.add_noise(z0, noise, t)
        target = sched.get_velocity(z0, noise, t)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg["unet_lr"], warmup)
        pred = unet(zt, t, encoder_hidden_states=c).sample
        per = (pred - target).pow(2).mean(dim=(1, 2, 3))
        loss = (per * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(cfg["ema_max"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pu in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(pu, 1 - decay)
        acc.append(per.mean().item())
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        if step % 20 == 0 or step == total:
            log.append([step, round(float(np.mean(acc)), 5)])
            acc = []
        prog.update(step, f"loss {run:.4f}")
        if time.time() - last_ck > 60 * args.checkpoint_minutes:
            save()
            last_ck = time.time()
    save()
    spent += time.time() - t0
    truncated = step < total
    if truncated:
        print(f"[unet] time budget reached at step {step} of {total}: finishing with these weights")
    ema.save_pretrained(os.path.join(st.dir, "final"))
    rep = {"steps": step, "planned_steps": total, "truncated": truncated, "batch": bs, "lr": cfg["unet_lr"],
           "loss_weighting": cfg["unet_weighting"],
           "ema_max_decay": cfg["ema_max"], "train_seconds": round(spent, 1), "parameters": count(unet),
           "text_encoder_parameters": count(te), "log_step_v_mse": log}
    st.finish(rep)
    print(f"[unet] done: {step} steps in {fmt_time(spent)}")


# ----------------------------------------------------------------------------------------------
# Stage: classifier
# ----------------------------------------------------------------------------------------------

def augment(x, gen):
    """Blur (random sigma up to 1.2 px of the 128 canvas) and noise, so generated images are in range."""
    n = x.shape[0]
    sig = torch.rand(n, generator=gen) * (1.2 * IMAGE / CANVAS)
    r = torch.arange(-3, 4, dtype=torch.float32)
    out = []
    for i in range(n):
        if sig[i] < 0.2 * IMAGE / CANVAS:
            out.append(x[i])
            continue
        k = torch.exp(-r ** 2 / (2 * sig[i] ** 2))
        k = k / k.sum()
        y = F.conv2d(F.pad(x[i:i + 1], (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7).repeat(3, 1, 1, 1), groups=3)
        y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1).repeat(3, 1, 1, 1), groups=3)
        out.append(y[0])
    x = torch.stack(out)
    return x + torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.05)


@torch.no_grad()
def classify(model, images, batch=128):
    """images: float [N, 3, IMAGE, IMAGE] in [-1, 1] -> ({attribute: predicted index [N]}, features [N, F])."""
    preds = {a: [] for a in ATTRIBUTES}
    feats = []
    for i in range(0, len(images), batch):
        logits, f = model(classifier_input(images[i:i + batch]))
        for a in ATTRIBUTES:
            preds[a].append(logits[a].argmax(1))
        feats.append(f)
    return {a: torch.cat(v) for a, v in preds.items()}, torch.cat(feats)


def accuracy(preds, labels):
    """labels: int [N, 5] (shape, colour, size, position, background)."""
    acc = {a: float((preds[a] == torch.as_tensor(labels[:, ATTRIBUTES.index(a)])).float().mean()) for a in ATTRIBUTES}
    allright = torch.ones(len(labels), dtype=torch.bool)
    for a in ATTRIBUTES:
        allright &= preds[a] == torch.as_tensor(labels[:, ATTRIBUTES.index(a)])
    acc["mean_shape_colour_position_size"] = float(np.mean([acc[a] for a in ["shape", "colour", "position", "size"]]))
    acc["all_five"] = float(allright.float().mean())
    return acc


def stage_classifier(args, cfg):
    st = Stage(args, "classifier")
    if not st.begin():
        return
    require(args, "data")
    images, labels = load_classifier_set(args)
    himages, hlabels = load_heldout(args)
    timages, tlabels = load_train(args)
    timages, tlabels = timages[:500], tlabels[:500]
    ck = st.checkpoint()
    torch.manual_seed(seed_for(args, "classifier"))
    model = AttributeClassifier(CLASSIFIER_ARCH)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["cls_lr"], weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed_for(args, "classifier"))
    step, log, spent = 0, [], 0.0
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        step, log, spent = ck["step"], ck["log"], ck["seconds"]
    total, bs = cfg["cls_steps"], cfg["cls_batch"]
    budget = st.budget_s(cfg["cls_minutes"])
    prog = Progress("classifier", total, step, budget)
    t0, last_ck = time.time(), time.time()
    lab = torch.from_numpy(labels)
    model.train()

    def save():
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                           "step": step, "log": log, "seconds": spent + time.time() - t0}, st.ckpt_path)

    while step < total and not prog.out_of_time():
        idx = torch.randint(0, len(images), (bs,), generator=gen)
        x = augment(to_tensor(images[idx.numpy()]), gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg["cls_lr"], max(1, total // 20))
        logits, _ = model(classifier_input(x))
        loss = sum(F.cross_entropy(logits[a], lab[idx, ATTRIBUTES.index(a)]) for a in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0 or step == total:
            log.append([step, round(loss.item(), 5)])
        prog.update(step, f"loss {loss.item():.4f}")
        if time.time() - last_ck > 60 * args.checkpoint_minutes:
            save()
            last_ck = time.time()
    save()
    spent += time.time() - t0
    model.eval()
    preds, feats = classify(model, to_tensor(himages))
    acc_held = accuracy(preds, hlabels)
    acc_train = accuracy(classify(model, to_tensor(timages))[0], tlabels)
    from safetensors.torch import save_file
    out = os.path.join(st.dir, "final")
    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    write_json(os.path.join(out, "architecture.json"), CLASSIFIER_ARCH)
    mu, cov = feats.double().mean(0), torch.cov(feats.double().T)
    save_file({"mean": mu.float(), "cov": cov.float(), "count": torch.tensor([len(feats)])},
              os.path.join(out, "heldout-real-stats.safetensors"))
    rep = {"steps": step, "planned_steps": total, "truncated": step < total, "train_seconds": round(spent, 1),
           "parameters": count(model), "accuracy_heldout_real": acc_held, "accuracy_train_set_real_500": acc_train,
           "images": len(images), "log_step_loss": log}
    st.finish(rep)
    print(f"[classifier] done: {step} steps in {fmt_time(spent)}; held-out real images: "
          + ", ".join(f"{a} {acc_held[a]:.3f}" for a in ATTRIBUTES) + "; training-set images: "
          + ", ".join(f"{a} {acc_train[a]:.3f}" for a in ATTRIBUTES))


# ----------------------------------------------------------------------------------------------
# Stage: eval
# ----------------------------------------------------------------------------------------------

def make_pipeline(vae, te, tok, unet):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler.from_config(SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def frechet(f1, f2):
    """Frechet distance between Gaussians fitted to two feature sets (float64)."""
    m1, m2 = f1.double().mean(0), f2.double().mean(0)
    c1, c2 = torch.cov(f1.double().T), torch.cov(f2.double().T)
    ev = torch.linalg.eigvals(c1 @ c2)
    tr = ev.sqrt().real.sum()
    return float((m1 - m2).pow(2).sum() + c1.trace() + c2.trace() - 2 * tr)


def eval_captions(args, cfg):
    """(held-out attribute rows, training attribute rows) evaluated, in a seeded order."""
    rng = np.random.default_rng(seed_for(args, "eval"))
    combos = all_combos()
    held = [a for a in combos if is_held_out(a)]
    train = [a for a in combos if not is_held_out(a)]
    if cfg["eval_heldout"]:
        held = [held[i] for i in sorted(rng.permutation(len(held))[:cfg["eval_heldout"]])]
    train = [train[i] for i in sorted(rng.permutation(len(train))[:cfg["eval_train"]])]
    return held, train


def stage_eval(args, cfg):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    st = Stage(args, "eval")
    if not st.begin():
        return
    require(args, "data", "vae", "unet", "classifier")
    vae = AutoencoderKL.from_pretrained(os.path.join(args.work, "vae", "final")).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.work, "unet", "final")).eval()
    pipe = make_pipeline(vae, text_encoder(args, cfg), load_tokenizer(), unet)
    pipe.set_progress_bar_config(disable=True)
    clf, _ = build_classifier(os.path.join(args.work, "classifier", "final"))
    himages, hlabels = load_heldout(args)
    _, real_feats = classify(clf, to_tensor(himages))
    # The ceiling the VAE sets: the classifier on VAE reconstructions (latent mean) of the real
    # held-out images; generated images pass through the same decoder.
    with torch.no_grad():
        x = to_tensor(himages)
        recon = torch.cat([vae.decode(vae.encode(x[i:i + 32]).latent_dist.mean).sample for i in range(0, len(x), 32)]).clamp(-1, 1)
    rpreds, rfeats = classify(clf, recon)
    vae_ceiling = {"guidance": "-", "split": "held_out_real_vae_reconstruction", "images": len(recon),
                   "accuracy": accuracy(rpreds, np.array(hlabels, np.int64)),
                   "frechet_classifier_features_vs_real_heldout": round(frechet(rfeats, real_feats), 4)}
    print("[eval] VAE reconstructions of the real held-out images: "
          + ", ".join(f"{a} {vae_ceiling['accuracy'][a]:.3f}" for a in vae_ceiling["accuracy"]), flush=True)
    held, train = eval_captions(args, cfg)
    guidances = [float(g) for g in str(cfg["guidance"]).split(",")]
    jobs = [(g, split, rows) for g in guidances for split, rows in (("held_out", held), ("train", train))]
    n_total = sum(len(r) for _, _, r in jobs)
    prog = Progress("eval", n_total, 0, st.budget_s(cfg["eval_minutes"]), every_s=10)
    t0, done_n, results, grids = time.time(), 0, [vae_ceiling], {}
    for g, split, rows in jobs:
        imgs = []
        for i in range(0, len(rows), cfg["eval_batch"]):
            if prog.out_of_time():
                break
            chunk = rows[i:i + cfg["eval_batch"]]
            gens = [torch.Generator().manual_seed(args.seed + 1000 + j) for j in range(i, i + len(chunk))]
            with torch.no_grad():
                out = pipe([caption(a) for a in chunk], num_inference_steps=cfg["steps"], guidance_scale=g,
                           generator=gens, output_type="pt", height=IMAGE, width=IMAGE).images
            imgs.append(out.mul(2).sub(1).clamp(-1, 1))
            done_n += len(chunk)
            prog.update(done_n, f"guidance {g} {split}")
        if not imgs:
            continue
        x = torch.cat(imgs)
        lab = np.array(rows[:len(x)], np.int64)
        preds, feats = classify(clf, x)
        acc = accuracy(preds, lab)
        r = {"guidance": g, "split": split, "images": len(x), "accuracy": acc}
        if split == "held_out" and len(x) > 2:
            r["frechet_classifier_features_vs_real_heldout"] = round(frechet(feats, real_feats), 4)
        results.append(r)
        grids[(g, split)] = x[:32]
        print(f"[eval] guidance {g} {split} ({len(x)} images): " + ", ".join(f"{a} {acc[a]:.3f}" for a in acc), flush=True)
    from PIL import Image
    for (g, split), x in grids.items():
        u = x.add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
        cols = 8
        rows_n = math.ceil(len(u) / cols)
        pad = np.zeros((rows_n * cols - len(u), IMAGE, IMAGE, 3), np.uint8)
        u = np.concatenate([u, pad]).reshape(rows_n, cols, IMAGE, IMAGE, 3).transpose(0, 2, 1, 3, 4)
        Image.fromarray(u.reshape(rows_n * IMAGE, cols * IMAGE, 3)).save(os.path.join(st.dir, f"samples-{split}-g{g}.png"))
    rep = {"scheduler": "DDIM", "steps": cfg["steps"], "guidance": guidances, "seconds": round(time.time() - t0, 1),
           "results": results, "held_out_captions": [caption(a) for a in held], "train_captions": [caption(a) for a in train],
           "complete": done_n == n_total}
    st.finish(rep)


# ----------------------------------------------------------------------------------------------
# Stage: export
# ----------------------------------------------------------------------------------------------

def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def stage_export(args, cfg):
    from diffusers import AutoencoderKL, UNet2DConditionModel, StableDiffusionPipeline
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextModel
    require(args, "data", "vae", "unet", "classifier", "eval")
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.force:
        print(f"[export] {out} exists; --force replaces it")
        return
    tmp = os.path.join(os.path.dirname(out), "." + os.path.basename(out) + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    vae = AutoencoderKL.from_pretrained(os.path.join(args.work, "vae", "final")).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.work, "unet", "final")).eval()
    pipe = make_pipeline(vae, text_encoder(args, cfg), load_tokenizer(), unet).to(torch.float16)
    pipe.save_pretrained(tmp)
    # fp32 references for the reload check
    vae = AutoencoderKL.from_pretrained(os.path.join(args.work, "vae", "final")).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.work, "unet", "final")).eval()
    te = text_encoder(args, cfg)
    # Tokenizer: SD2.1's files as they are (transformers 5 would write its own set).
    shutil.rmtree(os.path.join(tmp, "tokenizer"))
    shutil.copytree(TOKENIZER_DIR, os.path.join(tmp, "tokenizer"))
    # Text encoder: SD pipelines' tensor names (text_model.*, as transformers 4 saved them).
    te_file = os.path.join(tmp, "text_encoder", "model.safetensors")
    sd = load_file(te_file)
    sd = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in sd.items()
          if not k.endswith("position_ids")}
    save_file(sd, te_file, metadata={"format": "pt"})
    # Check: the folder reloads (diffusers / transformers) to the trained weights.
    re_te = CLIPTextModel.from_pretrained(os.path.join(tmp, "text_encoder")).float().eval()
    ids = load_tokenizer()(["a small red triangle in the top left on a grey background"], padding="max_length",
                           max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = re_te(ids).last_hidden_state, te(ids).last_hidden_state
        te_err = float((a - b).norm() / b.norm())
        re_unet = UNet2DConditionModel.from_pretrained(os.path.join(tmp, "unet")).float().eval()
        g = torch.Generator().manual_seed(1)
        x, c = torch.randn(2, 4, LATENT, LATENT, generator=g), torch.randn(2, 77, 64, generator=g)
        u1, u0 = re_unet(x, torch.tensor([10, 900]), encoder_hidden_states=c).sample, unet(x, torch.tensor([10, 900]), encoder_hidden_states=c).sample
        unet_err = float((u1 - u0).norm() / u0.norm())
    assert te_err < 1e-2 and unet_err < 1e-2, (te_err, unet_err)
    # The configs as SD2.1's: no local paths; the scheduler config as SD2.1 ships it.
    for d in ("vae", "unet", "text_encoder"):
        path = os.path.join(tmp, d, "config.json")
        c = read_json(path)
        c.pop("_name_or_path", None)
        write_json(path, c)
    write_json(os.path.join(tmp, "scheduler", "scheduler_config.json"),
               {**SCHEDULER_CONFIG, "_diffusers_version": read_json(os.path.join(tmp, "model_index.json"))["_diffusers_version"]})
    StableDiffusionPipeline.from_pretrained(tmp)  # loads as a pipeline
    # Classifier, prompts, report.
    cdir = os.path.join(tmp, "classifier")
    os.makedirs(cdir)
    src = os.path.join(args.work, "classifier", "final")
    save_file({k: v.half().contiguous() for k, v in load_file(os.path.join(src, "model.safetensors")).items()},
              os.path.join(cdir, "model.safetensors"))
    for f in ("architecture.json", "heldout-real-stats.safetensors"):
        shutil.copy(os.path.join(src, f), os.path.join(cdir, f))
    combos = all_combos()
    held = [a for a in combos if is_held_out(a)]
    with open(os.path.join(tmp, "eval-prompts.txt"), "w") as f:
        f.write("".join(caption(a) + "\n" for a in held))
    with open(os.path.join(tmp, "eval-prompts.jsonl"), "w") as f:
        for a in held:
            f.write(json.dumps({"caption": caption(a), **{k: LABELS[k][a[i]] for i, k in enumerate(ATTRIBUTES)}}) + "\n")
    _, train = eval_captions(args, cfg)
    with open(os.path.join(tmp, "train-prompts.jsonl"), "w") as f:
        for a in train:
            f.write(json.dumps({"caption": caption(a), **{k: LABELS[k][a[i]] for i, k in enumerate(ATTRIBUTES)}}) + "\n")
    stages = {s: Stage(args, s).report() for s in ["data", "vae", "unet", "classifier", "eval"]}
    sizes = {d: folder_bytes(os.path.join(tmp, d)) for d in ["text_encoder", "vae", "unet", "classifier", "tokenizer"]}
    report = {
        "format": "alter-teacher-report", "version": 1, "seed": args.seed, "threads": args.threads,
        "settings": cfg, "versions": versions(),
        "data": {"grammar": "a SIZE COLOUR SHAPE POSITION on a BACKGROUND background", "labels": LABELS,
                 "held_out_pairs": HELD_OUT_PAIRS, "jitter": JITTER, **stages["data"]},
        "parameters": {"text_encoder": count(te), "vae": count(vae), "unet": count(unet),
                       "classifier": stages["classifier"]["parameters"]},
        "configs": {"text_encoder": TEXT_CONFIG, "vae": VAE_CONFIG, "unet": UNET_CONFIG, "scheduler": SCHEDULER_CONFIG},
        "stages": stages, "export_bytes": sizes, "export_check_rel_l2": {"text_encoder": te_err, "unet": unet_err},
    }
    write_json(os.path.join(tmp, "report.json"), report)
    lines = [f"| {r['split']} | {r['guidance']} | {r['images']} | "
             + " | ".join(f"{r['accuracy'][a]:.3f}" for a in ATTRIBUTES + ["mean_shape_colour_position_size", "all_five"]) + " |"
             for r in stages["eval"]["results"]]
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write(f"""# The example teacher

A small text-to-image pipeline with Stable Diffusion 2.1's structure, trained on a procedural data
set of captioned shapes by `scripts/train_teacher.py` (its docstring documents the data grammar,
the held-out captions, the models and every stage; `report.json` holds the settings, losses, times
and versions of this run). diffusers loads it as it is:

```python
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained("examples/teacher")
image = pipe("a small red triangle in the top left on a grey background", num_inference_steps=50).images[0]
```

- `text_encoder/` (frozen, seeded random init with residual branches scaled by {cfg["text_residual_scale"]:g}: {count(te):,} parameters), `vae/` ({count(vae):,}),
  `unet/` ({count(unet):,}, v-prediction), `scheduler/` (SD2.1's DDIM config), `tokenizer/` (SD2.1's),
  all weights fp16.
- `eval-prompts.txt` / `.jsonl`: the {len(held)} held-out captions (shape-colour pairs
  {', '.join(c + ' ' + s for s, c in HELD_OUT_PAIRS)} never appear in training), with their labels.
- `classifier/`: the attribute classifier (`build_classifier` in the script loads it) and the
  mean/covariance of its features on real held-out images (`heldout-real-stats.safetensors`).

Attribute accuracy of generated images (DDIM {stages['eval']['steps']} steps, one seed per caption):

| captions | guidance | images | {' | '.join(ATTRIBUTES)} | mean of shape, colour, position, size | all five |
|---|---|---|{'---|' * (len(ATTRIBUTES) + 2)}
""" + "\n".join(lines) + "\n")
    total_bytes = folder_bytes(tmp)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
    print(f"[export] {out}: {total_bytes / 1e6:.2f} MB ({', '.join(f'{k} {v / 1e6:.2f}' for k, v in sizes.items())}); "
          f"reload check rel. L2 text encoder {te_err:.1e}, unet {unet_err:.1e}; {time.time() - t0:.1f} s")


# ----------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Stages, data grammar and outputs: see the module docstring (head -80 of this file).")
    p.add_argument("--stage", default="all", choices=["all"] + STAGES)
    p.add_argument("--work", default=None, help="working folder (default /tmp/alter-teacher, or /tmp/alter-teacher-quick with --quick)")
    p.add_argument("--out", default=None, help="export folder (default examples/teacher; /tmp/alter-teacher-quick/export with --quick)")
    p.add_argument("--resume", action="store_true", help="continue a stage from its checkpoint")
    p.add_argument("--force", action="store_true", help="redo finished stages / replace the export folder")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    p.add_argument("--minutes", type=float, default=None, help="time budget of each stage run (default: per stage)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    for k, v in FULL.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=None, help=f"default {v} (quick: {QUICK[k]})")
    args = p.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    for k in FULL:
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    args.work = args.work or ("/tmp/alter-teacher-quick" if args.quick else "/tmp/alter-teacher")
    args.out = args.out or (os.path.join(args.work, "export") if args.quick else os.path.join(REPO, "examples", "teacher"))
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    settings_path = os.path.join(args.work, "settings.json")
    if os.path.exists(settings_path):
        old = read_json(settings_path)
        if old.get("seed") != args.seed or old.get("quick") != args.quick:
            sys.exit(f"error: {args.work} holds a run with other seed/--quick ({old}); use another --work")
    write_json(settings_path, {"seed": args.seed, "quick": args.quick, "settings": cfg})
    stages = STAGES if args.stage == "all" else [args.stage]
    fns = {"data": stage_data, "vae": stage_vae, "unet": stage_unet, "classifier": stage_classifier,
           "eval": stage_eval, "export": stage_export}
    t0 = time.time()
    for s in stages:
        ts = time.time()
        fns[s](args, cfg)
        print(f"[{s}] stage time {fmt_time(time.time() - ts)} (total {fmt_time(time.time() - t0)})", flush=True)


if __name__ == "__main__":
    main()
