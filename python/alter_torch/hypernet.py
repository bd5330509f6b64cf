"""ALTER's hypernetwork (`Sources/ALTER/Hypernetwork*.swift`, `Router.swift`): an expert generator
that turns a frozen orthonormal input Z into per-(expert, unit) keep logits, and a temporal router
on the UNet's sinusoidal timestep embedding; Gumbel relaxations with straight-through hard decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class Hypernetwork(nn.Module):
    """Parameter names equal alter's (`generator.norm1.weight`, ..., `router.linear2.weight`)."""

    def __init__(self, units: list[str], experts: int, routing: str, width: int = 64, hidden: int = 256,
                 router_hidden: int = 64, time_embedding: torch.Tensor | None = None):
        super().__init__()
        self.units = units
        self.experts = experts
        self.routing = routing
        self.register_buffer("generator_input", torch.zeros(experts * len(units), width))
        self.generator = nn.ModuleDict(dict(
            norm1=nn.LayerNorm(width, eps=1e-5), linear1=nn.Linear(width, hidden),
            norm2=nn.LayerNorm(hidden, eps=1e-5), linear2=nn.Linear(hidden, 1, bias=False)))
        self.train_steps = 1000
        self.temperature = 0.4
        if routing == "segments":
            self.router = nn.ParameterDict(dict(widths=nn.Parameter(torch.zeros(experts))))
        elif routing == "learned":
            assert time_embedding is not None
            self.register_buffer("time_embedding", time_embedding)
            emb = time_embedding.shape[1]
            self.router = nn.ModuleDict(dict(
                linear1=nn.Linear(emb, router_hidden), norm=nn.LayerNorm(router_hidden, eps=1e-5),
                linear2=nn.Linear(router_hidden, experts, bias=False)))
        else:
            self.router = None

    def ordered_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """alter's order: generator, then router."""
        return list(self.named_parameters())

    def unit_logits(self) -> torch.Tensor:
        """[experts, units], before the offset b."""
        g = self.generator
        h = g["norm1"](self.generator_input)
        h = torch.relu(g["norm2"](g["linear1"](h)))
        return g["linear2"](h).reshape(self.experts, len(self.units))

    def router_logits(self) -> torch.Tensor:
        r = self.router
        return r["linear2"](torch.relu(r["norm"](r["linear1"](self.time_embedding))))

    def segments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment routing (`SegmentRouter`): soft memberships p [T, E] and the routes of the
        intervals (expert e for c_{e-1} <= t + 0.5 < c_e), in alter's float32 operations."""
        n, t = self.experts, self.train_steps
        f32 = torch.float32
        softness = torch.tensor(self.temperature, dtype=f32) * torch.tensor(float(t), dtype=f32) / torch.tensor(float(2 * n), dtype=f32)
        shares = torch.softmax(self.router["widths"].reshape(1, n), dim=1)
        upper_ones = torch.triu(torch.ones(n, n, dtype=f32))
        c = (shares @ upper_ones) * torch.tensor(float(t), dtype=f32)
        centres = ((torch.arange(t, dtype=f32) + 0.5) / softness)[:, None].expand(t, n)
        upper = torch.sigmoid(centres + (torch.ones(t, 1, dtype=f32) @ c) * (torch.tensor(-1.0, dtype=f32) / softness))
        shift = torch.diag(torch.ones(n - 1, dtype=f32), 1) if n > 1 else torch.zeros(1, 1, dtype=f32)
        first = torch.zeros(t, n, dtype=f32)
        first[:, 0] = 1
        keep_mask = torch.ones(t, n, dtype=f32)
        keep_mask[:, n - 1] = 0
        p = (upper @ shift + first) + (upper * keep_mask) * torch.tensor(-1.0, dtype=f32)
        inner = c.detach()[0, :n - 1]
        route = ((torch.arange(t, dtype=f32) + 0.5)[:, None] >= inner[None, :]).sum(dim=1)
        return p, route

    def hard_routes(self) -> torch.Tensor:
        if self.routing == "segments":
            with torch.no_grad():
                return self.segments()[1]
        if self.router is None:
            return torch.arange(self.train_steps) * self.experts // self.train_steps
        with torch.no_grad():
            return self.router_logits().argmax(dim=1)

    def keep_logits(self, offset: float) -> torch.Tensor:
        with torch.no_grad():
            return self.unit_logits() + torch.tensor(offset, dtype=torch.float32)

    def final_decisions(self, offset: float) -> "Decisions":
        kept = (self.keep_logits(offset) >= 0)
        return Decisions(kept.clone(), self.hard_routes().clone())

    def sample(self, temperature: float, offset: float, unit_gumbel: torch.Tensor,
               route_gumbel: torch.Tensor | None, reference: "Decisions | None" = None,
               tie_margin: float = 0.0) -> "Relaxed":
        """One relaxed draw with the given Gumbel noise ([E, L] and, learned routing, [T, E]).

        With `reference` (the hard decisions alter drew from the same noise) and `tie_margin` > 0,
        a hard decision that differs from the reference only where the draw was within
        `tie_margin` of a tie, relative to the largest magnitude of the values compared
        (|(logit + g + b) / tau| for a unit; the gap between the two largest (logit + g) / tau of
        a timestep for a route), takes the
        reference's value; the count of such decisions is `Relaxed.ties`. Any other difference
        raises `DecisionMismatch`."""
        inv_tau = 1 / torch.tensor(temperature, dtype=torch.float32)
        logits = self.unit_logits()
        z = ((logits + unit_gumbel) + torch.tensor(offset, dtype=torch.float32)) * inv_tau
        soft = torch.sigmoid(z)
        hard = (soft >= 0.5).float()
        ties = 0
        if reference is not None:
            differ = hard.bool() != reference.kept
            if differ.any():
                zd = z.detach()
                near = zd.abs() / zd.abs().max().clamp_min(1e-30) < tie_margin
                if not bool(near[differ].all()):
                    raise DecisionMismatch(f"unit decisions differ away from a tie: {differ.nonzero().tolist()}")
                ties += int(differ.sum())
                hard = reference.kept.float()
        masks = hard + (soft - soft.detach())
        router_logits = None
        if self.routing == "segments":
            p, route = self.segments()
            if reference is not None and not torch.equal(route, reference.route.long()):
                raise DecisionMismatch(f"segment routes differ at timesteps {(route != reference.route).nonzero().flatten().tolist()}")
            router_logits = p
            routes = nn.functional.one_hot(route, self.experts).float() + (p - p.detach())
        elif self.router is None:
            route = self.hard_routes()
            routes = nn.functional.one_hot(route, self.experts).float()
        else:
            router_logits = self.router_logits()
            zr = (router_logits + route_gumbel) * inv_tau
            probs = torch.softmax(zr, dim=1)
            route = probs.detach().argmax(dim=1)
            if reference is not None:
                differ = route != reference.route
                if differ.any():
                    gap = relative_gaps(zr.detach(), differ)
                    if not bool((gap < tie_margin).all()):
                        raise DecisionMismatch(f"routes differ away from a tie at timesteps {differ.nonzero().flatten().tolist()} "
                                               f"(relative gaps {gap.tolist()})")
                    ties += int(differ.sum())
                    route = reference.route.clone()
            onehot = nn.functional.one_hot(route, self.experts).float()
            routes = onehot + (probs - probs.detach())
        table = routes @ masks
        return Relaxed(table, masks, routes, router_logits, Decisions(hard.detach().bool(), route), ties)

    @staticmethod
    def smoothness_loss(router_logits: torch.Tensor) -> torch.Tensor:
        """L_smooth = 1/2 * sum_t sum_i (P[t+1, i] - P[t, i])^2, P = softmax(logits) (learned routing)."""
        p = torch.softmax(router_logits, dim=1)
        d = p[1:] - p[:-1]
        return (d * d).sum() * 0.5

    def balance_loss(self, router_logits: torch.Tensor, reference: torch.Tensor | None = None,
                     tie_margin: float = 0.0) -> tuple[torch.Tensor, int]:
        """L_balance = E * sum_i F_i * P_i (F from the noise-free argmax, no gradient), and the
        number of timesteps whose argmax took `reference`'s value at a near-tie (as in `sample`).
        Segment routing: `router_logits` are the memberships p (P_i = mean of p[:, i]) and F comes
        from the interval routes."""
        t = router_logits.shape[0]
        ties = 0
        if self.routing == "segments":
            probs, route = router_logits, self.segments()[1]
        else:
            probs = torch.softmax(router_logits, dim=1)
            route = router_logits.detach().argmax(dim=1)
        if self.routing != "segments" and reference is not None and tie_margin > 0:
            differ = route != reference
            if differ.any():
                gap = relative_gaps(router_logits.detach(), differ)
                if not bool((gap < tie_margin).all()):
                    raise DecisionMismatch(f"noise-free routes of the balance loss differ away from a tie at timesteps "
                                           f"{differ.nonzero().flatten().tolist()} (relative gaps {gap.tolist()})")
                ties = int(differ.sum())
                route = reference.clone()
        counts = torch.bincount(route, minlength=self.experts).float()
        f = counts / t
        return (probs.mean(dim=0) * f).sum() * self.experts, ties


def relative_gaps(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The gap between the two largest values of each selected row of `z` [T, E], relative to
    the largest magnitude in `z` (the scale of the values the argmax compares)."""
    top2 = z[rows].topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / z.abs().max().clamp_min(1e-30)


@dataclass
class Decisions:
    """kept: bool [E, L]; route: int64 [T]."""
    kept: torch.Tensor
    route: torch.Tensor

    def __eq__(self, other):
        return torch.equal(self.kept.bool(), other.kept.bool()) and torch.equal(self.route.long(), other.route.long())

    @property
    def experts(self) -> int:
        return self.kept.shape[0]

    def expert_shares(self) -> list[float]:
        counts = torch.bincount(self.route, minlength=self.experts).tolist()
        return [c / len(self.route) for c in counts]


@dataclass
class Relaxed:
    table: torch.Tensor  # [T, L]
    masks: torch.Tensor  # [E, L]
    routes: torch.Tensor  # [T, E]
    router_logits: torch.Tensor | None
    hard: Decisions
    ties: int = 0


class DecisionMismatch(AssertionError):
    """A hard decision differs from alter's away from a near-tie."""
