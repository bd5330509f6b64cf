import NN
import TensorCore

/// diffusers' VAE `Decoder`: conv_in from the latent channels, the mid block, one level per
/// `block_out_channels` entry in reverse (layers_per_block + 1 resnets, then a nearest-2x
/// upsampler with a 3x3 convolution except at the last level), group norm + SiLU, conv_out.
public struct VAEDecoder {
    /// One `UpDecoderBlock2D`.
    public struct Level {
        public let resnets: [ResnetBlock]
        /// The convolution after nearest-neighbour 2x upsampling; nil at the last level.
        public let upsampler: Conv2dLayer?
    }

    public let convIn: Conv2dLayer
    public let mid: VAEMidBlock
    public let levels: [Level]
    public let normOut: GroupNormLayer
    public let convOut: Conv2dLayer

    init(_ s: some ParameterSource, config c: VAEConfig) throws {
        let ch = c.blockOutChannels, g = c.normNumGroups, d = VAEKeys.decoder
        let reversed = Array(ch.reversed())
        convIn = try Conv2dLayer(s, d + "." + VAEKeys.convIn, in: c.latentChannels, out: reversed[0], kernel: 3, padding: 1)
        mid = try VAEMidBlock(s, side: d, channels: reversed[0], groups: g, attention: c.midBlockAddAttention)
        levels = try reversed.indices.map { i in
            let p = VAEKeys.up(i)
            let resnets = try (0...c.layersPerBlock).map { j in
                try ResnetBlock(s, VAEKeys.resnet(p, j), in: j == 0 ? reversed[max(i - 1, 0)] : reversed[i], out: reversed[i],
                                temb: nil, groups: g, eps: 1e-6)
            }
            let up = i < ch.count - 1 ? try Conv2dLayer(s, p + "." + VAEKeys.upsampler, in: reversed[i], out: reversed[i], kernel: 3, padding: 1) : nil
            return Level(resnets: resnets, upsampler: up)
        }
        normOut = try GroupNormLayer(s, d + "." + VAEKeys.convNormOut, channels: ch[0], groups: g, eps: 1e-6)
        convOut = try Conv2dLayer(s, d + "." + VAEKeys.convOut, in: ch[0], out: c.outChannels, kernel: 3, padding: 1)
    }

    /// z: [N, L, h, w] (after post_quant_conv) -> [N, out, h*f, w*f] (f = 2^(levels-1)).
    func callAsFunction(_ z: Var, on tape: Tape) -> Var {
        var h = mid(convIn(z, on: tape), on: tape)
        for level in levels {
            for r in level.resnets { h = r(h, on: tape) }
            if let u = level.upsampler { h = u(tape.upsample2x(h), on: tape) }
        }
        return convOut(normOut(h, on: tape, silu: true), on: tape)
    }

    public var parameters: [Parameter] {
        convIn.parameters + mid.parameters + levels.flatMap { $0.resnets.flatMap(\.parameters) + ($0.upsampler?.parameters ?? []) }
            + normOut.parameters + convOut.parameters
    }
}
