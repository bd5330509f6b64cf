"""`python -m alter_torch.bench --device cuda|cpu [--config sd21|small] [--latent 64,96] [--batch N]`

Seconds per ALTER training step and peak memory for the full SD2.1 UNet (random initialisation,
nothing downloaded), at each latent size: a hypernetwork-phase step (UNet step + hypernetwork
step) and a frozen-phase step (UNet step only), after one warm-up step of each. Peak memory is
`torch.cuda.max_memory_allocated` on a GPU, the process's peak resident set on the CPU.
`--saved-activations` instead measures, for one sample, the bytes the student's forward saves
for its backward (all units computed; the memory that grows with the batch), on any device, and
apart from them the low-precision weight copies autocast saves (once per step, not per sample).
`--config small` is the example model's architecture (a CPU test runs it in seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

from .costmodel import CostModel
from .data import TrainingData
from .distributed import Group
from .draws import TorchDraws
from .trainer import DTYPES, Config, Execution, Settings, Trainer
from .units import GatedUNet, unit_list

SD21 = dict(sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=[320, 640, 1280, 1280], attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
            down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            use_linear_projection=True, upcast_attention=True, norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0)
SMALL = dict(SD21, block_out_channels=[16, 32, 32, 32], attention_head_dim=[2, 4, 4, 4], cross_attention_dim=32,
             norm_num_groups=8, sample_size=16)
CONFIGS = {"sd21": (SD21, 77), "small": (SMALL, 5)}


def make_unet(config: dict, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config)
    unet.eval()
    return unet


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(config: dict, context_len: int, latent: int, batch: int, steps: int, execution: Execution) -> dict:
    device = torch.device(execution.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.safetensors")
        g = torch.Generator().manual_seed(0)
        save_file({"latents": torch.randn(batch, 4, latent, latent, generator=g).half(),
                   "context": torch.randn(batch, context_len, config["cross_attention_dim"], generator=g).half()}, path)
        data = TrainingData(path)
        student = make_unet(config)
        teacher = copy.deepcopy(student).to(DTYPES[execution.teacher_dtype])
        per_phase = steps + 1
        run = Config(model="random", data=path, steps=2 * per_phase, hypernet_steps=per_phase,
                     settings=Settings(experts=10, keep=0.65, warmup_steps=0), batch=batch, seed=0)
        draws = TorchDraws(0, 10, len(unit_list(student.config)), True, (4, latent, latent), batch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer = Trainer(run, student, teacher, data, draws, execution=execution, group=Group(device))
        times = {"hypernet_phase": [], "frozen_phase": []}
        for k in range(2 * per_phase):
            sync(device)
            t0 = time.perf_counter()
            trainer.train_step()
            sync(device)
            phase = "hypernet_phase" if k < per_phase else "frozen_phase"
            if k % per_phase:  # the first step of each phase warms up
                times[phase].append(time.perf_counter() - t0)
        macs = CostModel(student.config, latent, latent, context_len).total.total
        return {"latent": latent, "batch": batch, "dense_macs_per_sample": macs,
                "seconds_per_step_hypernet_phase": sum(times["hypernet_phase"]) / steps,
                "seconds_per_step_frozen_phase": sum(times["frozen_phase"]) / steps,
                "peak_memory_bytes": peak_memory(device)}


def saved_activations(config: dict, context_len: int, latent: int, execution: Execution) -> dict:
    """Bytes saved for the backward by one sample's student forward (distinct storages)."""
    device = torch.device(execution.device)
    unet = make_unet(config).to(device)
    if execution.grad_checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()
    gated = GatedUNet(unet)
    storages: dict[int, int] = {}
    weight_copies: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in unet.parameters()}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() in params:
            return t
        f = t.grad_fn
        # autocast's low-precision copies of the weights: per step, not per sample
        is_copy = f is not None and type(f).__name__ == "ToCopyBackward0" and \
            any(n is not None and type(n).__name__ == "AccumulateGrad" for n, _ in f.next_functions)
        (weight_copies if is_copy else storages)[s.data_ptr()] = s.nbytes()
        return t

    x = torch.randn(1, 4, latent, latent, device=device)
    c = torch.randn(1, context_len, config["cross_attention_dim"], device=device)
    ctx = torch.autocast(device.type, dtype=DTYPES[execution.precision]) if execution.precision != "fp32" else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        gated(x, torch.tensor([500.0], device=device), c, tap_features=True)
    return {"latent": latent, "precision": execution.precision, "grad_checkpointing": execution.grad_checkpointing,
            "saved_activation_bytes_per_sample": sum(storages.values()),
            "autocast_weight_copy_bytes": sum(weight_copies.values())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m alter_torch.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", choices=sorted(CONFIGS), default="sd21")
    p.add_argument("--latent", default="64,96", help="latent sides, comma-separated (default: 64,96)")
    p.add_argument("--batch", type=int, default=1, help="samples per step on this device (default: 1)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per phase (default: 3)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--teacher-dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--saved-activations", action="store_true", help="measure the saved activations of one sample instead")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    config, context_len = CONFIGS[a.config]
    ex = Execution(device=a.device, precision=a.precision, teacher_dtype=a.teacher_dtype, grad_checkpointing=a.grad_checkpointing)
    device = torch.device(a.device)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "config": a.config,
            "torch": torch.__version__, "precision": a.precision, "teacher_dtype": a.teacher_dtype,
            "grad_checkpointing": a.grad_checkpointing, "results": []}
    for side in [int(s) for s in a.latent.split(",")]:
        if a.saved_activations:
            r = saved_activations(config, context_len, side, ex)
        else:
            r = train_steps(config, context_len, side, a.batch, a.steps, ex)
        info["results"].append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
