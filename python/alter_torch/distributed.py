"""Data parallelism over processes (`torchrun`): the gradient average of DDP, done explicitly
after each backward (bucketed all-reduce), because the trainer's two optimisers, its UNet step
with per-sample skipped units and its hypernetwork step through the frozen UNet do not fit
`DistributedDataParallel`'s one-module-one-backward contract. Gloo on CPUs, NCCL on GPUs."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

BUCKET = 1 << 24  # elements per all-reduce


class Group:
    """The process group of this run (a single process when not launched by torchrun)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.comm_device = device if device.type == "cuda" else torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params: list[torch.nn.Parameter]):
        """Every parameter's gradient becomes the mean over the ranks. A parameter that has no
        gradient on some rank (a unit no sample of that rank computed) counts as 0 there; one
        that has none on every rank keeps none (alter's AdamW then leaves it alone)."""
        if not self.distributed:
            return
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.comm_device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        live = [p for p, h in zip(params, has.tolist()) if h > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.nn.Parameter] = []
        size = 0
        for p in live + [None]:
            if p is not None:
                bucket.append(p)
                size += p.numel()
            if bucket and (p is None or size >= BUCKET):
                flat = torch.cat([q.grad.reshape(-1).to(self.comm_device) for q in bucket])
                dist.all_reduce(flat)
                flat /= self.world
                offset = 0
                for q in bucket:
                    n = q.numel()
                    q.grad.copy_(flat[offset:offset + n].view_as(q.grad))
                    offset += n
                bucket, size = [], 0

    def mean(self, values: list[float]) -> list[float]:
        """The mean over the ranks of each value (None stays None)."""
        if not self.distributed:
            return values
        t = torch.tensor([0.0 if v is None else v for v in values], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return [None if v is None else float(x) / self.world for v, x in zip(values, t.tolist())]

    def any(self, flag: bool) -> bool:
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def close(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
