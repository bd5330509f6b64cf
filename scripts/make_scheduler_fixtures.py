#!/usr/bin/env python3
"""Sampler (scheduler) references for `alter sample`: diffusers DDIM, PNDM (PLMS) and Euler.

Usage (from the repository root, with ~/refenv holding torch, diffusers, safetensors, numpy):

    ~/refenv/bin/python scripts/make_scheduler_fixtures.py   # (re)write Tests/Fixtures/schedulers/

Writes Tests/Fixtures/schedulers/:
* `<kind>-<prediction>.safetensors` for kind in ddim (20 steps), pndm (20 steps, skip_prk_steps)
  and euler (15 steps), prediction in epsilon / v_prediction: a whole sampling run of diffusers'
  scheduler as a pipeline drives it (set_timesteps, latents = noise * init_noise_sigma, then per
  timestep scale_model_input, model, step), with a stand-in model that is deterministic but
  depends on the state: model_output = 0.5 * tanh(scaled_input) + 0.1 * fixed. Every model
  output and every latent is stored, so a test feeds the stored outputs and checks only the
  scheduler.
* `timesteps.safetensors`: the timesteps (and Euler's sigmas) diffusers computes for every
  timestep_spacing and a range of step counts, including counts where numpy's float arange gives
  one timestep more than asked (trailing spacing, 61 and 103 steps).

Precision: diffusers computes the schedule in float32 (betas = linspace(sqrt(start), sqrt(end),
T, float32)**2, alphas_cumprod = cumprod(1 - betas) -- torch accumulates the cumprod in double
on the CPU but stores float32) and every step in float32 with float32 0-d scalars; Euler's sigmas
are interpolated by numpy in float64 from the float32 table, then rounded to float32. The stored
latents are exactly what diffusers computes. To size the tolerance of a Double-coefficient
implementation, the script also runs each trajectory with the schedule and every operation in
float64 (fed the same stored model outputs) and records the difference (metadata
`f32_vs_f64`): that is diffusers' own float32 error, which a correct Swift implementation sees
as its distance to the fixture.

Re-running gives byte-identical files with the same library versions.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import versions  # noqa: E402
from make_forward_fixtures import save_canonical  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "Tests", "Fixtures", "schedulers")

# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json (prediction_type varies here).
SD21 = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
CLASSES = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "euler": EulerDiscreteScheduler}
RUNS = [("ddim", 20), ("pndm", 20), ("euler", 15)]
PREDICTIONS = ["epsilon", "v_prediction"]
SHAPE = (1, 4, 8, 8)
SEED = 5150
SPACINGS = ["leading", "trailing", "linspace"]
STEP_COUNTS = [1, 2, 3, 7, 15, 20, 48, 61, 103]


def make_scheduler(kind, prediction, spacing=None):
    cfg = dict(SD21, prediction_type=prediction)
    if spacing is not None:
        cfg["timestep_spacing"] = spacing
    # from_config, as pipelines swap schedulers: keys a class does not take are ignored.
    return CLASSES[kind].from_config(cfg)


def alphas_cumprod_f64():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def model(scaled, fixed):
    return 0.5 * torch.tanh(scaled) + 0.1 * fixed


def reference_f64(kind, prediction, steps, noise, outputs):
    """The same run in float64 (float64 schedule and arithmetic), fed the stored model outputs."""
    ac64 = alphas_cumprod_f64()
    s = make_scheduler(kind, prediction)
    s.set_timesteps(steps)
    if kind == "euler":
        # diffusers' Euler step casts the sample to float32, so spell its formulas out in float64.
        table = ((1 - ac64) / ac64).sqrt().numpy()
        ts = s.timesteps.numpy().astype(np.float64)
        sigmas = np.concatenate([np.interp(ts, np.arange(1000), table), [0.0]])
        x = noise.double() * float(sigmas.max())
        lat = [x]
        for i, m in enumerate(outputs):
            m = m.double()
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            if prediction == "epsilon":
                pred = x - sigma * m
            else:
                pred = m * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
            x = x + (x - pred) / sigma * (sigma_next - sigma)
            lat.append(x)
        return lat
    s.alphas_cumprod = ac64
    s.final_alpha_cumprod = ac64[0]
    x = noise.double() * s.init_noise_sigma
    lat = [x]
    for t, m in zip(s.timesteps, outputs):
        x = s.step(m.double(), t, x).prev_sample
        assert x.dtype == torch.float64
        lat.append(x)
    return lat


def run(kind, prediction, steps, vers):
    gen = torch.Generator().manual_seed(SEED)
    noise = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    fixed = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    s = make_scheduler(kind, prediction)
    s.set_timesteps(steps)
    timesteps = s.timesteps.clone()
    latents = noise * s.init_noise_sigma
    lat, outs = [latents], []
    for t in timesteps:
        scaled = s.scale_model_input(latents, t)
        m = model(scaled, fixed)
        latents = s.step(m, t, latents).prev_sample
        assert latents.dtype == torch.float32
        outs.append(m)
        lat.append(latents)
    calls = len(timesteps)
    assert calls == (steps + 1 if kind == "pndm" else steps), (kind, calls)

    ref = reference_f64(kind, prediction, steps, noise, outs)
    err_abs = max(float((a.double() - b).abs().max()) for a, b in zip(lat, ref))
    err_rel = max(float(((a.double() - b).abs() / b.abs().clamp_min(1e-3)).max()) for a, b in zip(lat, ref))
    scale = max(float(b.abs().max()) for b in ref)
    print(f"{kind:5s} {prediction:12s} {calls} calls: diffusers float32 vs float64 max abs {err_abs:.2e}, "
          f"max rel (|ref| >= 1e-3) {err_rel:.2e}, max |latent| {scale:.2f}")

    tensors = {
        "timesteps": timesteps.to(torch.float32 if kind == "euler" else torch.int64).contiguous(),
        "noise": noise,
        "fixed": fixed,
        "model_outputs": torch.stack(outs).contiguous(),
        "latents": torch.stack(lat).contiguous(),
    }
    if kind == "euler":
        tensors["sigmas"] = s.sigmas.to(torch.float32).contiguous()
    init_sigma = s.init_noise_sigma
    meta = {
        "scheduler": CLASSES[kind].__name__,
        "steps": str(steps),
        "prediction_type": prediction,
        "config": json.dumps(dict(SD21, prediction_type=prediction), sort_keys=True),
        "resolved_config": json.dumps({k: v for k, v in s.config.items() if not k.startswith("_")}, sort_keys=True),
        "init_noise_sigma": repr(float(init_sigma)),
        "model": "model_output = 0.5 * tanh(scale_model_input(latent, t)) + 0.1 * fixed",
        "f32_vs_f64": json.dumps({"max_abs": err_abs, "max_rel": err_rel, "max_abs_latent": scale}),
        "versions": json.dumps(vers, sort_keys=True),
    }
    path = os.path.join(OUT_DIR, f"{kind}-{prediction.replace('_', '-')}.safetensors")
    save_canonical(tensors, path, meta)
    print(f"  {path}: {os.path.getsize(path):,} bytes")
    return err_abs, err_rel


def numpy_arange_trailing(T, steps):
    """numpy's float arange(T, 0, -T/steps), spelled out as the Swift code does it."""
    r = T / steps
    n = int(np.ceil((0 - T) / -r))
    delta = (T + -r) - T
    return np.array([T + i * delta for i in range(n)])


