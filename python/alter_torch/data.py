"""The training-data file (formats/training-data.md), read by memory map: only the samples of
each batch are read and converted to float32, so a rank of a distributed run reads only its own
rows of a file larger than memory."""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}
HEADER_LIMIT = 100 << 20


class TrainingDataError(ValueError):
    pass


def _float32(values: np.ndarray, dtype: str) -> torch.Tensor:
    """F32/F16 values, or BF16 bit patterns (uint16), as a float32 tensor."""
    if dtype == "BF16":
        return torch.from_numpy((values.astype(np.uint32) << 16).view(np.float32))
    return torch.from_numpy(values.astype(np.float32))


class TrainingData:
    """`latents` [N, C, H, W] and `context` [N, S, D], F32, F16 or BF16, mapped, not loaded;
    `uncond` [S, D] (or None) read as float32."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise TrainingDataError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > HEADER_LIMIT:
                raise TrainingDataError(f"{path}: header length {n} exceeds the {HEADER_LIMIT}-byte limit; this is not a safetensors file")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise TrainingDataError(f"{path}: header is not JSON ({e})") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        if self.metadata.get("format", "alter.training-data") != "alter.training-data":
            raise TrainingDataError(f"{path}: __metadata__ 'format' is '{self.metadata['format']}'; expected 'alter.training-data'")
        if self.metadata.get("format_version", "1") != "1":
            raise TrainingDataError(f"{path}: __metadata__ 'format_version' is '{self.metadata['format_version']}'; expected '1'")
        for name in header:
            if name not in ("latents", "context", "uncond") and not name.startswith("extra."):
                raise TrainingDataError(f"{path}: unexpected tensor '{name}'; a training-data file holds 'latents', 'context' and optionally 'uncond'")
        self._arrays = {}
        for name, rank in (("latents", 4), ("context", 3)):
            if name not in header:
                raise TrainingDataError(f"{path}: no tensor '{name}'")
            self._arrays[name] = self._map(name, header[name], 8 + n, lambda shape: len(shape) == rank and 0 not in shape,
                                           f"rank {rank} with no zero dimension")
        self.uncond = None
        if "uncond" in header:
            s_d = list(self.context_shape[1:])
            arr, dtype = self._map("uncond", header["uncond"], 8 + n, lambda shape: shape == s_d, f"[S, D] = {s_d}")
            self.uncond = _float32(np.asarray(arr), dtype)
            if not torch.isfinite(self.uncond).all():
                raise TrainingDataError(f"{path}: tensor 'uncond' holds a non-finite value")
        if self.latents_shape[0] != self.context_shape[0]:
            raise TrainingDataError(f"{path}: tensor 'context' holds {self.context_shape[0]} samples but 'latents' holds {self.latents_shape[0]}")

    @property
    def latents_shape(self) -> tuple[int, ...]:
        return self._arrays["latents"][0].shape

    @property
    def context_shape(self) -> tuple[int, ...]:
        return self._arrays["context"][0].shape

    @property
    def count(self) -> int:
        return self.latents_shape[0]

    def _map(self, name: str, info: dict, data_start: int, shape_ok, expected: str):
        """The tensor `name` mapped from the file, after checking its dtype, shape and byte count."""
        if info["dtype"] not in _DTYPES:
            raise TrainingDataError(f"{self.path}: tensor '{name}' has dtype {info['dtype']}; training data must be F32, F16 or BF16")
        shape = [int(x) for x in info["shape"]]
        if not shape_ok(shape):
            raise TrainingDataError(f"{self.path}: tensor '{name}' has shape {shape}; expected {expected}")
        np_dtype, size = _DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        if end - begin != int(np.prod(shape)) * size:
            raise TrainingDataError(f"{self.path}: tensor '{name}' has {end - begin} bytes, expected {int(np.prod(shape)) * size} for {shape}")
        return np.memmap(self.path, dtype=np_dtype, mode="r", offset=data_start + begin, shape=tuple(shape)), info["dtype"]

    def _rows(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        arr, dtype = self._arrays[name]
        return _float32(np.stack([np.asarray(arr[i]) for i in indices.tolist()]), dtype)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents [B, C, H, W], context [B, S, D]) of the samples `indices`, float32."""
        x, c = self._rows("latents", indices), self._rows("context", indices)
        if not (torch.isfinite(x).all() and torch.isfinite(c).all()):
            raise TrainingDataError(f"{self.path}: a sample of {indices.tolist()} holds a non-finite value")
        return x, c

    def validate(self, unet_config) -> None:
        _, c, h, w = self.latents_shape
        if c != unet_config.in_channels:
            raise TrainingDataError(f"{self.path}: tensor 'latents' has shape {list(self.latents_shape)}; the model takes {unet_config.in_channels} latent channels")
        m = 1 << (len(unet_config.block_out_channels) - 1)
        if h % m or w % m:
            raise TrainingDataError(f"{self.path}: tensor 'latents' has shape {list(self.latents_shape)}; H and W must be multiples of {m}")
        if self.context_shape[2] != unet_config.cross_attention_dim:
            raise TrainingDataError(f"{self.path}: tensor 'context' has shape {list(self.context_shape)}; the model's cross-attention takes D = {unet_config.cross_attention_dim}")
