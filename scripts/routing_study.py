#!/usr/bin/env python3
"""Learned routing against fixed intervals, a static mask and fewer dense steps, on a trained teacher.

Usage (from the repository root; `alter` built, e.g. `swift build -c release`):

    ~/refenv/bin/python scripts/routing_study.py TEACHER --work /tmp/routing-study
    ~/refenv/bin/python scripts/routing_study.py TEACHER --work W --prompts-subset 27 --image-seeds 1,2 \\
        --train-seeds 1,2 --keep 0.65,0.5 --steps 300 --batch 8          # the defaults, spelled out
    ~/refenv/bin/python scripts/routing_study.py TEACHER --work W --steps 4 --prompts-subset 3 \\
        --image-seeds 1 --train-seeds 1 --keep 0.65 --train-images 32    # a smoke test (minutes)

TEACHER is an export of scripts/train_teacher.py: a diffusers pipeline folder with classifier/
(architecture.json, model.safetensors, heldout-real-stats.safetensors), eval-prompts.jsonl (the
held-out captions with their attribute labels) and train-prompts.jsonl.

## What it does

1. Training data for compression (`WORK/data/`): `--train-images` images of training captions (every
   caption of the data set's grammar except the held-out (shape, colour) pairs, cycled in a seeded
   order) rendered with train_teacher's renderer and jitter (seed `--data-seed`), written as PNGs with
   a captions.jsonl, then `alter encode-data TEACHER --images --captions --size IMAGE` (train_teacher.IMAGE) makes
   `data.safetensors` (VAE means, prompt contexts).
2. For each `--keep` x training budget (`--budgets STEPSxBATCH,...`, default `--steps`x`--batch`) x routing (`--routings`, default learned, intervals, static; also segments) x caption dropout
   (`--caption-dropout`, default 0; a variant named `...-dP-...` for P > 0) x smoothness weight
   (`--smoothness-weight`, learned routing only, default 0; `...-wW-...` for W > 0) x guidance
   distillation weight (`--guidance-kd-weight`, default 0, at scale `--guidance`; `...-gG-...`) x training seed
   (`--train-seeds`): `alter compress TEACHER/unet --data ... --keep K --routing R
   --prediction-type v_prediction --steps S --batch B --experts E --lr-unet --lr-hypernet --seed s
   --caption-dropout P --smoothness-weight W --guidance-kd-weight G --guidance-kd-scale GUIDANCE`,
   `alter export RUN --pipeline TEACHER`, and `alter eval BUNDLE --reference TEACHER` (PSNR and SSIM
   against the dense DDIM-50 reference, both drawn with the same prompts, image seeds and guidance;
   MACs and wall time per image) with the candidate's PNGs written and scored by the teacher's
   attribute classifier.
3. The dense teacher with fewer steps at about the same UNet MACs per image as each --keep: DDIM with
   round(K x 50) steps (as many UNet calls) and PNDM with round(K x 50) - 1 steps (PNDM makes steps + 1
   calls), scored the same way; and the dense DDIM-50 itself (the ceiling; its PSNR against the
   reference is infinite by construction, so it is drawn with `alter sample` and only classified).
4. Scoring (the teacher's classifier through train_teacher's `build_classifier`,
   `classifier_input`, label lists): attribute accuracy per attribute (shape, colour, size,
   position, background), their mean over shape, colour, position and size (as train_teacher's
   report), the share with all five right; and the Frechet distance between the classifier features
   of the drawn images and the real held-out images' (TEACHER/classifier/heldout-real-stats:
   mean and covariance of 243 real images, one per held-out caption). With few images the generated
   covariance is rank-deficient and the distance biased upwards: compare variants at the same
   --prompts-subset and --image-seeds only.

Prompts: the held-out captions (never in the compression data), `--prompts-subset N` of them chosen
stratified (a greedy balanced order: every held-out pair, size, position and background as evenly as
N allows; every pair x position cell once N >= 27), each drawn with every `--image-seeds` seed
(guidance `--guidance`, default 7.5 as the teacher's report).

## Output

`WORK/results.json` (key `format` "alter-routing-study", version 1):
- `settings`: the arguments, the teacher, the alter binary, the prompts used (caption, labels).
- `variants`: one object per variant, in run order. Keys: `name`, `kind` ("alter", "dense"),
  `keep` (null for the DDIM-50 ceiling), `routing` (learned/intervals/static, null for dense),
  `train_seed` (null for dense), `compress_steps`, `compress_batch`, `caption_dropout`, `smoothness_weight`, `guidance_kd_weight` (alter only: the training
  budget, `--budgets`, `--caption-dropout`, `--smoothness-weight`, `--guidance-kd-weight`), `scheduler`, `steps`, `unet_calls`, `images`, `mac_fraction` (UNet
  MACs per image / the dense DDIM-50's), `psnr` and `ssim` (alter eval's summaries: mean, std, min,
  max, count, infinite_count; null for the ceiling), `accuracy` (per attribute, `mean` (shape,
  colour, position, size), `all_five`), `accuracy_per_image_seed` ({seed: accuracy object}),
  `frechet` (classifier features vs real held-out), `seconds_per_image` (the candidate's encode +
  denoise + decode wall time per image as alter measured it; `reference_seconds_per_image` the
  reference's in the same eval), `kept_mac_fraction_trained` and `routing_segment_count` (the run's
  final/decisions.json figures; alter only), `seconds` (compress, export, eval, score: wall time of
  each job of this variant, the eval including the reference's drawing).
  The first variant, `real`, holds real images of the same captions (train_teacher's renderer,
  seeded jitter), as many as a variant draws: the accuracy and Frechet distance of perfect images
  at this sample size (measured on the first teacher export, 54 images: Frechet 8,816 for a biased
  54-image slice against 77 for all 243 held-out captions: the small-sample floor is large).
- `groups`: the variants grouped over training seeds (same kind, keep, routing or scheduler): `n`
  and, for each of accuracy mean, colour, shape, position, size, frechet, psnr, ssim, mac_fraction,
  seconds_per_image, the mean and population std over the group's variants.

The markdown table of `groups` goes to stdout. Each variant's outputs live in `WORK/variants/NAME/`
and its `result.json` marks it finished: a second run skips it (delete the folder to redo it, or use
another --work). Every alter job runs under `nice -n 10` so that other work keeps priority.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_teacher as tt  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)
import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_STEPS = 50
FORMAT = {"format": "alter-routing-study", "version": 1}


def log(msg):
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_list(s, kind):
    return [kind(v) for v in str(s).split(",") if v.strip()]


def run(cmd, out=None):
    """Runs an alter job under `nice -n 10`; returns (stdout, seconds). Raises with stderr on failure."""
    t0 = time.time()
    p = subprocess.run(["nice", "-n", "10"] + cmd, capture_output=True, text=True)
    dt = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    if out:
        with open(out, "w") as f:
            f.write(p.stdout)
    return p.stdout, dt


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------

def labels_of(row):
    """An eval-prompts.jsonl row -> attribute indices in tt.ATTRIBUTES order."""
    return [tt.LABELS[a].index(row[a]) for a in tt.ATTRIBUTES]


def stratified(rows, n, seed):
    """n rows chosen greedily so that every attribute value, and every (pair, position) and (pair,
    size) cell, is used as evenly as possible; ties broken by a seeded shuffle. Keeps file order."""
    if n <= 0 or n >= len(rows):
        return list(range(len(rows)))
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(rows)))
    counts = {}

    def keys(r):
        pair = (r["shape"], r["colour"])
        return [("pair", pair), ("size", r["size"]), ("position", r["position"]), ("background", r["background"]),
                ("pair-position", pair, r["position"]), ("pair-size", pair, r["size"])]

    chosen = []
    for _ in range(n):
        best = min((i for i in order if i not in chosen), key=lambda i: sum(counts.get(k, 0) for k in keys(rows[i])))
        chosen.append(best)
        for k in keys(rows[best]):
            counts[k] = counts.get(k, 0) + 1
    return sorted(chosen)


# ----------------------------------------------------------------------------------------------
# Training data
# ----------------------------------------------------------------------------------------------

def make_data(args, work):
    d = os.path.join(work, "data")
    out = os.path.join(d, "data.safetensors")
    if os.path.exists(out):
        log(f"data: {out} exists, kept")
        return out
    from PIL import Image
    t0 = time.time()
    img_dir = os.path.join(d, "images")
    os.makedirs(img_dir, exist_ok=True)
    order, jitter = tt.training_draws(np.random.default_rng(args.data_seed), args.train_images)
    with open(os.path.join(d, "captions.jsonl"), "w") as f:
        for i, a in enumerate(order):
            assert not tt.is_held_out(a)
            name = f"{i:05d}.png"
            Image.fromarray(tt.render(a, jitter[i])).save(os.path.join(img_dir, name))
            f.write(json.dumps({"file": name, "text": tt.caption(a)}) + "\n")
    rendered = time.time() - t0
    _, enc = run([args.alter, "encode-data", args.teacher, "--images", img_dir, "--captions", os.path.join(d, "captions.jsonl"),
                  "-o", out, "--size", str(tt.IMAGE), "--json"], out=os.path.join(d, "encode-data.json"))
    log(f"data: {len(order)} training-caption images rendered in {rendered:.1f} s, encoded in {enc:.1f} s -> {out}")
    return out


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------

class Scorer:
    def __init__(self, teacher):
        from safetensors.torch import load_file
        self.model, self.arch = tt.build_classifier(os.path.join(teacher, "classifier"))
        stats = load_file(os.path.join(teacher, "classifier", "heldout-real-stats.safetensors"))
        self.real_mean, self.real_cov = stats["mean"].double(), stats["cov"].double()

    def images(self, files):
        from PIL import Image
        x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in files])
        return tt.to_tensor(x)

    def score(self, files, labels, seeds):
        """files: PNGs; labels: [N, 5] attribute indices; seeds: the image seed of each file."""
        x = self.images(files)
        preds, feats = tt.classify(self.model, x)
        labels = np.asarray(labels, np.int64)
        out = {"accuracy": tt.accuracy(preds, labels), "frechet": self.frechet(feats)}
        out["accuracy"]["mean"] = out["accuracy"].pop("mean_shape_colour_position_size")
        per_seed = {}
        seeds = np.asarray(seeds)
        for s in sorted(set(seeds.tolist())):
            m = torch.from_numpy(seeds == s)
            acc = tt.accuracy({a: p[m] for a, p in preds.items()}, labels[m.numpy()])
            acc["mean"] = acc.pop("mean_shape_colour_position_size")
            per_seed[str(s)] = acc
        out["accuracy_per_image_seed"] = per_seed
        return out

    def frechet(self, feats):
        """Frechet distance of a Gaussian fitted to `feats` to the real held-out statistics (float64;
        the formula of train_teacher.frechet with the real side given as mean and covariance)."""
        f = feats.double()
        m = f.mean(0)
        c = torch.cov(f.T) if len(f) > 1 else torch.zeros_like(self.real_cov)
        tr = torch.linalg.eigvals(c @ self.real_cov).sqrt().real.sum()
        return float((m - self.real_mean).pow(2).sum() + c.trace() + self.real_cov.trace() - 2 * tr)


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------

def variants(args):
    v = [{"name": "dense-ddim50", "kind": "dense", "keep": None, "routing": None, "train_seed": None,
          "scheduler": "ddim", "steps": REFERENCE_STEPS}]
    for k in args.keep:
        calls = max(1, round(k * REFERENCE_STEPS))
        v.append({"name": f"dense-ddim{calls}-k{k:g}", "kind": "dense", "keep": k, "routing": None, "train_seed": None,
                  "scheduler": "ddim", "steps": calls})
        if calls >= 2:
            v.append({"name": f"dense-pndm{calls - 1}-k{k:g}", "kind": "dense", "keep": k, "routing": None, "train_seed": None,
                      "scheduler": "pndm", "steps": calls - 1})
        for steps, batch in args.budgets:
            for r in args.routings:
                for p in args.caption_dropout:
                    for w in (args.smoothness_weight if r == "learned" else [0.0]):
                        for gw in args.guidance_kd_weight:
                            for s in args.train_seeds:
                                extra = (f"-d{p:g}" if p > 0 else "") + (f"-w{w:g}" if w > 0 else "") + (f"-g{gw:g}" if gw > 0 else "")
                                v.append({"name": f"alter-k{k:g}-{r}-n{steps}b{batch}{extra}-s{s}", "kind": "alter", "keep": k,
                                          "routing": r, "train_seed": s, "compress_steps": steps, "compress_batch": batch,
                                          "caption_dropout": p, "smoothness_weight": w, "guidance_kd_weight": gw,
                                          "scheduler": "ddim", "steps": REFERENCE_STEPS})
    return v


def eval_cmd(args, candidate, prompts_file, images_dir, scheduler, steps):
    return [args.alter, "eval", candidate, "--reference", args.teacher, "--prompts", prompts_file,
            "--seed", ",".join(map(str, args.image_seeds)), "--scheduler", scheduler, "--steps", str(steps),
            "--guidance", str(args.guidance), "--batch", str(args.draw_batch), "--images", images_dir, "--force", "--json"]


def run_variant(args, v, data, prompts_file, prompts, scorer, dense_macs):
    d = os.path.join(args.work, "variants", v["name"])
    os.makedirs(d, exist_ok=True)
    seconds = {}
    res = dict(v)
    n_img = len(prompts) * len(args.image_seeds)
    files, labels, seeds = [], [], []
    for p, row in enumerate(prompts):
        for s in args.image_seeds:
            labels.append(labels_of(row))
            seeds.append(s)
    width = len(str(max(len(prompts) - 1, 0)))
    images_dir = os.path.join(d, "images")
    if v["name"] == "dense-ddim50":
        # The reference itself: drawn once with `sample` (against itself PSNR is infinite).
        out, seconds["eval"] = run([args.alter, "sample", args.teacher, "--prompts", prompts_file, "--seed",
                                    ",".join(map(str, args.image_seeds)), "--scheduler", "ddim", "--steps", str(REFERENCE_STEPS),
                                    "--guidance", str(args.guidance), "--batch", str(args.draw_batch),
                                    "-o", os.path.join(images_dir, "image.png"), "--force", "--json"],
                                   out=os.path.join(d, "sample.json"))
        rep = json.loads(out)
        files = [im["file"] for im in rep["images"]]
        res.update(unet_calls=REFERENCE_STEPS, images=len(files), mac_fraction=1.0, psnr=None, ssim=None,
                   seconds_per_image=float(np.mean([sum(im["seconds"].values()) for im in rep["images"]])))
        dense_macs[0] = float(np.mean([im["macs"] for im in rep["images"]]))
    else:
        candidate = args.teacher
        if v["kind"] == "alter":
            run_dir, bundle = os.path.join(d, "run"), os.path.join(d, "model.alter")
            if not os.path.exists(os.path.join(run_dir, "final", "decisions.json")):
                if os.path.exists(run_dir):
                    shutil.rmtree(run_dir)  # an unfinished run of an interrupted study
                _, seconds["compress"] = run([
                    args.alter, "compress", os.path.join(args.teacher, "unet"), "--data", data, "-o", run_dir,
                    "--keep", str(v["keep"]), "--routing", v["routing"], "--prediction-type", "v_prediction",
                    "--steps", str(v["compress_steps"]), "--batch", str(v["compress_batch"]), "--experts", str(args.experts),
                    "--lr-unet", str(args.lr_unet), "--lr-hypernet", str(args.lr_hypernet), "--seed", str(v["train_seed"]),
                    "--checkpoint-minutes", "0", "--caption-dropout", str(v.get("caption_dropout", 0)),
                    "--smoothness-weight", str(v.get("smoothness_weight", 0)),
                    "--guidance-kd-weight", str(v.get("guidance_kd_weight", 0)), "--guidance-kd-scale", str(args.guidance)]
                    + (["--hypernet-steps", str(args.hypernet_steps)] if args.hypernet_steps else []),
                    out=os.path.join(d, "compress.log"))
            with open(os.path.join(run_dir, "final", "decisions.json")) as f:
                decisions = json.load(f)
            res["kept_mac_fraction_trained"] = decisions["kept_mac_fraction"]
            res["routing_segment_count"] = decisions.get("routing_segment_count")
            _, seconds["export"] = run([args.alter, "export", run_dir, "-o", bundle, "--pipeline", args.teacher, "--force", "--json"],
                                       out=os.path.join(d, "export.json"))
            candidate = bundle
        out, seconds["eval"] = run(eval_cmd(args, candidate, prompts_file, images_dir, v["scheduler"], v["steps"]),
                                   out=os.path.join(d, "eval.json"))
        rep = json.loads(out)
        files = [p["candidate_file"] for p in rep["pairs"]]
        per_image = rep["candidate"]["per_image"]
        res.update(unet_calls=v["steps"] + (1 if v["scheduler"] == "pndm" else 0), images=len(files),
                   mac_fraction=rep["ratio"]["macs"], psnr=rep["psnr"], ssim=rep["ssim"],
                   seconds_per_image=per_image["total_seconds"], reference_seconds_per_image=rep["reference"]["per_image"]["total_seconds"])
    assert len(files) == n_img, (len(files), n_img)
    t0 = time.time()
    res.update(scorer.score(files, labels, seeds))
    seconds["score"] = time.time() - t0
    res["seconds"] = {k: round(x, 2) for k, x in seconds.items()}
    write_json(os.path.join(d, "result.json"), res)
    return res


def real_floor(args, prompts, scorer):
    """Real images of the same captions (train_teacher's renderer, seeded jitter), as many as a
    variant draws: the classifier's accuracy and the Frechet distance that perfect images would
    get with this many images (the distance's small-sample floor)."""
    from PIL import Image
    d = os.path.join(args.work, "variants", "real")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(args.data_seed + 1)
    files, labels, seeds = [], [], []
    for p, row in enumerate(prompts):
        for s in args.image_seeds:
            a = labels_of(row)  # ATTRIBUTES order, as render takes them
            f = os.path.join(d, f"real-p{p}-s{s}.png")
            Image.fromarray(tt.render(tuple(a), tt.draw_jitter(rng, 1)[0])).save(f)
            files.append(f)
            labels.append(a)
            seeds.append(s)
    res = {"name": "real", "kind": "real", "keep": None, "routing": None, "train_seed": None, "scheduler": None, "steps": None,
           "unet_calls": 0, "images": len(files), "mac_fraction": None, "psnr": None, "ssim": None, "seconds_per_image": None}
    res.update(scorer.score(files, labels, seeds))
    return res


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------

METRICS = [("accuracy", lambda r: r["accuracy"]["mean"]), ("shape", lambda r: r["accuracy"]["shape"]),
           ("colour", lambda r: r["accuracy"]["colour"]), ("position", lambda r: r["accuracy"]["position"]),
           ("size", lambda r: r["accuracy"]["size"]), ("frechet", lambda r: r["frechet"]),
           ("psnr", lambda r: r["psnr"]["mean"] if r["psnr"] else None), ("ssim", lambda r: r["ssim"]["mean"] if r["ssim"] else None),
           ("mac_fraction", lambda r: r["mac_fraction"]), ("seconds_per_image", lambda r: r["seconds_per_image"])]


def group_key(r):
    if r["kind"] == "real":
        return "real images (same captions)"
    if r["kind"] == "alter":
        drop = r.get("caption_dropout", 0)
        return (f"k{r['keep']:g} alter {r['routing']} {r.get('compress_steps', '?')}x{r.get('compress_batch', '?')}"
                + (f" drop {drop:g}" if drop else "") + (f" smooth {r['smoothness_weight']:g}" if r.get("smoothness_weight") else "")
                + (f" guided KD {r['guidance_kd_weight']:g}" if r.get("guidance_kd_weight") else ""))
    if r["keep"] is None:
        return "dense ddim 50 (ceiling)"
    return f"k{r['keep']:g} dense {r['scheduler']} {r['steps']}"


def groups(results):
    out = {}
    for r in results:
        out.setdefault(group_key(r), []).append(r)
    g = []
    for key, rs in out.items():
        row = {"group": key, "n": len(rs), "keep": rs[0]["keep"], "kind": rs[0]["kind"]}
        for name, f in METRICS:
            vals = [f(r) for r in rs if f(r) is not None]
            row[name] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))} if vals else None
        # Spread over image seeds too: every (training seed, image seed) accuracy.
        accs = [a["mean"] for r in rs for a in r["accuracy_per_image_seed"].values()]
        row["accuracy_over_image_seeds"] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "n": len(accs)}
        g.append(row)
    return g


