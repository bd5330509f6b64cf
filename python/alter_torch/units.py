"""ALTER's prunable units on a diffusers `UNet2DConditionModel`, their gates and the feature taps.

The unit list is alter's (`UNetConfig.units()`, docs/method.md section 2): every
BasicTransformerBlock, and every ResnetBlock2D whose main-path input channels equal its output
channels (for up-block resnets, the channels before the skip concat), in execution order.

Gate semantics are `alter forward --gates` (README): a gated unit's output is
`(1 - m) * input + m * unit(input)` per sample; for an up-block resnet the input is the hidden
state before the skip concat; for a transformer unit only the BasicTransformerBlock is blended.
A skipped unit is not computed: its output is its input.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch

SKIP = "skip"


@dataclass(frozen=True)
class Unit:
    name: str
    kind: str  # "resnet" or "transformer"
    main_in: int  # main-path input channels (resnets)


def unit_list(config) -> list[Unit]:
    """The units of a UNet config (diffusers `config`), in alter's order (`UNetConfig+Modules.swift`)."""
    out = list(config.block_out_channels)
    levels = len(out)
    layers = config.layers_per_block
    units: list[Unit] = []
    ch = out[0]
    for i, kind in enumerate(config.down_block_types):
        o = out[i]
        for j in range(layers):
            in_ch = ch if j == 0 else o
            if in_ch == o:
                units.append(Unit(f"down_blocks.{i}.resnets.{j}", "resnet", in_ch))
            if "CrossAttn" in kind:
                units.append(Unit(f"down_blocks.{i}.attentions.{j}.transformer_blocks.0", "transformer", o))
        ch = o
    cm = out[-1]
    units.append(Unit("mid_block.resnets.0", "resnet", cm))
    units.append(Unit("mid_block.attentions.0.transformer_blocks.0", "transformer", cm))
    units.append(Unit("mid_block.resnets.1", "resnet", cm))
    rev = list(reversed(out))
    out_ch = rev[0]
    for i, kind in enumerate(config.up_block_types):
        prev = out_ch
        out_ch = rev[i]
        for j in range(layers + 1):
            main = prev if j == 0 else out_ch
            if main == out_ch:
                units.append(Unit(f"up_blocks.{i}.resnets.{j}", "resnet", main))
            if "CrossAttn" in kind:
                units.append(Unit(f"up_blocks.{i}.attentions.{j}.transformer_blocks.0", "transformer", out_ch))
    return units


def feature_names(config) -> list[str]:
    levels = len(config.block_out_channels)
    return [f"down_blocks.{i}" for i in range(levels)] + ["mid_block"] + [f"up_blocks.{i}" for i in range(levels)]


class GatedUNet:
    """Wraps a diffusers UNet so that each call can gate or skip units and tap block outputs.

    `gates`: unit name -> [B] tensor of values in [0, 1] (may carry gradients), or `SKIP`.
    Units not named run plainly.
    """

    def __init__(self, unet):
        self.unet = unet
        self.units = unit_list(unet.config)
        self.features = feature_names(unet.config)
        self._gates: dict = {}
        self._taps: dict | None = None
        for u in self.units:
            module = unet.get_submodule(u.name)
            module.forward = types.MethodType(self._gated_forward(u, module.forward), module)
        for name in self.features:
            unet.get_submodule(name).register_forward_hook(self._tap(name))

    def _gated_forward(self, unit: Unit, original):
        ctl = self

        if unit.kind == "resnet":
            def forward(module, input_tensor, temb, *args, **kwargs):
                g = ctl._gates.get(unit.name)
                main = input_tensor[:, : unit.main_in] if input_tensor.shape[1] != unit.main_in else input_tensor
                if g is SKIP:
                    return main
                y = original(input_tensor, temb, *args, **kwargs)
                if g is None:
                    return y
                m = g.view(-1, 1, 1, 1)
                return (1 - m) * main + m * y
        else:
            def forward(module, hidden_states, *args, **kwargs):
                g = ctl._gates.get(unit.name)
                if g is SKIP:
                    return hidden_states
                y = original(hidden_states, *args, **kwargs)
                if g is None:
                    return y
                m = g.view(-1, *([1] * (hidden_states.dim() - 1)))
                return (1 - m) * hidden_states + m * y
        return forward

    def _tap(self, name):
        def hook(module, inputs, output):
            if self._taps is not None:
                self._taps[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def __call__(self, sample, timesteps, context, gates=None, tap_features=False):
        """Returns (output [B,C,H,W], [(feature name, tensor)] in alter's order if `tap_features`)."""
        names = {u.name for u in self.units}
        for k in (gates or {}):
            if k not in names:
                raise KeyError(f"{k} is not a unit of this UNet")
        # The gates stay set until the next call: with gradient checkpointing the backward
        # recomputes the units' forwards, which must see this call's gates.
        self._gates = dict(gates or {})
        self._taps = {} if tap_features else None
        try:
            out = self.unet(sample, timesteps, encoder_hidden_states=context, return_dict=False)[0]
            feats = [(n, self._taps[n]) for n in self.features] if tap_features else []
        finally:
            self._taps = None
        return out, feats


def load_unet(path: str, dtype=torch.float32, config_path: str | None = None):
    """A diffusers UNet folder (what `alter convert MODEL --layout diffusers -o DIR` writes), or an
    original single-file SD2.x checkpoint (`.safetensors`, `model.diffusion_model.*`) with the
    diffusers config.json `config_path`, in `dtype`."""
    import os

    from diffusers import UNet2DConditionModel

    if os.path.isfile(path):
        from .original import OriginalCheckpointError, is_original, load_original_unet

        if not is_original(path):
            raise OriginalCheckpointError(f"{path}: no tensor under model.diffusion_model.; expected a diffusers UNet folder "
                                          "or an original single-file checkpoint")
        if config_path is None:
            raise OriginalCheckpointError(f"{path}: an original checkpoint needs --config (a diffusers UNet config.json)")
        return load_original_unet(path, config_path, dtype)
    unet = UNet2DConditionModel.from_pretrained(path, torch_dtype=dtype)
    unet.eval()
    return unet
