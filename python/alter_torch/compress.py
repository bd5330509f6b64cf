"""`python -m alter_torch.compress MODEL --data DATA -o RUN --replay FILE [options]`.

Runs ALTER as `alter compress` does (same options and defaults). This first slice runs only
with `--replay FILE`: the draws, the hypernetwork's initial values and the units' MAC shares come
from a file written by `alter compress --record-draws FILE` (formats/record-draws.md), and every
recorded per-step value is checked. MODEL is a diffusers UNet folder (`alter convert MODEL
--layout diffusers --dtype fp32 -o DIR`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

from .trainer import Config, RecordedDraws, Settings, Trainer, TrainingData
from .hypernet import DecisionMismatch
from .units import load_unet


# Scalars checked against the record: (metrics key, record name).
CHECKED = [("loss", "loss"), ("output_kd", "output_kd"), ("feature_kd", "feature_kd"), ("denoise", "denoise"),
           ("kept_fraction", "kept_fraction"), ("grad_norm_unet", "grad_norm_unet"), ("lr_unet", "lr_unet"),
           ("hypernet_loss", "hypernet_loss"), ("performance", "performance"), ("ratio", "ratio"), ("balance", "balance"),
           ("grad_norm_hypernet", "grad_norm_hypernet"), ("lr_hypernet", "lr_hypernet")]


def parser() -> argparse.ArgumentParser:
    s = Settings()
    p = argparse.ArgumentParser(prog="python -m alter_torch.compress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="diffusers UNet folder")
    p.add_argument("--data", required=True, help="training data (formats/training-data.md)")
    p.add_argument("-o", "--output", help="run directory to create (formats/run-directory.md): config.json, metrics.jsonl, final/")
    p.add_argument("--experts", type=int, default=s.experts)
    p.add_argument("--keep", type=float, default=s.keep)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--hypernet-steps", type=int, default=None, help="default: round(0.3 * steps)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lr-unet", type=float, default=s.lr_unet)
    p.add_argument("--lr-hypernet", type=float, default=s.lr_hypernet)
    p.add_argument("--warmup", type=int, default=None, help="default: min(250, steps // 10)")
    p.add_argument("--routing", choices=["learned", "intervals", "static"], default=s.routing)
    p.add_argument("--output-kd-weight", type=float, default=s.output_kd_weight)
    p.add_argument("--feature-kd-weight", type=float, default=s.feature_kd_weight)
    p.add_argument("--denoise-weight", type=float, default=s.denoise_weight)
    p.add_argument("--ratio-weight", type=float, default=s.ratio_weight)
    p.add_argument("--balance-weight", type=float, default=s.balance_weight)
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replay", required=True, help="draws recorded by `alter compress --record-draws` (required in this version)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the replay checks")
    p.add_argument("--tie-margin", type=float, default=0.0,
                   help="accept a hard decision that differs from alter's only at a near-tie within this relative margin, "
                        "and continue with alter's (reported); default 0: every decision must be identical")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def config_from(a) -> Config:
    st = Settings(experts=a.experts, keep=a.keep, routing=a.routing, lr_unet=a.lr_unet, lr_hypernet=a.lr_hypernet,
                  output_kd_weight=a.output_kd_weight, feature_kd_weight=a.feature_kd_weight,
                  denoise_weight=a.denoise_weight, ratio_weight=a.ratio_weight, balance_weight=a.balance_weight,
                  warmup_steps=a.warmup if a.warmup is not None else min(250, max(a.steps, 0) // 10))
    hs = a.hypernet_steps if a.hypernet_steps is not None else int(math.floor(max(a.steps, 0) * 0.3 + 0.5))
    return Config(model=os.path.abspath(a.model), data=os.path.abspath(a.data), steps=a.steps, hypernet_steps=hs,
                  settings=st, batch=a.batch, seed=a.seed, prediction_type=a.prediction_type)


# Absolute slack of the replay checks, for reference values of exactly 0.
ATOL = 1e-10


class ReplayMismatch(AssertionError):
    pass


def compare_step(draws: RecordedDraws, trainer: Trainer, m: dict, rtol: float, atol: float = ATOL) -> dict:
    """Relative errors of the step's values against the record (0 where the difference is within
    `atol`, for values that are 0 in alter's run, such as the first step's distillation losses of
    an unpruned student); raises on a mismatch."""
    p = RecordedDraws.prefix(m["step"])
    errors = {}
    for key, name in CHECKED:
        ref = draws.scalar(f"{p}.{name}")
        mine = m.get(key)
        if (ref is None) != (mine is None):
            raise ReplayMismatch(f"step {m['step']}: {name} recorded {ref}, computed {mine}")
        if ref is None:
            continue
        err = abs(mine - ref) / max(abs(ref), 1e-30)
        errors[name] = err if abs(mine - ref) > atol else 0.0
        if abs(mine - ref) > rtol * abs(ref) + atol:
            raise ReplayMismatch(f"step {m['step']}: {name} {mine!r} vs alter's {ref!r} (relative error {err:.3g} > {rtol})")
    if trainer.last_used_decisions != draws.decisions(p + ".decisions"):
        raise ReplayMismatch(f"step {m['step']}: the hard decisions of the UNet step differ")
    if trainer.last_hypernet_decisions is not None and trainer.last_hypernet_decisions != draws.decisions(p + ".hypernet.decisions"):
        raise ReplayMismatch(f"step {m['step']}: the hard decisions of the hypernetwork draw differ")
    return errors


def replay(config: Config, draws: RecordedDraws, rtol: float = 1e-4, output: str | None = None, log=None,
           tie_margin: float = 0.0) -> dict:
    """Runs `config` on the recorded draws, checking each recorded step. Returns a summary:
    steps checked, the largest relative error per value, whether the final decisions match."""
    if config.steps > draws.steps:
        raise ValueError(f"{draws.path} records {draws.steps} steps; --steps {config.steps} needs that many")
    student = load_unet(config.model)
    teacher = load_unet(config.model)
    data = TrainingData(config.data)
    trainer = Trainer(config, student, teacher, data, draws, tie_margin=tie_margin)
    if trainer.initial_decisions != draws.decisions("init.initial_decisions"):
        raise ReplayMismatch("the untrained hypernetwork's noise-free decisions differ")
    if output:
        from . import rundir
    run = rundir.RunDirectory.create(output, config) if output else None
    worst: dict = {}
    for _ in range(config.steps):
        m = trainer.train_step()
        errs = compare_step(draws, trainer, m, rtol)
        for k, v in errs.items():
            worst[k] = max(worst.get(k, 0.0), v)
        if run:
            run.append(m)
        if log:
            log(f"step {m['step']}: loss {m['loss']:.6g}, worst relative error so far {max(worst.values()):.2e}")
    final = trainer.final_decisions
    final_ok = draws.has("final.kept") and final == draws.decisions("final")
    if run:
        run.write_final(trainer)
    return dict(steps=config.steps, worst_relative_error=worst, final_decisions_match=final_ok,
                near_ties=[dict(step=s, draw=d, decisions=n) for s, d, n in trainer.ties])


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    config = config_from(a)
    draws = RecordedDraws(a.replay)
    try:
        summary = replay(config, draws, a.rtol, a.output, log=lambda s: print(s, file=sys.stderr), tie_margin=a.tie_margin)
    except (ReplayMismatch, DecisionMismatch) as e:
        print(f"replay failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    if not summary["final_decisions_match"]:
        print("replay failed: the final decisions differ from alter's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
