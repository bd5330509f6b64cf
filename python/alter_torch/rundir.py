"""The run directory of `alter compress` (formats/run-directory.md, version 2), written from
Python: `config.json`, `metrics.jsonl`, `checkpoint/` and `final/` with alter's files and keys.
Every file is written to a temporary name, fsynced and renamed; `checkpoint/` and `final/` are
built as `*.partial/` and swapped in through `*.old/`, as alter does.

Besides alter's files a checkpoint written here holds `torch-state.safetensors` (the torch
generators' states) and `state.json` an `alter_torch` object (loss scale, masks-frozen
projection); alter ignores both (formats/run-directory.md, "Runs written by alter_torch")."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .hypernet import Decisions
from .seeded import SeededGenerator
from .trainer import Config, Settings, Trainer

METRIC_KEYS = {"output_kd": "output_kd_loss", "feature_kd": "feature_kd_loss", "denoise": "denoise_loss",
               "kept_fraction": "kept_mac_fraction", "performance": "performance_loss", "ratio": "ratio_loss",
               "balance": "balance_loss", "smoothness": "smoothness_loss",
               "guidance_kd": "guidance_kd_loss"}
TORCH_STATE = "torch-state.safetensors"


class RunDirectoryError(ValueError):
    pass


def _fsync_file(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str, text: str):
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save(tensors: dict[str, torch.Tensor], path: str):
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}, path)
    _fsync_file(path)


def _publish(partial: str, target: str):
    """Replaces `target` by the complete directory `partial` (a crash leaves one of the two whole)."""
    old = target + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(target):
        os.replace(target, old)
    os.replace(partial, target)
    shutil.rmtree(old, ignore_errors=True)


def config_json(c: Config, extra: dict | None = None) -> dict:
    d = {"format": "alter.run", "format_version": 2, "model": c.model, "data": c.data,
         "settings": dataclasses.asdict(c.settings), "steps": c.steps, "hypernet_steps": c.hypernet_steps,
         "batch": c.batch, "seed": c.seed, "checkpoint_every": c.checkpoint_every, "checkpoint_minutes": c.checkpoint_minutes,
         "prediction_type": c.prediction_type, "ema": False, "variant": None, "config_path": c.config_path}
    if extra:
        d["alter_torch"] = extra
    return d


def config_from_json(d: dict) -> tuple[Config, dict]:
    if d.get("format") != "alter.run" or d.get("format_version") != 2:
        raise RunDirectoryError("config.json is not an alter.run version 2 configuration")
    names = {f.name for f in dataclasses.fields(Settings)}
    st = Settings(**{k: v for k, v in d["settings"].items() if k in names})
    c = Config(model=d["model"], data=d["data"], steps=d["steps"], hypernet_steps=d["hypernet_steps"], settings=st,
               batch=d["batch"], seed=d["seed"], prediction_type=d.get("prediction_type", "epsilon"),
               checkpoint_every=d.get("checkpoint_every", 0), checkpoint_minutes=d.get("checkpoint_minutes", 10.0),
               config_path=d.get("config_path"))
    return c, d.get("alter_torch", {})


def segments(route: list[int], experts: int) -> list[int]:
    counts = [0] * experts
    for i, e in enumerate(route):
        if i == 0 or route[i - 1] != e:
            counts[e] += 1
    return counts


def projection_json(trainer: Trainer, d: Decisions) -> dict:
    """`budget_projection` of decisions.json / state.json for the decisions `d`."""
    budget, st = trainer.budget, trainer.config.settings
    p = trainer.frozen_projection or {}
    initial = budget.kept_fraction(trainer.initial_decisions)
    after = budget.kept_fraction(d)
    learned = p.get("learned_kept_mac_fraction", after)
    need = initial - st.keep
    progress = 1.0 if abs(need) <= 0.01 else (initial - learned) / need
    return {"target_kept_mac_fraction": st.keep, "tolerance": 0.01, "initial_kept_mac_fraction": initial,
            "learned_kept_mac_fraction": learned, "kept_mac_fraction": after,
            "changed_unit_decision_count": p.get("changed_unit_decision_count", 0),
            "hypernet_changed_unit_decision_count": p.get("hypernet_changed_unit_decision_count", 0),
            "unit_decision_count": d.experts * len(trainer.units),
            "learned_distance": abs(learned - st.keep), "distance": abs(after - st.keep),
            "within_tolerance": abs(after - st.keep) <= 0.01, "hypernet_progress": progress,
            "hypernet_hardly_moved": progress < 0.5}


def decisions_json(trainer: Trainer, d: Decisions) -> dict:
    return {"units": trainer.units, "kept": d.kept.tolist(), "route": d.route.tolist()}


class RunDirectory:
    def __init__(self, path: str):
        self.path = path
        self._lock = None

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.path, "metrics.jsonl")

    @classmethod
    def create(cls, path: str, config: Config, extra: dict | None = None) -> "RunDirectory":
        if os.path.exists(path) and os.listdir(path):
            raise FileExistsError(f"{path} exists and is not empty")
        os.makedirs(path, exist_ok=True)
        d = cls(path)
        d.lock()
        _atomic_write(os.path.join(path, "config.json"), json.dumps(config_json(config, extra), indent=2, sort_keys=True))
        open(d.metrics_path, "w").close()
        return d

    def lock(self):
        """The advisory lock alter holds while training a run (`RUN/.alter-lock`)."""
        f = open(os.path.join(self.path, ".alter-lock"), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RunDirectoryError(f"{self.path} is being trained by another process") from None
        self._lock = f

    def read_config(self) -> tuple[Config, dict]:
        try:
            with open(os.path.join(self.path, "config.json")) as f:
                return config_from_json(json.load(f))
        except (OSError, ValueError, KeyError) as e:
            raise RunDirectoryError(f"{self.path}/config.json: {e}") from None

    def write_config(self, config: Config, extra: dict | None = None):
        _atomic_write(os.path.join(self.path, "config.json"), json.dumps(config_json(config, extra), indent=2, sort_keys=True))

    def append(self, m: dict):
        line = {METRIC_KEYS.get(k, k): v for k, v in m.items() if v is not None}
        line.setdefault("seconds", 0.0)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, after: int):
        """Drops the lines of steps after `after` (and a torn last line)."""
        kept = []
        if os.path.exists(self.metrics_path):
            for line in open(self.metrics_path).read().splitlines():
                try:
                    if json.loads(line)["step"] <= after:
                        kept.append(line)
                except (ValueError, KeyError):
                    continue
        _atomic_write(self.metrics_path, "".join(l + "\n" for l in kept))

    # checkpoints

    def write_checkpoint(self, trainer: Trainer):
        target = os.path.join(self.path, "checkpoint")
        partial = target + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        unet = list(trainer.student.unet.named_parameters())
        _save(dict(unet), os.path.join(partial, "unet.safetensors"))
        o = trainer.unet_opt
        _save({**{"adamw.m." + n: m for (n, _), m in zip(unet, o.m)}, **{"adamw.v." + n: v for (n, _), v in zip(unet, o.v)}},
              os.path.join(partial, "unet-adamw.safetensors"))
        hyper = trainer.hypernet.ordered_parameters()
        h = trainer.hyper_opt
        _save({**dict(hyper), **{"adamw.m." + n: m for (n, _), m in zip(hyper, h.m)},
               **{"adamw.v." + n: v for (n, _), v in zip(hyper, h.v)}}, os.path.join(partial, "hypernet.safetensors"))
        if hasattr(trainer.draws, "state"):
            save_file(trainer.draws.state(), os.path.join(partial, TORCH_STATE))
            _fsync_file(os.path.join(partial, TORCH_STATE))
        seed, step = trainer.config.seed, trainer.step
        state = {"step": step,
                 # SplitMix64 states for alter, which resumes a run with its own generators.
                 "data_rng": {"state": SeededGenerator(seed, f"alter_torch data {step}").state},
                 "noise_rng": {"state": SeededGenerator(seed, f"alter_torch noise {step}").state},
                 "decisions": decisions_json(trainer, trainer.decisions),
                 "unet_optimizer_step": o.step, "hypernet_optimizer_step": h.step,
                 "alter_torch": {"loss_scale": trainer.scaler.scale, "loss_scale_good_steps": trainer.scaler.good_steps,
                                 "hypernet_loss_scale": trainer.hyper_scaler.scale,
                                 "hypernet_loss_scale_good_steps": trainer.hyper_scaler.good_steps,
                                 "frozen_projection": trainer.frozen_projection}}
        if trainer.masks_frozen:
            state["budget_projection"] = projection_json(trainer, trainer.decisions)
        _atomic_write(os.path.join(partial, "state.json"), json.dumps(state, indent=2, sort_keys=True))
        _publish(partial, target)

    def checkpoint_dir(self) -> str | None:
        for name in ("checkpoint", "checkpoint.old"):
            d = os.path.join(self.path, name)
            if os.path.exists(os.path.join(d, "state.json")):
                return d
        return None

    def restore_checkpoint(self, trainer: Trainer) -> int:
        d = self.checkpoint_dir()
        if d is None:
            raise RunDirectoryError(f"{self.path} has no checkpoint to resume from")
        with open(os.path.join(d, "state.json")) as f:
            state = json.load(f)
        if not os.path.exists(os.path.join(d, TORCH_STATE)):
            raise RunDirectoryError(f"{d} was written by alter (no {TORCH_STATE}); resume it with `alter compress --resume`")

        def load(file: str, expected: dict[str, torch.Tensor]):
            with safe_open(os.path.join(d, file), "pt") as f:
                names = set(f.keys())
                if names != set(expected):
                    extra, missing = sorted(names - set(expected)), sorted(set(expected) - names)
                    raise RunDirectoryError(f"{d}/{file}: unexpected tensors {extra[:5]}, missing {missing[:5]}")
                with torch.no_grad():
                    for n, t in expected.items():
                        v = f.get_tensor(n)
                        if tuple(v.shape) != tuple(t.shape):
                            raise RunDirectoryError(f"{d}/{file}: tensor '{n}' is {list(v.shape)}, expected {list(t.shape)}")
                        t.copy_(v)

        unet = list(trainer.student.unet.named_parameters())
        o, h = trainer.unet_opt, trainer.hyper_opt
        load("unet.safetensors", dict(unet))
        load("unet-adamw.safetensors", {**{"adamw.m." + n: m for (n, _), m in zip(unet, o.m)},
                                        **{"adamw.v." + n: v for (n, _), v in zip(unet, o.v)}})
        hyper = trainer.hypernet.ordered_parameters()
        load("hypernet.safetensors", {**dict(hyper), **{"adamw.m." + n: m for (n, _), m in zip(hyper, h.m)},
                                      **{"adamw.v." + n: v for (n, _), v in zip(hyper, h.v)}})
        with safe_open(os.path.join(d, TORCH_STATE), "pt") as f:
            trainer.draws.restore({n: f.get_tensor(n) for n in f.keys()})
        dec = state["decisions"]
        if dec["units"] != trainer.units:
            raise RunDirectoryError(f"{d}/state.json: the saved units do not match this model")
        trainer.step = int(state["step"])
        o.step, h.step = int(state["unet_optimizer_step"]), int(state["hypernet_optimizer_step"])
        trainer.decisions = Decisions(torch.tensor(dec["kept"], dtype=torch.bool), torch.tensor(dec["route"], dtype=torch.long))
        extra = state.get("alter_torch", {})
        trainer.scaler.scale = extra.get("loss_scale", trainer.scaler.scale)
        trainer.scaler.good_steps = extra.get("loss_scale_good_steps", 0)
        trainer.hyper_scaler.scale = extra.get("hypernet_loss_scale", trainer.hyper_scaler.scale)
        trainer.hyper_scaler.good_steps = extra.get("hypernet_loss_scale_good_steps", 0)
        trainer.frozen_projection = extra.get("frozen_projection")
        return trainer.step

    # the end

    def write_final(self, trainer: Trainer):
        final = os.path.join(self.path, "final")
        partial = final + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        trainer.student.unet.save_pretrained(os.path.join(partial, "unet"), safe_serialization=True)
        d = trainer.final_decisions
        budget = trainer.budget
        route = d.route.tolist()
        kept = d.kept.tolist()
        _, _, h, w = trainer.data.latents_shape
        seg = segments(route, d.experts)
        decisions = {
            "decisions": decisions_json(trainer, d),
            "kept_mac_fraction": budget.kept_fraction(d),
            "expert_kept_mac_fractions": [budget.fixed_share + budget._unit_share(row) for row in kept],
            "expert_shares": d.expert_shares(),
            "latent_height": h, "latent_width": w, "context_length": trainer.data.context_shape[1],
            "dense_macs": int(trainer.dense_macs),
            "budget_projection": projection_json(trainer, d),
            "expert_routing_segment_counts": seg, "routing_segment_count": sum(seg),
        }
        _atomic_write(os.path.join(partial, "decisions.json"), json.dumps(decisions, indent=2, sort_keys=True))
        _publish(partial, final)
