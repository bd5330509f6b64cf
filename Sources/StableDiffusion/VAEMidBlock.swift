import NN
import TensorCore

/// diffusers' `UNetMidBlock2D` as the VAE uses it: a resnet, a single-head self-attention over the
/// H*W positions (group norm, q/k/v/out with biases, residual), and another resnet; no time
/// embedding. Group norms use eps 1e-6.
public struct VAEMidBlock {
    public let resnet0: ResnetBlock, resnet1: ResnetBlock
    /// The attention's group norm and projections; nil without `mid_block_add_attention`.
    public let attentionNorm: GroupNormLayer?, attention: AttentionLayer?

    /// Reads the block under `side` (`encoder` or `decoder`).
    init(_ s: some ParameterSource, side: String, channels c: Int, groups: Int, attention hasAttention: Bool) throws {
        resnet0 = try ResnetBlock(s, VAEKeys.midResnet(side, 0), in: c, out: c, temb: nil, groups: groups, eps: 1e-6)
        if hasAttention {
            let p = side + "." + VAEKeys.midAttention
            attentionNorm = try GroupNormLayer(s, p + "." + VAEKeys.attentionNorm, channels: c, groups: groups, eps: 1e-6)
            attention = try AttentionLayer(s, p, dim: c, heads: 1, qkvBias: true)
        } else {
            (attentionNorm, attention) = (nil, nil)
        }
        resnet1 = try ResnetBlock(s, VAEKeys.midResnet(side, 1), in: c, out: c, temb: nil, groups: groups, eps: 1e-6)
    }

    /// x: [N, C, H, W] -> [N, C, H, W].
    func callAsFunction(_ x: Var, on tape: Tape) -> Var {
        var h = resnet0(x, on: tape)
        if let attentionNorm, let attention {
            let (height, width) = (h.shape[2], h.shape[3])
            let tokens = tape.channelsLast(attentionNorm(h, on: tape))                       // [N, H*W, C]
            h = tape.add(tape.channelsFirst(attention(tokens, on: tape), height: height, width: width), h)
        }
        return resnet1(h, on: tape)
    }

    public var parameters: [Parameter] {
        resnet0.parameters + (attentionNorm?.parameters ?? []) + (attention?.parameters ?? []) + resnet1.parameters
    }
}
