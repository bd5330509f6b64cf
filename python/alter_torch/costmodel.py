"""alter's cost model (`Sources/StableDiffusion/CostModel.swift`, `UNetConfig+Modules.swift`) and
the units' MAC shares (`Sources/Experts/UnitBudget.swift`): exact multiply-accumulate counts of
one UNet call per sample (conv and linear MACs, and the attention matmuls QK^T and AV;
normalisations, activations and additions not counted), from a diffusers UNet config."""

from __future__ import annotations

from dataclasses import dataclass


def _get(config, key):
    return config[key] if isinstance(config, dict) else getattr(config, key)


@dataclass(frozen=True)
class Module:
    name: str
    kind: str  # conv_in, time_embedding, resnet, transformer, downsampler, upsampler, conv_out
    level: int
    channels_in: int = 0
    channels_out: int = 0
    main_in: int = 0


def modules(config) -> list[Module]:
    """Every module that holds parameters, in execution order (`UNetConfig.modules()`)."""
    out_ch = list(_get(config, "block_out_channels"))
    levels = len(out_ch)
    layers = _get(config, "layers_per_block")
    c0 = out_ch[0]
    ms = [Module("conv_in", "conv_in", 0, _get(config, "in_channels"), c0),
          Module("time_embedding", "time_embedding", 0, c0, 4 * c0)]
    ch = c0
    for i, kind in enumerate(_get(config, "down_block_types")):
        o = out_ch[i]
        for j in range(layers):
            in_ch = ch if j == 0 else o
            ms.append(Module(f"down_blocks.{i}.resnets.{j}", "resnet", i, in_ch, o, in_ch))
            if "CrossAttn" in kind:
                ms.append(Module(f"down_blocks.{i}.attentions.{j}", "transformer", i, o, o))
        if i < levels - 1:
            ms.append(Module(f"down_blocks.{i}.downsamplers.0", "downsampler", i, o, o))
        ch = o
    cm, deepest = out_ch[-1], levels - 1
    ms.append(Module("mid_block.resnets.0", "resnet", deepest, cm, cm, cm))
    ms.append(Module("mid_block.attentions.0", "transformer", deepest, cm, cm))
    ms.append(Module("mid_block.resnets.1", "resnet", deepest, cm, cm, cm))
    rev = list(reversed(out_ch))
    o = rev[0]
    for i, kind in enumerate(_get(config, "up_block_types")):
        prev, o = o, rev[i]
        in_ch = rev[min(i + 1, levels - 1)]
        level = levels - 1 - i
        for j in range(layers + 1):
            skip = in_ch if j == layers else o
            main = prev if j == 0 else o
            ms.append(Module(f"up_blocks.{i}.resnets.{j}", "resnet", level, main + skip, o, main))
            if "CrossAttn" in kind:
                ms.append(Module(f"up_blocks.{i}.attentions.{j}", "transformer", level, o, o))
        if i < levels - 1:
            ms.append(Module(f"up_blocks.{i}.upsamplers.0", "upsampler", level, o, o))
    ms.append(Module("conv_out", "conv_out", 0, c0, _get(config, "out_channels")))
    return ms


@dataclass(frozen=True)
class Cost:
    conv_linear: int = 0
    attention: int = 0

    @property
    def total(self) -> int:
        return self.conv_linear + self.attention


def transformer_block(c: int, n: int, s: int, d: int) -> Cost:
    """One BasicTransformerBlock over n tokens of c channels, with s context tokens of d."""
    return Cost(conv_linear=4 * c * c * n + 2 * c * c * n + 2 * d * c * s + 12 * c * c * n,
                attention=2 * n * n * c + 2 * n * s * c)


class CostModel:
    """MACs per sample of one UNet call at a latent of `height` x `width` with `context` tokens.
    `units`: [(name, kind, Cost)] in execution order (alter's unit list); `total`: the whole UNet."""

    def __init__(self, config, height: int, width: int, context: int):
        multiple = 1 << (len(_get(config, "block_out_channels")) - 1)
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(f"latent {height}x{width}: each side must be a positive multiple of {multiple}")
        self.height, self.width, self.context = height, width, context
        temb = 4 * _get(config, "block_out_channels")[0]
        d = _get(config, "cross_attention_dim")
        units, conv_linear, attention = [], 0, 0
        for m in modules(config):
            hw = (height >> m.level) * (width >> m.level)
            c = Cost()
            if m.kind in ("conv_in", "conv_out"):
                c = Cost(m.channels_out * m.channels_in * 9 * hw)
            elif m.kind == "time_embedding":
                c = Cost(m.channels_in * m.channels_out + m.channels_out * m.channels_out)
            elif m.kind == "resnet":
                i, o = m.channels_in, m.channels_out
                c = Cost(o * i * 9 * hw + temb * o + o * o * 9 * hw + (o * i * hw if i != o else 0))
                if m.main_in == o:
                    units.append((m.name, "resnet", c))
            elif m.kind == "transformer":
                block = transformer_block(m.channels_out, hw, context, d)
                units.append((m.name + ".transformer_blocks.0", "transformer", block))
                c = Cost(block.conv_linear + 2 * m.channels_out * m.channels_out * hw, block.attention)
            elif m.kind == "downsampler":
                c = Cost(m.channels_out * m.channels_out * 9 * (hw // 4))
            elif m.kind == "upsampler":
                c = Cost(m.channels_out * m.channels_out * 9 * hw * 4)
            conv_linear += c.conv_linear
            attention += c.attention
        self.units = units
        self.total = Cost(conv_linear, attention)

    @property
    def unit_names(self) -> list[str]:
        return [u[0] for u in self.units]

    def shares(self) -> tuple[list[float], float]:
        """`UnitBudget(cost:)`: each unit's share of the dense MACs, and the fixed share
        1 - sum (summed left to right, as alter does)."""
        total = float(self.total.total)
        share = [float(c.total) / total for _, _, c in self.units]
        s = 0.0
        for x in share:
            s += x
        return share, 1 - s
