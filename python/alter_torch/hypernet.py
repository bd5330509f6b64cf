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
        if routing == "learned":
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

    def hard_routes(self) -> torch.Tensor:
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
               route_gumbel: torch.Tensor | None) -> "Relaxed":
        """One relaxed draw with the given Gumbel noise ([E, L] and, learned routing, [T, E])."""
        inv_tau = 1 / torch.tensor(temperature, dtype=torch.float32)
        logits = self.unit_logits()
        soft = torch.sigmoid(((logits + unit_gumbel) + torch.tensor(offset, dtype=torch.float32)) * inv_tau)
        hard = (soft >= 0.5).float()
        masks = hard + (soft - soft.detach())
        router_logits = None
        if self.router is None:
            route = self.hard_routes()
            routes = nn.functional.one_hot(route, self.experts).float()
        else:
            router_logits = self.router_logits()
            probs = torch.softmax((router_logits + route_gumbel) * inv_tau, dim=1)
            route = probs.detach().argmax(dim=1)
            onehot = nn.functional.one_hot(route, self.experts).float()
            routes = onehot + (probs - probs.detach())
        table = routes @ masks
        return Relaxed(table, masks, routes, router_logits, Decisions(hard.detach().bool(), route))

    def balance_loss(self, router_logits: torch.Tensor) -> torch.Tensor:
        """L_balance = E * sum_i F_i * P_i (F from the noise-free argmax, no gradient)."""
        probs = torch.softmax(router_logits, dim=1)
        t = router_logits.shape[0]
        counts = torch.bincount(router_logits.detach().argmax(dim=1), minlength=self.experts).float()
        f = counts / t
        return (probs.mean(dim=0) * f).sum() * self.experts


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
