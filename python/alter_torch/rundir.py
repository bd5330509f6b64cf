"""The run directory of `alter compress` (formats/run-directory.md, version 2), written from
Python: `config.json`, `metrics.jsonl`, `final/unet` (diffusers folder, F32) and
`final/decisions.json`. Every file is written to a temporary name, fsynced and renamed; `final/`
is built as `final.partial/` and renamed into place. Checkpoints are not written yet."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from .trainer import Config, Trainer

METRIC_KEYS = {"output_kd": "output_kd_loss", "feature_kd": "feature_kd_loss", "denoise": "denoise_loss",
               "kept_fraction": "kept_mac_fraction", "performance": "performance_loss", "ratio": "ratio_loss",
               "balance": "balance_loss"}


def _atomic_write(path: str, text: str):
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def config_json(c: Config) -> dict:
    return {"format": "alter.run", "format_version": 2, "model": c.model, "data": c.data,
            "settings": dataclasses.asdict(c.settings), "steps": c.steps, "hypernet_steps": c.hypernet_steps,
            "batch": c.batch, "seed": c.seed, "checkpoint_every": 0, "checkpoint_minutes": 10.0,
            "prediction_type": c.prediction_type, "ema": False, "variant": None, "config_path": None}


def segments(route: list[int], experts: int) -> list[int]:
    counts = [0] * experts
    for i, e in enumerate(route):
        if i == 0 or route[i - 1] != e:
            counts[e] += 1
    return counts


class RunDirectory:
    def __init__(self, path: str):
        self.path = path

    @classmethod
    def create(cls, path: str, config: Config) -> "RunDirectory":
        if os.path.exists(path) and os.listdir(path):
            raise FileExistsError(f"{path} exists and is not empty")
        os.makedirs(path, exist_ok=True)
        d = cls(path)
        _atomic_write(os.path.join(path, "config.json"), json.dumps(config_json(config), indent=2, sort_keys=True))
        open(os.path.join(path, "metrics.jsonl"), "w").close()
        return d

    def append(self, m: dict):
        line = {METRIC_KEYS.get(k, k): v for k, v in m.items() if v is not None}
        line.setdefault("seconds", 0.0)
        with open(os.path.join(self.path, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_final(self, trainer: Trainer):
        final = os.path.join(self.path, "final")
        partial = final + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        trainer.student.unet.save_pretrained(os.path.join(partial, "unet"), safe_serialization=True)
        d = trainer.final_decisions
        budget, st = trainer.budget, trainer.config.settings
        route = d.route.tolist()
        kept = d.kept.tolist()
        meta = trainer.draws.meta
        latents, context = trainer.data.latents, trainer.data.context
        p = trainer.frozen_projection or {}
        initial = budget.kept_fraction(trainer.initial_decisions)
        learned = p.get("learned_kept_mac_fraction", budget.kept_fraction(d))
        after = budget.kept_fraction(d)
        need = initial - st.keep
        progress = 1.0 if abs(need) <= 0.01 else (initial - learned) / need
        moved = p.get("hypernet_changed_unit_decision_count", 0)
        seg = segments(route, d.experts)
        decisions = {
            "decisions": {"units": trainer.units, "kept": kept, "route": route},
            "kept_mac_fraction": after,
            "expert_kept_mac_fractions": [budget.fixed_share + budget._unit_share(row) for row in kept],
            "expert_shares": d.expert_shares(),
            "latent_height": latents.shape[2], "latent_width": latents.shape[3], "context_length": context.shape[1],
            "dense_macs": int(meta["dense_macs"]),
            "budget_projection": {
                "target_kept_mac_fraction": st.keep, "tolerance": 0.01, "initial_kept_mac_fraction": initial,
                "learned_kept_mac_fraction": learned, "kept_mac_fraction": after,
                "changed_unit_decision_count": p.get("changed_unit_decision_count", 0),
                "hypernet_changed_unit_decision_count": moved, "unit_decision_count": len(kept) * len(trainer.units),
                "learned_distance": abs(learned - st.keep), "distance": abs(after - st.keep),
                "within_tolerance": abs(after - st.keep) <= 0.01, "hypernet_progress": progress,
                "hypernet_hardly_moved": progress < 0.5},
            "expert_routing_segment_counts": seg, "routing_segment_count": sum(seg),
        }
        _atomic_write(os.path.join(partial, "decisions.json"), json.dumps(decisions, indent=2, sort_keys=True))
        old = final + ".old"
        if os.path.exists(final):
            os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
