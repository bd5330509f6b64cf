"""alter's `SeededGenerator` (SplitMix64, `Sources/TensorCore/SeededGenerator.swift`) and the
hypernetwork initialisation built on it (`Hypernetwork.init`, `DefaultInitialisation`), in Python
integers and doubles, so that a standalone run starts from exactly the hypernetwork (and frozen
generator input Z) that `alter compress --seed S` starts from.

The per-step draws of a standalone run (batches, timesteps, noise, Gumbel samples) are not these:
they come from torch generators (`draws.TorchDraws`), fast enough for SD2.1 batches.
"""

from __future__ import annotations

import math

import numpy as np

MASK = (1 << 64) - 1
HYPERNET_SEED_MIX = 0x4859_5045_524E_4554


class SeededGenerator:
    def __init__(self, seed: int, stream: str | None = None):
        state = seed & MASK
        if stream is not None:
            h = 0xCBF2_9CE4_8422_2325
            for b in stream.encode("utf-8"):
                h = ((h ^ b) * 0x100_0000_01B3) & MASK
            state ^= h
        self.state = state

    def next(self) -> int:
        self.state = (self.state + 0x9E37_79B9_7F4A_7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & MASK
        return z ^ (z >> 31)

    def open_unit(self) -> float:
        return ((self.next() >> 11) + 0.5) * 2.0 ** -53

    def normal(self) -> float:
        u1, u2 = self.open_unit(), self.open_unit()
        return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def orthonormal_rows(rows: int, cols: int, rng: SeededGenerator) -> np.ndarray:
    """`Hypernetwork.orthonormalRows`: Gram-Schmidt (twice) on Gaussian rows, in double; float32 out."""
    assert rows <= cols
    basis: list[np.ndarray] = []
    while len(basis) < rows:
        v = np.array([rng.normal() for _ in range(cols)], dtype=np.float64)
        for _ in range(2):
            for b in basis:
                d = 0.0
                for x, y in zip(v.tolist(), b.tolist()):  # alter's left-to-right sum
                    d += x * y
                v = v - d * b
        norm = 0.0
        for x in v.tolist():
            norm += x * x
        norm = math.sqrt(norm)
        if norm > 1e-6:
            basis.append(v / norm)
    return np.stack(basis).astype(np.float32)


def default_parameter(seed: int, name: str, shape: tuple[int, ...], bias_fan_in: dict[str, int]) -> np.ndarray:
    """`DefaultInitialisation.tensor`: LayerNorm weight 1 / bias 0; Linear weight and bias uniform
    in +-1/sqrt(fan-in), drawn from the stream named after the tensor."""
    count = int(np.prod(shape)) if shape else 1
    if ".norm" in name:
        return np.full(shape, 1.0 if name.endswith(".weight") else 0.0, dtype=np.float32)
    fan_in = bias_fan_in.get(name, 1) if name.endswith(".bias") else int(np.prod(shape[1:]))
    bound = np.float32(1) / np.sqrt(np.float32(fan_in))
    rng = SeededGenerator(seed, stream=name)
    u = np.array([2 * rng.open_unit() - 1 for _ in range(count)], dtype=np.float64).astype(np.float32)
    return (u * bound).astype(np.float32).reshape(shape)


def hypernet_initialisation(seed: int, units: int, experts: int, width: int, emb_dim: int,
                            shapes: dict[str, tuple[int, ...]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(Z [experts * units, width], {parameter name: value}) as `Hypernetwork(config:settings:seed:)`
    makes them for `alter compress --seed seed` (the hypernetwork's seed is seed ^ 0x4859...)."""
    rng = SeededGenerator(seed ^ HYPERNET_SEED_MIX)
    z = orthonormal_rows(experts, units * width, rng).reshape(experts * units, width)
    param_seed = rng.next()
    fan = {"generator.linear1.bias": width, "router.linear1.bias": emb_dim}
    return z, {name: default_parameter(param_seed, name, shape, fan) for name, shape in shapes.items()}
