import NN
import TensorCore

/// diffusers' VAE `Encoder`: conv_in, one level per `block_out_channels` entry (resnets, then a
/// downsampler except at the last level), the mid block, group norm + SiLU, conv_out to 2 *
/// latent channels (mean and log-variance).
public struct VAEEncoder {
    /// One `DownEncoderBlock2D`.
    public struct Level {
        public let resnets: [ResnetBlock]
        /// diffusers' `Downsample2D` (padding 0): zero padding right and bottom by one, then a
        /// 3x3 stride-2 convolution; nil at the last level.
        public let downsampler: Conv2dLayer?
    }

    public let convIn: Conv2dLayer
    public let levels: [Level]
    public let mid: VAEMidBlock
    public let normOut: GroupNormLayer
    public let convOut: Conv2dLayer

    init(_ s: some ParameterSource, config c: VAEConfig) throws {
        let ch = c.blockOutChannels, g = c.normNumGroups, e = VAEKeys.encoder
        convIn = try Conv2dLayer(s, e + "." + VAEKeys.convIn, in: c.inChannels, out: ch[0], kernel: 3, padding: 1)
        levels = try ch.indices.map { i in
            let p = VAEKeys.down(i)
            let resnets = try (0..<c.layersPerBlock).map { j in
                try ResnetBlock(s, VAEKeys.resnet(p, j), in: j == 0 ? ch[max(i - 1, 0)] : ch[i], out: ch[i], temb: nil, groups: g, eps: 1e-6)
            }
            let down = i < ch.count - 1 ? try Conv2dLayer(s, p + "." + VAEKeys.downsampler, in: ch[i], out: ch[i], kernel: 3, stride: 2) : nil
            return Level(resnets: resnets, downsampler: down)
        }
        mid = try VAEMidBlock(s, side: e, channels: ch[ch.count - 1], groups: g, attention: c.midBlockAddAttention)
        normOut = try GroupNormLayer(s, e + "." + VAEKeys.convNormOut, channels: ch[ch.count - 1], groups: g, eps: 1e-6)
        convOut = try Conv2dLayer(s, e + "." + VAEKeys.convOut, in: ch[ch.count - 1], out: 2 * c.latentChannels, kernel: 3, padding: 1)
    }

    /// x: [N, in, H, W] -> [N, 2L, H/f, W/f] (f = 2^(levels-1)), before quant_conv.
    func callAsFunction(_ x: Var, on tape: Tape) -> Var {
        var h = convIn(x, on: tape)
        for level in levels {
            for r in level.resnets { h = r(h, on: tape) }
            if let d = level.downsampler { h = d(tape.pad2d(h, bottom: 1, right: 1), on: tape) }
        }
        h = mid(h, on: tape)
        return convOut(normOut(h, on: tape, silu: true), on: tape)
    }

    public var parameters: [Parameter] {
        convIn.parameters + levels.flatMap { $0.resnets.flatMap(\.parameters) + ($0.downsampler?.parameters ?? []) }
            + mid.parameters + normOut.parameters + convOut.parameters
    }
}
