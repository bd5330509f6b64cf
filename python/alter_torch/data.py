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


class TrainingData:
    """`latents` [N, C, H, W] and `context` [N, S, D], F32, F16 or BF16, mapped, not loaded."""

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
            info = header[name]
            if info["dtype"] not in _DTYPES:
                raise TrainingDataError(f"{path}: tensor '{name}' has dtype {info['dtype']}; training data must be F32, F16 or BF16")
            shape = [int(x) for x in info["shape"]]
            if len(shape) != rank or 0 in shape:
                raise TrainingDataError(f"{path}: tensor '{name}' has shape {shape}; expected rank {rank} with no zero dimension")
            np_dtype, size = _DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            if end - begin != int(np.prod(shape)) * size:
                raise TrainingDataError(f"{path}: tensor '{name}' has {end - begin} bytes, expected {int(np.prod(shape)) * size} for {shape}")
            arr = np.memmap(path, dtype=np_dtype, mode="r", offset=8 + n + begin, shape=tuple(shape))
            self._arrays[name] = (arr, info["dtype"])
        self.uncond = None
        if "uncond" in header:
            info = header["uncond"]
            if info["dtype"] not in _DTYPES:
                raise TrainingDataError(f"{path}: tensor 'uncond' has dtype {info['dtype']}; training data must be F32, F16 or BF16")
            shape = [int(x) for x in info["shape"]]
            if shape != list(self.context_shape[1:]):
                raise TrainingDataError(f"{path}: tensor 'uncond' has shape {shape}; expected [S, D] = {list(self.context_shape[1:])}")
            np_dtype, size = _DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            if end - begin != int(np.prod(shape)) * size:
                raise TrainingDataError(f"{path}: tensor 'uncond' has {end - begin} bytes, expected {int(np.prod(shape)) * size} for {shape}")
            arr = np.asarray(np.memmap(path, dtype=np_dtype, mode="r", offset=8 + n + begin, shape=tuple(shape)))
            u = torch.from_numpy((arr.astype(np.uint32) << 16).view(np.float32)) if info["dtype"] == "BF16" else torch.from_numpy(arr.astype(np.float32))
            if not torch.isfinite(u).all():
                raise TrainingDataError(f"{path}: tensor 'uncond' holds a non-finite value")
            self.uncond = u
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

    def _rows(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        arr, dtype = self._arrays[name]
        rows = np.stack([np.asarray(arr[i]) for i in indices.tolist()])
        if dtype == "BF16":
            return torch.from_numpy((rows.astype(np.uint32) << 16).view(np.float32))
        return torch.from_numpy(rows.astype(np.float32))

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
