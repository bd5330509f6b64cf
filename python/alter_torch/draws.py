"""Where a run's random draws come from: `TorchDraws` (a standalone run: torch generators seeded
by `--seed`) or `RecordedDraws` (a replay of `alter compress --record-draws`,
formats/record-draws.md). Both give, per step, the global batch's sample indices, timesteps, noise
and, with caption dropout, which samples' captions are dropped (drawn in that order from the data
stream) and the Gumbel noise of each relaxed draw of
the hypernetwork (from the noise stream)."""

from __future__ import annotations

import torch
from safetensors import safe_open

from .hypernet import Decisions

TRAIN_TIMESTEPS = 1000


def step_prefix(step: int) -> str:
    return f"step.{step:06d}"


class TorchDraws:
    """Two CPU torch generators, data and noise, seeded from `seed` (as alter splits its root
    generator into a data stream and a noise stream). Every rank of a distributed run holds the
    same generators and draws the whole global batch, then takes its rows: the draws do not
    depend on the number of processes. Drawn on the CPU, so a GPU run draws what a CPU run does."""

    def __init__(self, seed: int, experts: int, units: int, learned: bool, sample_shape: tuple[int, int, int],
                 samples: int):
        self.data = torch.Generator().manual_seed(seed)
        self.noise = torch.Generator().manual_seed(seed ^ 0x5DEECE66D)
        self.experts, self.units, self.learned = experts, units, learned
        self.sample_shape, self.samples = sample_shape, samples
        self.caption_dropout = 0.0  # set by the trainer from its settings

    def batch(self, step: int, size: int):
        """(indices [size], timesteps [size], noise [size, C, H, W], dropped [size] bool or None
        without caption dropout) of the global batch of `step`."""
        indices = torch.randint(self.samples, (size,), generator=self.data)
        timesteps = torch.randint(TRAIN_TIMESTEPS, (size,), generator=self.data)
        noise = torch.randn((size, *self.sample_shape), generator=self.data)
        dropped = None
        if self.caption_dropout > 0:
            dropped = torch.rand(size, generator=self.data, dtype=torch.float64) < self.caption_dropout
        return indices, timesteps, noise, dropped

    def _gumbel(self, *shape) -> torch.Tensor:
        u = torch.rand(shape, generator=self.noise, dtype=torch.float64) + 2.0 ** -54  # in (0, 1)
        return (-torch.log(-torch.log(u))).float()

    def gumbels(self, prefix: str):
        unit = self._gumbel(self.experts, self.units)
        route = self._gumbel(TRAIN_TIMESTEPS, self.experts) if self.learned else None
        return unit, route

    def reference(self, name: str):
        return None

    def state(self) -> dict[str, torch.Tensor]:
        return {"data_rng": self.data.get_state(), "noise_rng": self.noise.get_state()}

    def restore(self, s: dict[str, torch.Tensor]):
        self.data.set_state(s["data_rng"])
        self.noise.set_state(s["noise_rng"])


class RecordedDraws:
    """The draws (and reference values) of a `--record-draws` file."""

    def __init__(self, path: str):
        self.path = path
        self.f = safe_open(path, "pt")
        meta = self.f.metadata() or {}
        if meta.get("format") != "alter.record-draws" or meta.get("format_version") != "1":
            raise ValueError(f"{path}: not an alter.record-draws version 1 file")
        self.meta = meta
        self.steps = int(meta["recorded_steps"])
        self.names = set(self.f.keys())
        self.tie_margin = 0.0

    def has(self, name: str) -> bool:
        return name in self.names

    def get(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(f"{self.path}: no tensor {name}")
        return self.f.get_tensor(name)

    def scalar(self, name: str) -> float | None:
        return float(self.get(name)) if self.has(name) else None

    def decisions(self, prefix: str) -> Decisions:
        return Decisions(self.get(prefix + ".kept").bool(), self.get(prefix + ".route").long())

    @staticmethod
    def prefix(step: int) -> str:
        return step_prefix(step)

    def batch(self, step: int, size: int):
        p = step_prefix(step)
        indices = self.get(p + ".indices").long()
        if len(indices) != size:
            raise ValueError(f"{self.path}: step {step} recorded a batch of {len(indices)}, this run's global batch is {size}")
        dropped = self.get(p + ".dropped").bool() if self.has(p + ".dropped") else None
        return indices, self.get(p + ".timesteps").long(), self.get(p + ".noise").float(), dropped

    def gumbels(self, prefix: str):
        route = prefix + ".route_gumbel"
        return self.get(prefix + ".unit_gumbel"), (self.get(route) if self.has(route) else None)

    def reference(self, name: str):
        """alter's hard decisions (or balance route) of a draw, used only with a tie margin."""
        if self.tie_margin <= 0 or not (self.has(name + ".kept") or self.has(name)):
            return None
        return self.get(name).long() if self.has(name) else self.decisions(name)

    def initialisation(self, names: list[str]):
        z = self.get("init.generator_input")
        params = {n: self.get("init.hypernet." + n) for n in names}
        return z, params, self.get("init.unit_share").tolist(), float(self.get("init.fixed_share")), int(self.meta["dense_macs"])
