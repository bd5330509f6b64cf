"""`python -m alter_torch.compress MODEL --data DATA -o RUN [options]`, `--resume RUN`.

Runs ALTER as `alter compress` does (same options, defaults, losses, schedule and run directory;
docs/method.md, formats/run-directory.md). MODEL is a diffusers UNet folder (`alter convert
MODEL --layout diffusers --dtype fp32 -o DIR`) or an original single-file SD2.x checkpoint with
`--config` (its UNet, read with alter's key table). A standalone run draws its batches, timesteps,
noise and Gumbel samples from torch generators seeded by --seed and starts from the
hypernetwork `alter compress --seed` starts from. With `--replay FILE` the draws come from
`alter compress --record-draws FILE` (formats/record-draws.md) and every recorded value of every
step is checked against alter's.

Under `torchrun --nproc_per_node N` the run is data parallel: --batch is per process, a step
takes batch x N x --grad-accum samples (drawn identically on every rank; each rank reads its own
rows from the memory-mapped data file), gradients are averaged, and only rank 0 writes RUN.
SIGTERM or Ctrl-C stops after the step in progress with a checkpoint (exit 143 or 130).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time

import torch

from .data import TrainingData
from .distributed import Group
from .draws import RecordedDraws, TorchDraws
from .hypernet import DecisionMismatch
from .rundir import RunDirectory, RunDirectoryError
from .trainer import DTYPES, Config, Execution, NonFiniteStep, Settings, Trainer
from .units import load_unet, unit_list


# Scalars checked against the record: (metrics key, record name).
CHECKED = [("loss", "loss"), ("output_kd", "output_kd"), ("feature_kd", "feature_kd"), ("denoise", "denoise"), ("guidance_kd", "guidance_kd"),
           ("kept_fraction", "kept_fraction"), ("grad_norm_unet", "grad_norm_unet"), ("lr_unet", "lr_unet"),
           ("hypernet_loss", "hypernet_loss"), ("performance", "performance"), ("ratio", "ratio"), ("balance", "balance"), ("smoothness", "smoothness"),
           ("grad_norm_hypernet", "grad_norm_hypernet"), ("lr_hypernet", "lr_hypernet")]


def parser() -> argparse.ArgumentParser:
    s = Settings()
    p = argparse.ArgumentParser(prog="python -m alter_torch.compress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="diffusers UNet folder, or an original single-file SD2.x checkpoint with --config "
                   "(not needed with --resume)")
    p.add_argument("--config", dest="config_path", help="a diffusers UNet config.json: the configuration of an original checkpoint")
    p.add_argument("--data", help="training data (formats/training-data.md)")
    p.add_argument("-o", "--output", help="run directory to create (must not exist or be empty)")
    p.add_argument("--resume", help="continue the run in this directory from its last checkpoint (with --steps, extend it)")
    p.add_argument("--experts", type=int, default=s.experts, help="number of temporal experts (default: %(default)s)")
    p.add_argument("--keep", type=float, default=s.keep, help="target kept fraction of total UNet MACs (default: %(default)s)")
    p.add_argument("--steps", type=int, help="training steps (iterations)")
    p.add_argument("--hypernet-steps", type=int, default=None, help="steps with a hypernetwork update; default: round(0.3 * steps)")
    p.add_argument("--batch", type=int, default=1, help="samples per step and process (micro-batch; default: %(default)s)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step and process (default: %(default)s)")
    p.add_argument("--lr-unet", type=float, default=s.lr_unet, help="(default: %(default)s)")
    p.add_argument("--lr-hypernet", type=float, default=s.lr_hypernet, help="(default: %(default)s)")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps; default: min(250, steps // 10)")
    p.add_argument("--routing", choices=["learned", "intervals", "static", "segments"], default=s.routing)
    p.add_argument("--output-kd-weight", type=float, default=s.output_kd_weight, help="(default: %(default)s)")
    p.add_argument("--feature-kd-weight", type=float, default=s.feature_kd_weight, help="(default: %(default)s)")
    p.add_argument("--denoise-weight", type=float, default=s.denoise_weight, help="(default: %(default)s)")
    p.add_argument("--ratio-weight", type=float, default=s.ratio_weight, help="(default: %(default)s)")
    p.add_argument("--balance-weight", type=float, default=s.balance_weight, help="(default: %(default)s)")
    p.add_argument("--guidance-kd-weight", type=float, default=s.guidance_kd_weight,
                   help="loss weight of guidance distillation (each sample also runs with uncond; default: %(default)s)")
    p.add_argument("--guidance-kd-scale", type=float, default=s.guidance_kd_scale, help="its guidance scale (default: %(default)s)")
    p.add_argument("--smoothness-weight", type=float, default=s.smoothness_weight,
                   help="loss weight of the routing smoothness term, learned routing (default: %(default)s)")
    p.add_argument("--caption-dropout", type=float, default=s.caption_dropout,
                   help="probability that a sample's context is replaced by the data's uncond (default: %(default)s)")
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also write a checkpoint every this many steps (0: off)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0,
                   help="write a checkpoint when this many minutes have passed since the last one (0: off; default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available); under torchrun cuda:LOCAL_RANK")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast precision of the student (fp32 master weights; fp16 with loss scaling; default: fp32)")
    p.add_argument("--teacher-dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="dtype of the frozen teacher (default: fp32)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute the student's block activations in the backward")
    p.add_argument("--replay", help="draws recorded by `alter compress --record-draws`: replay and check them")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the replay checks")
    p.add_argument("--tie-margin", type=float, default=0.0,
                   help="(replay) accept a hard decision that differs from alter's only at a near-tie within this relative margin, "
                        "and continue with alter's (reported); default 0: every decision must be identical")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def config_from(a) -> Config:
    st = Settings(experts=a.experts, keep=a.keep, routing=a.routing, lr_unet=a.lr_unet, lr_hypernet=a.lr_hypernet,
                  output_kd_weight=a.output_kd_weight, feature_kd_weight=a.feature_kd_weight,
                  denoise_weight=a.denoise_weight, ratio_weight=a.ratio_weight, balance_weight=a.balance_weight,
                  caption_dropout=a.caption_dropout, smoothness_weight=a.smoothness_weight,
                  guidance_kd_weight=a.guidance_kd_weight, guidance_kd_scale=a.guidance_kd_scale, warmup_steps=a.warmup if a.warmup is not None else min(250, max(a.steps, 0) // 10))
    hs = a.hypernet_steps if a.hypernet_steps is not None else int(math.floor(max(a.steps, 0) * 0.3 + 0.5))
    return Config(model=os.path.abspath(a.model), data=os.path.abspath(a.data), steps=a.steps, hypernet_steps=hs,
                  settings=st, batch=a.batch, seed=a.seed, prediction_type=a.prediction_type,
                  checkpoint_every=a.checkpoint_every, checkpoint_minutes=a.checkpoint_minutes,
                  config_path=os.path.abspath(a.config_path) if a.config_path else None)


def execution_from(a) -> Execution:
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    return Execution(device=device, grad_accum=a.grad_accum, precision=a.precision, teacher_dtype=a.teacher_dtype,
                     grad_checkpointing=a.grad_checkpointing)


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
    student = load_unet(config.model, config_path=config.config_path)
    teacher = load_unet(config.model, config_path=config.config_path)
    data = TrainingData(config.data)
    trainer = Trainer(config, student, teacher, data, draws, tie_margin=tie_margin)
    if trainer.initial_decisions != draws.decisions("init.initial_decisions"):
        raise ReplayMismatch("the untrained hypernetwork's noise-free decisions differ")
    run = RunDirectory.create(output, config) if output else None
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


class StopRequest:
    """SIGTERM or SIGINT: stop after the step in progress (a second one quits at once)."""

    def __init__(self):
        self.signal = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, sig, frame):
        if self.signal:
            os._exit(128 + sig)
        self.signal = sig

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGINT)


def train(config: Config, execution: Execution, output: str | None, resume: bool, log=None, stop: StopRequest | None = None) -> int:
    """Trains `config` into the run directory `output` (created, or continued with `resume`).
    Returns 0 when finished, 128 + signal when stopped by one."""
    device = torch.device(execution.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group, so NCCL binds this rank's GPU
    group = Group(device)
    data = TrainingData(config.data)
    student = load_unet(config.model, config_path=config.config_path)
    teacher = load_unet(config.model, DTYPES[execution.teacher_dtype], config.config_path)
    experts = 1 if config.settings.routing == "static" else config.settings.experts
    draws = TorchDraws(config.seed, experts, len(unit_list(student.config)), config.settings.routing == "learned",
                       tuple(data.latents_shape[1:]), data.count)
    trainer = Trainer(config, student, teacher, data, draws, execution=execution, group=group)
    extra = {"world_size": group.world, "per_process_batch": config.batch, "grad_accum": execution.grad_accum,
             "precision": execution.precision, "teacher_dtype": execution.teacher_dtype}
    run = RunDirectory(output)
    writer = group.is_writer
    if resume:
        if writer:
            run.lock()
        if run.checkpoint_dir() is not None:
            run.restore_checkpoint(trainer)
        elif log and writer:
            log(f"{output} has no checkpoint: starting it again from step 0")
        if writer:
            run.truncate_metrics(trainer.step)
            run.write_config(_stored(config, group, execution), extra)
    elif writer:
        run = RunDirectory.create(output, _stored(config, group, execution), extra)
    group.barrier()
    if log and writer:
        log(f"compressing {config.model}: {trainer.hypernet.experts} experts, keep {config.settings.keep:.3f} of "
            f"{trainer.dense_macs:,} MACs per call, {config.steps} steps ({config.hypernet_steps} with the hypernetwork), "
            f"global batch {trainer.global_batch} ({group.world} x {config.batch} x {execution.grad_accum}) on {execution.device} -> {output}")
    last_checkpoint = time.monotonic()
    interval = config.checkpoint_minutes * 60
    try:
        while trainer.step < config.steps:
            started = time.monotonic()
            try:
                m = trainer.train_step()
            except NonFiniteStep as e:
                # As alter: a checkpoint of the last good step when the trainer still holds it.
                if e.state_is_last_good_step and trainer.step > 0:
                    if writer:
                        run.write_checkpoint(trainer)
                    raise NonFiniteStep(e.step, f"{e.what}; checkpoint of step {trainer.step} written "
                                                f"(--resume continues from it)", True) from None
                raise
            m["seconds"] = time.monotonic() - started
            if writer:
                run.append(m)
                if log:
                    log(f"step {m['step']}/{config.steps}: loss {m['loss']:.6g}, kept {m['kept_fraction']:.3f}, {m['seconds']:.2f} s")
            if trainer.step < config.steps:
                if group.any(stop is not None and stop.signal != 0):
                    if writer:
                        run.write_checkpoint(trainer)
                        if log:
                            log(f"stopped after step {trainer.step}; checkpoint written. Continue with: "
                                f"python -m alter_torch.compress --resume {output}")
                    group.barrier()
                    return stop.exit_code if stop else 130
                due = (config.checkpoint_every > 0 and trainer.step % config.checkpoint_every == 0) or \
                      (interval > 0 and time.monotonic() - last_checkpoint >= interval)
                if group.any(due):
                    if writer:
                        run.write_checkpoint(trainer)
                    last_checkpoint = time.monotonic()
        if writer:
            run.write_checkpoint(trainer)
            run.write_final(trainer)
        group.barrier()
        return 0
    finally:
        group.close()


def _stored(config: Config, group: Group, execution: Execution) -> Config:
    """config.json's `batch` is the samples per step (alter's meaning): the global batch."""
    import dataclasses
    return dataclasses.replace(config, batch=config.batch * group.world * execution.grad_accum)


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    if a.replay:
        if not (a.model and a.data and a.steps):
            print("--replay needs MODEL, --data and --steps", file=sys.stderr)
            return 2
        config = config_from(a)
        try:
            summary = replay(config, RecordedDraws(a.replay), a.rtol, a.output, log=log, tie_margin=a.tie_margin)
        except (ReplayMismatch, DecisionMismatch) as e:
            print(f"replay failed: {e}", file=sys.stderr)
            return 1
        print(json.dumps(summary, indent=2))
        if not summary["final_decisions_match"]:
            print("replay failed: the final decisions differ from alter's", file=sys.stderr)
            return 1
        return 0
    execution = execution_from(a)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    stop = StopRequest()
    try:
        if a.resume:
            config, extra = RunDirectory(a.resume).read_config()
            if a.steps is not None:
                if a.steps < config.steps:
                    print(f"--steps {a.steps} is fewer than the run's {config.steps}", file=sys.stderr)
                    return 2
                config.steps = a.steps
            per = world * execution.grad_accum
            if config.batch % per:
                print(f"the run's batch {config.batch} is not divisible by {world} processes x {execution.grad_accum} micro-batches",
                      file=sys.stderr)
                return 2
            config.batch //= per
            return train(config, execution, a.resume, True, log, stop)
        if not (a.model and a.data and a.output and a.steps is not None):
            print("a new run needs MODEL, --data, --steps and -o RUN (or --resume RUN)", file=sys.stderr)
            return 2
        if a.steps < 1 or a.batch < 1 or a.grad_accum < 1 or not (0 < a.keep <= 1) or a.experts < 1:
            print("--steps, --batch, --grad-accum and --experts must be positive and --keep in (0, 1]", file=sys.stderr)
            return 2
        return train(config_from(a), execution, a.output, False, log, stop)
    except (RunDirectoryError, FileExistsError, ValueError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
