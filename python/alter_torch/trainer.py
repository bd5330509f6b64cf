"""One ALTER run in PyTorch: `ALTERTrainer.trainStep` of alter (docs/method.md section 6), step by step.

Every random draw comes from a draw source (`draws.py`): `TorchDraws` for a standalone run,
`RecordedDraws` to replay what `alter compress --record-draws` recorded (formats/record-draws.md).
A step processes the global batch (`batch` x processes x `grad_accum` samples): each process
takes its rows, in micro-batches of `batch`; gradients and metrics are averaged over all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import contextlib

from .budget import UnitBudget
from .hypernet import Decisions, Hypernetwork
from .costmodel import CostModel
from .data import TrainingData
from .distributed import Group
from .draws import RecordedDraws, TorchDraws, step_prefix
from .seeded import hypernet_initialisation
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
    caption_dropout: float = 0.0
    smoothness_weight: float = 0.0
    guidance_kd_weight: float = 0.0
    guidance_kd_scale: float = 7.5


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
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    config_path: str | None = None  # diffusers config.json for an original single-file MODEL


@dataclass
class Execution:
    """How a run executes; not part of the method (a run gives the same result, within rounding,
    for every choice with fp32). `batch` is per process and micro-batch: the global batch of a
    step is batch x processes x grad_accum."""
    device: str = "cpu"
    grad_accum: int = 1
    precision: str = "fp32"  # fp32, bf16, fp16 (autocast of the student; fp32 master weights)
    teacher_dtype: str = "fp32"
    grad_checkpointing: bool = False


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteStep(FloatingPointError):
    """A loss or gradient norm of step `step` is not finite (alter's `CompressionError.nonFinite`).
    `state_is_last_good_step`: the trainer has not applied any part of the failing step (true for
    the UNet phase, whose check precedes its update; false for the hypernetwork phase, which comes
    after the UNet update of the same step), so a checkpoint now holds the last good step."""

    def __init__(self, step: int, what: str, state_is_last_good_step: bool):
        super().__init__(f"step {step}: {what}")
        self.step, self.what, self.state_is_last_good_step = step, what, state_is_last_good_step


class LossScaler:
    """Dynamic loss scaling for fp16 (torch.amp.GradScaler's rule: start at 2^16, halve and skip
    the update when a gradient is not finite, double after 2000 finite steps); 1 otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.scale = 65536.0 if enabled else 1.0
        self.good_steps = 0

    def unscale(self, params) -> bool:
        """Divides the gradients by the scale; False (and the gradients dropped) when one is not finite."""
        if not self.enabled:
            return True
        finite = True
        for p in params:
            if p.grad is not None:
                p.grad.div_(self.scale)
                finite = finite and bool(torch.isfinite(p.grad).all())
        if not finite:
            for p in params:
                p.grad = None
            self.scale /= 2
            self.good_steps = 0
            return False
        self.good_steps += 1
        if self.good_steps >= 2000:
            self.scale *= 2
            self.good_steps = 0
        return True


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
            raise FloatingPointError(f"gradient norm is not finite ({norm})")
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
    """`ALTERTrainer`, with its draws from `draws` (`TorchDraws` or `RecordedDraws`).

    A standalone run (`TorchDraws`) starts from the hypernetwork alter starts from with the same
    seed (`seeded.hypernet_initialisation`) and the units' MAC shares of alter's cost model at the
    data's latent size; a replay takes both from the record."""

    def __init__(self, config: Config, student, teacher, data: TrainingData, draws, tie_margin: float = 0.0,
                 execution: Execution | None = None, group: Group | None = None):
        """`tie_margin` > 0 (replays): a hard decision of a draw that differs from the recorded
        one only at a near-tie within this margin (see `Hypernetwork.sample`) takes the recorded
        value, counted in `self.ties`; 0: every decision must be identical."""
        self.config, self.data, self.draws = config, data, draws
        self.execution = ex = execution or Execution()
        self.device = torch.device(ex.device)
        self.group = group or Group(self.device)
        self.tie_margin = tie_margin
        if isinstance(draws, RecordedDraws):
            draws.tie_margin = tie_margin
        self.ties: list[tuple[int, str, int]] = []
        st = config.settings
        data.validate(student.config)
        # alter's CompressionConfig.validate for these settings.
        if not 0 <= st.caption_dropout <= 1:
            raise ValueError(f"caption_dropout must be a probability in [0, 1], got {st.caption_dropout}")
        if st.smoothness_weight < 0 or st.guidance_kd_weight < 0:
            raise ValueError("smoothness_weight and guidance_kd_weight must not be negative")
        if st.smoothness_weight != 0 and st.routing != "learned":
            raise ValueError(f"smoothness_weight applies to learned routing only (routing {st.routing} has no router logits to smooth)")
        if not st.guidance_kd_scale > 0:
            raise ValueError(f"guidance_kd_scale must be positive, got {st.guidance_kd_scale}")
        if st.guidance_kd_weight > 0 and data.uncond is None:
            raise ValueError(f"guidance_kd_weight is {st.guidance_kd_weight}, but {data.path} has no 'uncond' tensor (the empty "
                             "prompt's context) to run the unconditional half with")
        if st.caption_dropout > 0 and data.uncond is None:
            raise ValueError(f"caption_dropout is {st.caption_dropout}, but {data.path} has no 'uncond' tensor (the empty prompt's "
                             "context) to replace captions with")
        if isinstance(draws, TorchDraws):
            draws.caption_dropout = st.caption_dropout
        if ex.grad_checkpointing:
            student.enable_gradient_checkpointing()
            student.train()
        student.to(self.device)
        teacher.to(self.device)
        if teacher.dtype != DTYPES[ex.teacher_dtype]:
            teacher.to(DTYPES[ex.teacher_dtype])
        self.student, self.teacher = GatedUNet(student), GatedUNet(teacher)
        # The teacher runs under no_grad. Its parameters keep requires_grad: PyTorch computes some
        # forwards with frozen parameters in a different order (relative differences near 1e-7),
        # and the student (always trainable here) must compute exactly what the teacher does.
        self.units = [u.name for u in self.student.units]
        _, _, h, w = data.latents_shape
        self.cost = CostModel(student.config, h, w, data.context_shape[1])
        if self.cost.unit_names != self.units:
            raise ValueError(f"unit lists differ: cost model {self.cost.unit_names}, UNet {self.units}")
        experts = 1 if st.routing == "static" else st.experts
        emb = time_embedding(student.config, torch.arange(TRAIN_TIMESTEPS)) if st.routing == "learned" else None
        self.hypernet = Hypernetwork(self.units, experts, st.routing, st.embedding_width, st.generator_hidden,
                                     st.router_hidden, emb)
        self.hypernet.temperature = st.temperature
        names = [n for n, _ in self.hypernet.named_parameters()]
        if isinstance(draws, RecordedDraws):
            recorded_units = draws.meta.get("units", "").split(",")
            if recorded_units != self.units:
                raise ValueError(f"unit lists differ: alter {recorded_units}, here {self.units}")
            z, params, share, fixed, self.dense_macs = draws.initialisation(names)
        else:
            shapes = {n: tuple(p.shape) for n, p in self.hypernet.named_parameters()}
            z, params = hypernet_initialisation(config.seed, len(self.units), experts, st.embedding_width,
                                                student.config.block_out_channels[0], shapes)
            z, params = torch.from_numpy(z), {n: torch.from_numpy(v) for n, v in params.items()}
            if st.routing == "segments":  # SegmentRouter: equal intervals to start with, drawn from nothing
                params["router.widths"] = torch.zeros(experts)
            share, fixed = self.cost.shares()
            self.dense_macs = self.cost.total.total
        with torch.no_grad():
            self.hypernet.generator_input.copy_(z)
            for name, p in self.hypernet.named_parameters():
                p.copy_(params[name])
        self.budget = UnitBudget(share, fixed)
        if not st.keep > self.budget.fixed_share:
            raise ValueError(f"keep {st.keep} is below the fixed share {self.budget.fixed_share}")
        self.unit_target = st.keep - self.budget.fixed_share
        self.schedule = NoiseSchedule()
        self.unet_opt = AdamW(list(student.parameters()), st.lr_unet, st)
        self.hyper_opt = AdamW([p for _, p in self.hypernet.ordered_parameters()], st.lr_hypernet, st)
        self.scaler = LossScaler(ex.precision == "fp16")  # the UNet step's
        self.hyper_scaler = LossScaler(ex.precision == "fp16")  # the hypernetwork step's
        self.step = 0
        self.initial_decisions = self.hypernet.final_decisions(st.offset)
        self.frozen_projection = None
        if config.hypernet_steps > 0:
            with torch.no_grad():
                self.decisions = self._draw("init.draw", step_prefix(1) + ".decisions", 0).hard
        else:
            self.decisions = self.projected_decisions()

    @property
    def global_batch(self) -> int:
        return self.config.batch * self.group.world * self.execution.grad_accum

    def _draw(self, prefix: str, reference: str, step: int):
        st = self.config.settings
        r = self.hypernet.sample(st.temperature, st.offset, *self.draws.gumbels(prefix),
                                 reference=self.draws.reference(reference), tie_margin=self.tie_margin)
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
        """(total, output_kd, feature_kd, denoise, guidance_kd or None). With guidance distillation
        the rows are the conditional half, then the unconditional half (`_micro_batches`)."""
        st = self.config.settings
        if st.guidance_kd_weight > 0:
            n = out.shape[0] // 2
            total, out_kd, feat_kd, denoise = self._distillation(out[:n], [(k, v[:n]) for k, v in feats], teacher_out[:n],
                                                                 [(k, v[:n]) for k, v in teacher_feats], target[:n])
            g = np.float32(st.guidance_kd_scale)
            sc, su = out[:n].float(), out[n:].float()
            tc, tu = teacher_out[:n].float(), teacher_out[n:].float()
            student = su * (np.float32(1) - g) + sc * g
            teacher = tu * (np.float32(1) - g) + tc * g
            guided = mse(student, teacher.detach()) * np.float32(1 / (g * g))
            total = total + guided * np.float32(st.guidance_kd_weight)
            return total, out_kd, feat_kd, denoise, float(guided.detach())
        return (*self._distillation(out, feats, teacher_out, teacher_feats, target), None)

    def _distillation(self, out, feats, teacher_out, teacher_feats, target):
        st = self.config.settings
        out, teacher_out = out.float(), teacher_out.float()
        out_kd = mse(out, teacher_out)
        total = out_kd * st.output_kd_weight
        feat_v = denoise_v = 0.0
        if st.feature_kd_weight != 0 and feats:
            feat = mse(feats[0][1].float(), teacher_feats[0][1].float())
            for i in range(1, len(feats)):
                feat = feat + mse(feats[i][1].float(), teacher_feats[i][1].float())
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

    def _autocast(self):
        ex = self.execution
        if ex.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[ex.precision])

    def _micro_batches(self, k: int):
        """This process's micro-batches of step k: (noisy, timesteps, context, target, t) on the device."""
        cfg = self.config
        indices, t_all, noise_all, dropped_all = self.draws.batch(k, self.global_batch)
        if (dropped_all is not None) != (cfg.settings.caption_dropout > 0):
            raise ValueError(f"step {k}: the draws {'hold' if dropped_all is not None else 'lack'} caption-dropout flags, "
                             f"but this run's caption_dropout is {cfg.settings.caption_dropout}")
        per_rank = cfg.batch * self.execution.grad_accum
        first = self.group.rank * per_rank
        out = []
        for a in range(self.execution.grad_accum):
            rows = slice(first + a * cfg.batch, first + (a + 1) * cfg.batch)
            idx, t, noise = indices[rows], t_all[rows], noise_all[rows]
            x0, context = self.data.batch(idx)
            if dropped_all is not None:
                context[dropped_all[rows]] = self.data.uncond
            sig, noi = self.schedule.coefficients(t)
            noisy = sig * x0 + noi * noise
            target = noise if cfg.prediction_type == "epsilon" else sig * noise - noi * x0
            if cfg.settings.guidance_kd_weight > 0:  # the same samples again with uncond (alter's Batch)
                noisy, t, target = torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([target, target])
                context = torch.cat([context, self.data.uncond.expand_as(context)])
            dev = self.device
            out.append((noisy.to(dev), t.float().to(dev), context.to(dev), target.to(dev), t))
        return out

    def _teacher(self, noisy, tsteps, context, tap):
        dtype = DTYPES[self.execution.teacher_dtype]
        with torch.no_grad():
            return self.teacher(noisy.to(dtype), tsteps, context.to(dtype), tap_features=tap)

    def train_step(self) -> dict:
        """One iteration; returns its metrics (the keys of `StepMetrics`)."""
        cfg, st = self.config, self.config.settings
        k = self.step + 1
        p = step_prefix(k)
        tap = st.feature_kd_weight != 0
        accum = self.execution.grad_accum
        micros = self._micro_batches(k)
        used = self.decisions

        # (1) UNet step with the hard mask table.
        unet_lr = self.unet_opt.current_lr
        sums = [0.0, 0.0, 0.0, 0.0, 0.0]
        teacher_cache = []
        for noisy, tsteps, context, target, t in micros:
            teacher_out, teacher_feats = self._teacher(noisy, tsteps, context, tap)
            teacher_cache.append((teacher_out, teacher_feats))
            kept = used.kept[used.route[t]]  # [B, L]
            gates = {}
            for l, name in enumerate(self.units):
                m = kept[:, l]
                if not m.any():
                    gates[name] = SKIP
                elif not m.all():
                    gates[name] = m.float().to(self.device)
            with self._autocast():
                out, feats = self.student(noisy, tsteps, context, gates=gates, tap_features=tap)
            total, out_kd, feat_kd, denoise, guid_kd = self.objective(out, feats, teacher_out, teacher_feats, target)
            for i, v in enumerate((float(total.detach()), out_kd, feat_kd, denoise, guid_kd or 0.0)):
                sums[i] += v
            if accum > 1:
                total = total / accum
            if self.scaler.enabled:
                total = total * self.scaler.scale
            total.backward()
            del out, feats, total
        loss, out_kd, feat_kd, denoise, guid_kd = self.group.mean([v / accum if accum > 1 else v for v in sums])
        if not self.scaler.enabled and not math.isfinite(loss):  # (fp16: the scaler skips the update)
            raise NonFiniteStep(k, f"the UNet objective is {loss}", True)
        self.group.average_gradients(self.unet_opt.params)
        try:
            unet_norm = self.unet_opt.update() if self.scaler.unscale(self.unet_opt.params) else None
        except FloatingPointError:
            raise NonFiniteStep(k, "the UNet gradient norm is not finite", True) from None
        # grad_norm_* None (absent from the metrics line): fp16 gradients overflowed, the update was skipped.
        metrics = dict(step=k, loss=loss, output_kd=out_kd, feature_kd=feat_kd, denoise=denoise,
                       guidance_kd=guid_kd if st.guidance_kd_weight > 0 else None, kept_fraction=self.budget.kept_fraction(used), expert_shares=used.expert_shares(),
                       lr_unet=unet_lr, grad_norm_unet=unet_norm)
        self.last_used_decisions = used
        self.last_hypernet_decisions = None

        # (2) hypernetwork step with the UNet frozen, (3) table refresh.
        if self.step < cfg.hypernet_steps:
            hyper_lr = self.hyper_opt.current_lr
            relaxed = self._draw(p + ".hypernet", p + ".hypernet.decisions", k)
            self.last_hypernet_decisions = relaxed.hard
            ratio = self.ratio_loss(relaxed.table)
            weighted_ratio, weighted_balance = ratio * np.float32(st.ratio_weight), None
            balance = None
            if st.balance_weight != 0 and relaxed.router_logits is not None:
                b, ties = self.hypernet.balance_loss(relaxed.router_logits, self.draws.reference(p + ".hypernet.balance_route"),
                                                     self.tie_margin)
                if ties:
                    self.ties.append((k, p + ".hypernet.balance_route", ties))
                balance = float(b.detach())
                weighted_balance = b * np.float32(st.balance_weight)
            smoothness, weighted_smoothness = None, None
            if st.smoothness_weight != 0 and relaxed.router_logits is not None:
                sm = self.hypernet.smoothness_loss(relaxed.router_logits)
                smoothness = float(sm.detach())
                weighted_smoothness = sm * np.float32(st.smoothness_weight)
            params = self.hyper_opt.params
            grads = None
            perf_sum = hyper_sum = 0.0
            for i, ((noisy, tsteps, context, target, t), (teacher_out, teacher_feats)) in enumerate(zip(micros, teacher_cache)):
                rows = relaxed.table[t].to(self.device)  # [B, L]
                hgates = {name: rows[:, l] for l, name in enumerate(self.units)}
                with self._autocast():
                    out, feats = self.student(noisy, tsteps, context, gates=hgates, tap_features=tap)
                perf = self.objective(out, feats, teacher_out, teacher_feats, target)[0]
                total = perf + weighted_ratio
                if weighted_balance is not None:
                    total = total + weighted_balance
                if weighted_smoothness is not None:
                    total = total + weighted_smoothness
                perf_sum += float(perf.detach())
                hyper_sum += float(total.detach())
                if accum > 1:
                    total = total / accum
                if self.hyper_scaler.enabled:
                    total = total * self.hyper_scaler.scale
                # Gradients of the hypernetwork only (the UNet is frozen in this step).
                g = torch.autograd.grad(total, params, retain_graph=i + 1 < len(micros))
                grads = list(g) if grads is None else [a + b for a, b in zip(grads, g)]
                del out, feats, total
            for q, g in zip(params, grads):
                q.grad = g
            perf_v, hyper_loss = self.group.mean([perf_sum / accum if accum > 1 else perf_sum,
                                                  hyper_sum / accum if accum > 1 else hyper_sum])
            if not self.hyper_scaler.enabled and not math.isfinite(hyper_loss):
                raise NonFiniteStep(k, f"the hypernetwork objective is {hyper_loss}", False)
            self.group.average_gradients(params)
            try:
                hyper_norm = self.hyper_opt.update() if self.hyper_scaler.unscale(params) else None
            except FloatingPointError:
                raise NonFiniteStep(k, "the hypernetwork gradient norm is not finite", False) from None
            metrics.update(hypernet_loss=hyper_loss, performance=perf_v, ratio=float(ratio.detach()), balance=balance, smoothness=smoothness,
                           lr_hypernet=hyper_lr, grad_norm_hypernet=hyper_norm)
            if self.step + 1 < cfg.hypernet_steps:
                with torch.no_grad():
                    self.decisions = self._draw(p + ".next", step_prefix(k + 1) + ".decisions", k).hard
            else:
                self.decisions = self.projected_decisions()
        self.step += 1
        return metrics
