"""One ALTER run in PyTorch: `ALTERTrainer.trainStep` of alter (docs/method.md section 6), step by step.

Every random draw comes from a draw source; `RecordedDraws` replays what `alter compress
--record-draws` recorded (formats/record-draws.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import safe_open

from .budget import UnitBudget
from .hypernet import Decisions, Hypernetwork
from .units import SKIP, GatedUNet

TRAIN_TIMESTEPS = 1000


@dataclass
class Settings:
    """`ALTERSettings` (config.json `settings`), defaults as alter's."""
    experts: int = 10
    keep: float = 0.65
    routing: str = "learned"
    embedding_width: int = 64
    generator_hidden: int = 256
    router_hidden: int = 64
    temperature: float = 0.4
    offset: float = 4.0
    denoise_weight: float = 1e-4
    output_kd_weight: float = 1.0
    feature_kd_weight: float = 1.0
    ratio_weight: float = 5.0
    balance_weight: float = 1.0
    lr_unet: float = 1e-5
    lr_hypernet: float = 7e-5
    beta1: float = 0.9
    beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    warmup_steps: int = 250
    gradient_clip: float = 1.0


@dataclass
class Config:
    """`CompressionConfig` (config.json)."""
    model: str
    data: str
    steps: int
    hypernet_steps: int
    settings: Settings = field(default_factory=Settings)
    batch: int = 1
    seed: int = 0
    prediction_type: str = "epsilon"


