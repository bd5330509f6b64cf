"""Kept-MAC fractions and the projection onto the budget (`Sources/Experts/UnitBudget*.swift`),
in Python floats (doubles) and the same summation order as alter."""

from __future__ import annotations

from .hypernet import Decisions

TOLERANCE = 0.01


class UnitBudget:
    def __init__(self, share: list[float], fixed_share: float):
        self.share = list(share)
        self.fixed_share = fixed_share

    def _unit_share(self, kept_row) -> float:
        total = 0.0
        for k, s in zip(kept_row, self.share):
            total += s if k else 0.0
        return total

    def kept_fraction(self, d: Decisions) -> float:
        kept = d.kept.tolist()
        per_expert = [self._unit_share(row) for row in kept]
        total = 0.0
        for e in d.route.tolist():
            total += per_expert[e]
        return self.fixed_share + total / max(len(d.route), 1)

    def project(self, d: Decisions, logits: list[list[float]], keep: float, tolerance: float = TOLERANCE):
        """(projected decisions, kept fraction before, after, flags changed): `UnitBudget.project`."""
        import torch

        before = self.kept_fraction(d)
        if abs(before - keep) <= tolerance:
            return d, before, before, 0
        weight = d.expert_shares()
        kept0 = d.kept.tolist()
        pairs = []
        for e in range(len(kept0)):
            if weight[e] > 0:
                for l in range(len(self.share)):
                    pairs.append((e, l, logits[e][l], weight[e] * self.share[l]))
        pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
        upper = keep + tolerance * (1 - 1e-9)
        lower = keep - tolerance * (1 - 1e-9)
        kept = [row[:] for row in kept0]
        for e, l, _, _ in pairs:
            kept[e][l] = False
        in_set = [False] * len(pairs)
        fraction = self.fixed_share
        for i, p in enumerate(pairs):
            if fraction + p[3] <= keep:
                in_set[i] = True
                fraction += p[3]
        if fraction < lower:
            for i, p in enumerate(pairs):
                if not in_set[i] and fraction + p[3] <= upper:
                    in_set[i] = True
                    fraction += p[3]
        if fraction < lower or fraction > upper:
            found = closest_subset([p[3] for p in pairs], keep - self.fixed_share, tolerance)
            if found is not None and abs(self.fixed_share + found[1] - keep) < abs(fraction - keep):
                in_set = found[0]
        for i, p in enumerate(pairs):
            if in_set[i]:
                kept[p[0]][p[1]] = True
        projected = Decisions(torch.tensor(kept, dtype=torch.bool), d.route.clone())
        after = self.kept_fraction(projected)
        if not abs(after - keep) < abs(before - keep):
            return d, before, before, 0
        changed = sum(a != b for ra, rb in zip(kept, kept0) for a, b in zip(ra, rb))
        return projected, before, after, changed


def closest_subset(masses: list[float], target: float, tolerance: float):
    """`UnitBudget.closestSubset`: a 0/1 knapsack over binned masses, earliest mass first."""
    if not masses:
        return None
    total = 0.0
    for m in masses:
        total += m
    width = max(tolerance / len(masses), total / float(1 << 22))
    bins = [int(_round_half_away(m / width)) for m in masses]
    capacity = sum(bins)
    via = [-1] * (capacity + 1)
    reach = [False] * (capacity + 1)
    reach[0] = True
    top = 0
    for k, w in enumerate(bins):
        if w <= 0:
            continue
        for b in range(top, -1, -1):
            if reach[b] and not reach[b + w]:
                reach[b + w] = True
                via[b + w] = k
        top += w
    goal = target / width
    best = 0
    for b in range(capacity + 1):
        if reach[b] and abs(b - goal) < abs(best - goal):
            best = b
    chosen = [False] * len(masses)
    b = best
    while b > 0:
        k = via[b]
        chosen[k] = True
        b -= bins[k]
    s = 0.0
    for c, m in zip(chosen, masses):
        s += m if c else 0.0
    return chosen, s


def _round_half_away(x: float) -> float:
    import math
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)