def make_timesteps(vers):
    tensors, notes = {}, {}
    # the Swift trailing-spacing arithmetic equals numpy's for every step count
    for n in range(1, 1001):
        assert np.array_equal(np.arange(1000, 0, -1000 / n), numpy_arange_trailing(1000, n)), n
    for kind in CLASSES:
        for spacing in SPACINGS:
            for n in STEP_COUNTS:
                s = make_scheduler(kind, "epsilon", spacing)
                s.set_timesteps(n)
                ts = s.timesteps
                key = f"{kind}.{spacing}.{n}"
                tensors[key] = ts.to(torch.float32 if kind == "euler" else torch.int32).contiguous()
                if kind == "euler":
                    tensors[key + ".sigmas"] = s.sigmas.to(torch.float32).contiguous()
                    tensors[key + ".init_noise_sigma"] = torch.tensor([float(s.init_noise_sigma)], dtype=torch.float32)
                expected = n + 1 if kind == "pndm" and n > 1 else n
                if len(ts) != expected or ts.min() < 0 or ts.max() > 999:
                    notes[key] = f"{len(ts)} timesteps, min {float(ts.min()):g}, max {float(ts.max()):g}"
    print("timesteps outside 0..999 or counts off:", json.dumps(notes, indent=1))
    meta = {
        "config": json.dumps(dict(SD21, prediction_type="epsilon"), sort_keys=True),
        "keys": "<kind>.<timestep_spacing>.<steps> (I32 for ddim/pndm, F32 for euler); "
                "euler also .sigmas (F32, steps+1) and .init_noise_sigma (F32 [1])",
        "anomalies": json.dumps(notes, sort_keys=True),
        "versions": json.dumps(vers, sort_keys=True),
    }
    path = os.path.join(OUT_DIR, "timesteps.safetensors")
    save_canonical(tensors, path, meta)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path):,} bytes")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    vers = versions()
    ac32 = make_scheduler("ddim", "epsilon").alphas_cumprod.double()
    ac64 = alphas_cumprod_f64()
    print(f"alphas_cumprod float32 (diffusers) vs float64: max rel {float(((ac32 - ac64) / ac64).abs().max()):.2e}")
    for kind, steps in RUNS:
        for prediction in PREDICTIONS:
            run(kind, prediction, steps, vers)
    make_timesteps(vers)
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR))
    print(f"total {total:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