def table(gs):
    def f(m, fmt):
        return "-" if m is None else (fmt % m["mean"]) + ("" if m["std"] == 0 else " ± " + (fmt % m["std"]))
    head = ["variant", "n", "accuracy", "shape", "colour", "position", "size", "Frechet", "PSNR dB", "SSIM", "MACs", "s/image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in gs:
        lines.append("| " + " | ".join([g["group"], str(g["n"]), f(g["accuracy"], "%.3f"), f(g["shape"], "%.3f"), f(g["colour"], "%.3f"),
                                        f(g["position"], "%.3f"), f(g["size"], "%.3f"), f(g["frechet"], "%.1f"), f(g["psnr"], "%.2f"),
                                        f(g["ssim"], "%.3f"), f(g["mac_fraction"], "%.3f"), f(g["seconds_per_image"], "%.2f")]) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher", help="export folder of scripts/train_teacher.py")
    ap.add_argument("--work", required=True, help="work folder (created; finished variants in it are skipped)")
    ap.add_argument("--alter", default=os.path.join(REPO, ".build", "release", "alter"), help="the alter binary")
    ap.add_argument("--keep", default="0.65,0.5", help="kept MAC fractions (comma list)")
    ap.add_argument("--routings", default="learned,intervals,static")
    ap.add_argument("--train-seeds", default="1,2", help="compression seeds (comma list)")
    ap.add_argument("--image-seeds", default="1,2", help="noise seeds of the drawn images (comma list)")
    ap.add_argument("--prompts-subset", type=int, default=27, help="held-out captions used, stratified (0: all 243)")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--train-images", type=int, default=512, help="rendered training-caption images for compression")
    ap.add_argument("--data-seed", type=int, default=12)
    ap.add_argument("--steps", type=int, default=300, help="alter compress --steps")
    ap.add_argument("--hypernet-steps", type=int, default=0, help="alter compress --hypernet-steps (0: its default, 30%%)")
    ap.add_argument("--batch", type=int, default=8, help="alter compress --batch")
    ap.add_argument("--budgets", default="", help="training budgets STEPSxBATCH (comma list, e.g. 300x4,1200x4,300x16); "
                                                   "default: --steps x --batch")
    ap.add_argument("--caption-dropout", default="0", help="alter compress --caption-dropout values (comma list; each a variant)")
    ap.add_argument("--smoothness-weight", default="0", help="alter compress --smoothness-weight values for learned routing (comma list; each a variant)")
    ap.add_argument("--guidance-kd-weight", default="0", help="alter compress --guidance-kd-weight values (comma list; each a variant; "
                                                             "its scale is --guidance)")
    ap.add_argument("--experts", type=int, default=10)
    ap.add_argument("--lr-unet", type=float, default=1e-4)
    ap.add_argument("--lr-hypernet", type=float, default=7e-4)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--draw-batch", type=int, default=8, help="images drawn together by alter eval/sample (--batch)")
    ap.add_argument("--only", default="", help="run only variants whose name contains one of these (comma list)")
    args = ap.parse_args()
    args.keep = parse_list(args.keep, float)
    args.routings = parse_list(args.routings, str)
    args.train_seeds = parse_list(args.train_seeds, int)
    args.image_seeds = parse_list(args.image_seeds, int)
    args.caption_dropout = parse_list(args.caption_dropout, float)
    args.smoothness_weight = parse_list(args.smoothness_weight, float)
    args.guidance_kd_weight = parse_list(args.guidance_kd_weight, float)
    if any(w < 0 for w in args.guidance_kd_weight):
        sys.exit(f"--guidance-kd-weight: weights >= 0, not {args.guidance_kd_weight}")
    if any(w < 0 for w in args.smoothness_weight):
        sys.exit(f"--smoothness-weight: weights >= 0, not {args.smoothness_weight}")
    if any(not 0 <= p <= 1 for p in args.caption_dropout):
        sys.exit(f"--caption-dropout: probabilities in [0, 1], not {args.caption_dropout}")
    try:
        args.budgets = [tuple(int(x) for x in b.lower().split("x")) for b in parse_list(args.budgets, str)] or [(args.steps, args.batch)]
    except ValueError:
        sys.exit(f"--budgets: expected STEPSxBATCH entries such as 300x4, not {args.budgets!r}")
    if any(len(b) != 2 or min(b) < 1 for b in args.budgets):
        sys.exit(f"--budgets: expected STEPSxBATCH entries with positive numbers, not {args.budgets!r}")
    args.teacher = os.path.abspath(args.teacher)
    args.work = os.path.abspath(args.work)
    if not os.path.exists(args.alter):
        sys.exit(f"{args.alter}: no alter binary (swift build -c release, or --alter PATH)")
    for r in args.routings:
        if r not in ("learned", "intervals", "static", "segments"):
            sys.exit(f"--routings: unknown routing {r}")
    torch.set_num_threads(1)
    os.makedirs(args.work, exist_ok=True)

    with open(os.path.join(args.teacher, "eval-prompts.jsonl")) as f:
        held = [json.loads(line) for line in f if line.strip()]
    prompts = [held[i] for i in stratified(held, args.prompts_subset, args.subset_seed)]
    prompts_file = os.path.join(args.work, "prompts.txt")
    with open(prompts_file, "w") as f:
        f.write("".join(r["caption"] + "\n" for r in prompts))
    log(f"{len(prompts)} held-out captions x {len(args.image_seeds)} image seeds = {len(prompts) * len(args.image_seeds)} images per variant")

    data = make_data(args, args.work)
    scorer = Scorer(args.teacher)
    vs = variants(args)
    if args.only:
        keys = parse_list(args.only, str)
        vs = [v for v in vs if v["name"] == "dense-ddim50" or any(k in v["name"] for k in keys)]
    results, dense_macs = [real_floor(args, prompts, scorer)], [None]
    t_all = time.time()
    for i, v in enumerate(vs):
        done = os.path.join(args.work, "variants", v["name"], "result.json")
        if os.path.exists(done):
            with open(done) as f:
                results.append(json.load(f))
            log(f"[{i + 1}/{len(vs)}] {v['name']}: finished before, skipped")
            continue
        t0 = time.time()
        log(f"[{i + 1}/{len(vs)}] {v['name']} ...")
        r = run_variant(args, v, data, prompts_file, prompts, scorer, dense_macs)
        results.append(r)
        psnr = r["psnr"]["mean"] if r["psnr"] and r["psnr"]["mean"] is not None else float("inf")
        log(f"[{i + 1}/{len(vs)}] {v['name']}: accuracy {r['accuracy']['mean']:.3f}, Frechet {r['frechet']:.1f}, PSNR {psnr:.2f} dB, "
            f"MACs {r['mac_fraction']:.3f}, {time.time() - t0:.0f} s ({', '.join(f'{k} {x:.0f} s' for k, x in r['seconds'].items())})")
    gs = groups(results)
    settings = {k: v for k, v in vars(args).items()}
    settings["prompts"] = prompts
    write_json(os.path.join(args.work, "results.json"), {**FORMAT, "settings": settings, "variants": results, "groups": gs})
    log(f"done in {time.time() - t_all:.0f} s: {os.path.join(args.work, 'results.json')}")
    print(table(gs))


if __name__ == "__main__":
    main()
