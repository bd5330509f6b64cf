import TensorCore

/// diffusers' `ResnetBlock2D` with the default time-embedding norm:
/// (shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb)))))) / outputScale.
/// Blocks without a time embedding (the VAE's) have no `time_emb_proj` and skip the addition; the
/// shortcut is a 1x1 convolution when the channel count changes, else the identity.
public struct ResnetBlock {
    public let norm1: GroupNormLayer, conv1: Conv2dLayer
    /// The time-embedding projection; nil for a block without a time embedding.
    public let timeEmbProj: LinearLayer?
    public let norm2: GroupNormLayer, conv2: Conv2dLayer
    public let shortcut: Conv2dLayer?
    public let outputScale: Float

    /// Reads the block's parameters under prefix `p`. `temb`: the time embedding's width, or nil
    /// for a block without one.
    public init(_ s: some ParameterSource, _ p: String, in i: Int, out o: Int, temb: Int?, groups: Int, eps: Float,
                outputScale: Float = 1) throws {
        norm1 = try GroupNormLayer(s, p + ".norm1", channels: i, groups: groups, eps: eps)
        conv1 = try Conv2dLayer(s, p + ".conv1", in: i, out: o, kernel: 3, padding: 1)
        timeEmbProj = try temb.map { try LinearLayer(s, p + ".time_emb_proj", in: $0, out: o) }
        norm2 = try GroupNormLayer(s, p + ".norm2", channels: o, groups: groups, eps: eps)
        conv2 = try Conv2dLayer(s, p + ".conv2", in: o, out: o, kernel: 3, padding: 1)
        shortcut = i != o ? try Conv2dLayer(s, p + ".conv_shortcut", in: i, out: o, kernel: 1) : nil
        self.outputScale = outputScale
    }

    /// x: [N, Cin, H, W], tembSiLU: silu(temb) [N, T] -> [N, Cout, H, W]. The block must have a
    /// time-embedding projection.
    public func callAsFunction(_ x: Var, tembSiLU: Var, on tape: Tape) -> Var {
        precondition(timeEmbProj != nil, "ResnetBlock: a time embedding for a block without time_emb_proj")
        return apply(x, tembSiLU: tembSiLU, on: tape)
    }

    /// x: [N, Cin, H, W] -> [N, Cout, H, W], for a block without a time embedding.
    public func callAsFunction(_ x: Var, on tape: Tape) -> Var {
        precondition(timeEmbProj == nil, "ResnetBlock: no time embedding for a block with time_emb_proj")
        return apply(x, tembSiLU: nil, on: tape)
    }

    private func apply(_ x: Var, tembSiLU: Var?, on tape: Tape) -> Var {
        var h = conv1(norm1(x, on: tape, silu: true), on: tape)
        if let timeEmbProj, let tembSiLU { h = tape.addPerChannel(h, timeEmbProj(tembSiLU, on: tape)) }
        h = conv2(norm2(h, on: tape, silu: true), on: tape)
        let residual = shortcut.map { $0(x, on: tape) } ?? x
        let y = tape.add(residual, h)
        return outputScale == 1 ? y : tape.scale(y, 1 / outputScale)
    }

    public var parameters: [Parameter] {
        norm1.parameters + conv1.parameters + (timeEmbProj?.parameters ?? []) + norm2.parameters + conv2.parameters
            + (shortcut?.parameters ?? [])
    }
}