class AdamW:
    """alter's `AdamW` (NN): PyTorch's AdamW update with one step count per optimiser, linear
    warm-up, global-norm clipping per group; parameters without a gradient are left alone."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, s: Settings):
        self.params = params
        self.lr, self.s = lr, s
        self.step = 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @property
    def current_lr(self) -> float:
        w = self.s.warmup_steps
        return self.lr if w <= 0 or self.step >= w else self.lr * (self.step + 1) / w

    def grad_norm(self) -> float:
        total = 0.0
        for p in self.params:
            if p.grad is not None:
                total += float((p.grad.double() ** 2).sum())
        return math.sqrt(total)

    @torch.no_grad()
    def update(self) -> float:
        norm = self.grad_norm()
        if not math.isfinite(norm):
            raise FloatingPointError("gradient norm is not finite")
        s = self.s
        clip = np.float32(s.gradient_clip / (norm + 1e-6)) if s.gradient_clip > 0 and norm > s.gradient_clip else np.float32(1)
        lr = self.current_lr
        self.step += 1
        b1, b2 = np.float32(s.beta1), np.float32(s.beta2)
        c1, c2 = np.float32(1 - s.beta1), np.float32(1 - s.beta2)
        bc1, bc2 = 1 - s.beta1 ** self.step, 1 - s.beta2 ** self.step
        step_size = np.float32(lr / bc1)
        bc2_root = np.float32(math.sqrt(bc2))
        decay = np.float32(1 - lr * s.weight_decay)
        eps = np.float32(s.adam_epsilon)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad * float(clip)
            p.mul_(float(decay))
            m.mul_(float(b1)).add_(g * float(c1))
            v.mul_(float(b2)).add_(g * float(c2) * g)
            p.sub_(float(step_size) * m / (v.sqrt() / float(bc2_root) + float(eps)))
            p.grad = None
        return norm


class NoiseSchedule:
    """Scaled-linear betas in double, coefficients as float32 (`NoiseSchedule` of alter)."""

    def __init__(self, start=0.00085, end=0.012, steps=TRAIN_TIMESTEPS):
        a, b = math.sqrt(start), math.sqrt(end)
        acc, self.abar = 1.0, []
        for i in range(steps):
            v = a + (b - a) * i / (steps - 1)
            acc *= 1 - v * v
            self.abar.append(acc)

    def coefficients(self, t: torch.Tensor):
        sig = torch.tensor([math.sqrt(self.abar[i]) for i in t.tolist()], dtype=torch.float32)
        noi = torch.tensor([math.sqrt(1 - self.abar[i]) for i in t.tolist()], dtype=torch.float32)
        return sig.view(-1, 1, 1, 1), noi.view(-1, 1, 1, 1)


class TrainingData:
    """formats/training-data.md: `latents` [N,4,h,w], `context` [N,S,D] (any float dtype, read as fp32)."""

    def __init__(self, path: str):
        with safe_open(path, "pt") as f:
            self.latents = f.get_tensor("latents").float()
            self.context = f.get_tensor("context").float()

    def batch(self, indices: torch.Tensor):
        return self.latents[indices], self.context[indices]


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
        return f"step.{step:06d}"

    def gumbels(self, prefix: str):
        route = prefix + ".route_gumbel"
        return self.get(prefix + ".unit_gumbel"), (self.get(route) if self.has(route) else None)


def time_embedding(config, timesteps: torch.Tensor) -> torch.Tensor:
    """The sinusoidal timestep embedding of the UNet (diffusers' `get_timestep_embedding`
    formula), computed in double precision and rounded to fp32 as alter computes the router's
    input (`TimestepEmbedding.sinusoidal`): at t near 999 an fp32 argument would be off by ~1e-4."""
    dim = config.block_out_channels[0]
    half = dim // 2
    j = torch.arange(half, dtype=torch.float64)
    exponent = -math.log(10000.0) * j / (half - float(config.freq_shift))
    arg = timesteps.double()[:, None] * torch.exp(exponent)[None, :]
    sin, cos = torch.sin(arg).float(), torch.cos(arg).float()
    return torch.cat([cos, sin] if config.flip_sin_to_cos else [sin, cos], dim=1)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean()


class Trainer:
    """`ALTERTrainer` with its draws from `draws` (a `RecordedDraws`)."""

    def __init__(self, config: Config, student, teacher, data: TrainingData, draws: RecordedDraws, tie_margin: float = 0.0):
        """`tie_margin` > 0: a hard decision of a draw that differs from the recorded one only
        at a near-tie within this margin (see `Hypernetwork.sample`) takes the recorded value,
        counted in `self.ties`; 0: every decision must be identical."""
        self.config, self.data, self.draws = config, data, draws
        self.tie_margin = tie_margin
        self.ties: list[tuple[int, str, int]] = []
        st = config.settings
        self.student, self.teacher = GatedUNet(student), GatedUNet(teacher)
        # The teacher runs under no_grad. Its parameters keep requires_grad: PyTorch computes some
        # forwards with frozen parameters in a different order (relative differences near 1e-7),
        # and the student (always trainable here) must compute exactly what the teacher does.
        self.units = [u.name for u in self.student.units]
        recorded_units = draws.meta.get("units", "").split(",")
        if recorded_units != self.units:
            raise ValueError(f"unit lists differ: alter {recorded_units}, here {self.units}")
        experts = 1 if st.routing == "static" else st.experts
        emb = time_embedding(student.config, torch.arange(TRAIN_TIMESTEPS)) if st.routing == "learned" else None
        self.hypernet = Hypernetwork(self.units, experts, st.routing, st.embedding_width, st.generator_hidden,
                                     st.router_hidden, emb)
        with torch.no_grad():
            self.hypernet.generator_input.copy_(draws.get("init.generator_input"))
            for name, p in self.hypernet.named_parameters():
                p.copy_(draws.get("init.hypernet." + name))
        self.budget = UnitBudget(draws.get("init.unit_share").tolist(), float(draws.get("init.fixed_share")))
        if not st.keep > self.budget.fixed_share:
            raise ValueError(f"keep {st.keep} is below the fixed share {self.budget.fixed_share}")
        self.unit_target = st.keep - self.budget.fixed_share
        self.schedule = NoiseSchedule()
        self.unet_opt = AdamW(list(student.parameters()), st.lr_unet, st)
        self.hyper_opt = AdamW([p for _, p in self.hypernet.ordered_parameters()], st.lr_hypernet, st)
        self.step = 0
        self.initial_decisions = self.hypernet.final_decisions(st.offset)
        self.frozen_projection = None
        if config.hypernet_steps > 0:
            with torch.no_grad():
                self.decisions = self._draw("init.draw", draws.decisions(RecordedDraws.prefix(1) + ".decisions"), 0).hard
        else:
            self.decisions = self.projected_decisions()

    def _draw(self, prefix: str, reference: Decisions, step: int):
        st = self.config.settings
        margin = self.tie_margin
        r = self.hypernet.sample(st.temperature, st.offset, *self.draws.gumbels(prefix),
                                 reference=reference if margin > 0 else None, tie_margin=margin)
        if r.ties:
            self.ties.append((step, prefix, r.ties))
        return r

    def projected_decisions(self) -> Decisions:
        st = self.config.settings
        learned = self.hypernet.final_decisions(st.offset)
        logits = self.hypernet.keep_logits(st.offset).tolist()
        d, before, after, changed = self.budget.project(learned, logits, st.keep)
        moved = int((learned.kept != self.initial_decisions.kept).sum())
        self.frozen_projection = dict(learned_kept_mac_fraction=before, kept_mac_fraction=after, changed_unit_decision_count=changed,
                                      hypernet_changed_unit_decision_count=moved)
        return d

    @property
    def masks_frozen(self) -> bool:
        return self.step >= self.config.hypernet_steps

    @property
    def final_decisions(self) -> Decisions:
        return self.decisions if self.masks_frozen else self.projected_decisions()

    def objective(self, out, feats, teacher_out, teacher_feats, target):
        st = self.config.settings
        out_kd = mse(out, teacher_out)
        total = out_kd * st.output_kd_weight
        feat_v = denoise_v = 0.0
        if st.feature_kd_weight != 0 and feats:
            feat = mse(feats[0][1], teacher_feats[0][1])
            for i in range(1, len(feats)):
                feat = feat + mse(feats[i][1], teacher_feats[i][1])
            feat = feat * np.float32(1 / np.float32(len(feats)))
            feat_v = float(feat.detach())
            total = total + feat * np.float32(st.feature_kd_weight)
        if st.denoise_weight != 0:
            d = mse(out, target)
            denoise_v = float(d.detach())
            total = total + d * np.float32(st.denoise_weight)
        return total, float(out_kd.detach()), feat_v, denoise_v

    def ratio_loss(self, table: torch.Tensor) -> torch.Tensor:
        shares = torch.tensor(self.budget.share, dtype=torch.float32)
        s = (table.mean(dim=0) * shares).sum()
        return (torch.log(s) + np.float32(-np.float32(math.log(self.unit_target)))).abs()

    def train_step(self) -> dict:
        """One iteration; returns its metrics (the keys of `StepMetrics`)."""
        cfg, st = self.config, self.config.settings
        k = self.step + 1
        p = RecordedDraws.prefix(k)
        indices = self.draws.get(p + ".indices").long()
        t = self.draws.get(p + ".timesteps").long()
        noise = self.draws.get(p + ".noise").float()
        x0, context = self.data.batch(indices)
        sig, noi = self.schedule.coefficients(t)
        noisy = sig * x0 + noi * noise
        target = noise if cfg.prediction_type == "epsilon" else sig * noise - noi * x0
        tap = st.feature_kd_weight != 0
        tsteps = t.float()
        with torch.no_grad():
            teacher_out, teacher_feats = self.teacher(noisy, tsteps, context, tap_features=tap)
        used = self.decisions

        # (1) UNet step with the hard mask table.
        unet_lr = self.unet_opt.current_lr
        kept = used.kept[used.route[t]]  # [B, L]
        gates = {}
        for l, name in enumerate(self.units):
            m = kept[:, l]
            if not m.any():
                gates[name] = SKIP
            elif not m.all():
                gates[name] = m.float()
        out, feats = self.student(noisy, tsteps, context, gates=gates, tap_features=tap)
        total, out_kd, feat_kd, denoise = self.objective(out, feats, teacher_out, teacher_feats, target)
        loss = float(total.detach())
        total.backward()
        unet_norm = self.unet_opt.update()
        metrics = dict(step=k, loss=loss, output_kd=out_kd, feature_kd=feat_kd, denoise=denoise,
                       kept_fraction=self.budget.kept_fraction(used), expert_shares=used.expert_shares(),
                       lr_unet=unet_lr, grad_norm_unet=unet_norm)
        self.last_used_decisions = used
        self.last_hypernet_decisions = None

        # (2) hypernetwork step with the UNet frozen, (3) table refresh.
        if self.step < cfg.hypernet_steps:
            hyper_lr = self.hyper_opt.current_lr
            relaxed = self._draw(p + ".hypernet", self.draws.decisions(p + ".hypernet.decisions"), k)
            self.last_hypernet_decisions = relaxed.hard
            rows = relaxed.table[t]  # [B, L]
            hgates = {name: rows[:, l] for l, name in enumerate(self.units)}
            out, feats = self.student(noisy, tsteps, context, gates=hgates, tap_features=tap)
            perf, _, _, _ = self.objective(out, feats, teacher_out, teacher_feats, target)
            ratio = self.ratio_loss(relaxed.table)
            total = perf + ratio * np.float32(st.ratio_weight)
            balance = None
            if st.balance_weight != 0 and relaxed.router_logits is not None:
                ref_name = p + ".hypernet.balance_route"
                reference = self.draws.get(ref_name).long() if self.tie_margin > 0 and self.draws.has(ref_name) else None
                b, ties = self.hypernet.balance_loss(relaxed.router_logits, reference, self.tie_margin)
                if ties:
                    self.ties.append((k, ref_name, ties))
                balance = float(b.detach())
                total = total + b * np.float32(st.balance_weight)
            hyper_loss = float(total.detach())
            # Gradients of the hypernetwork only (the UNet is frozen in this step).
            grads = torch.autograd.grad(total, self.hyper_opt.params)
            for q, g in zip(self.hyper_opt.params, grads):
                q.grad = g
            hyper_norm = self.hyper_opt.update()
            metrics.update(hypernet_loss=hyper_loss, performance=float(perf.detach()), ratio=float(ratio.detach()), balance=balance,
                           lr_hypernet=hyper_lr, grad_norm_hypernet=hyper_norm)
            if self.step + 1 < cfg.hypernet_steps:
                with torch.no_grad():
                    self.decisions = self._draw(p + ".next", self.draws.decisions(RecordedDraws.prefix(k + 1) + ".decisions"), k).hard
            else:
                self.decisions = self.projected_decisions()
        self.step += 1
        return metrics
