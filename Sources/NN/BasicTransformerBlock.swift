import TensorCore

/// diffusers' `BasicTransformerBlock` (pre-norm): self-attention, cross-attention over a
/// context, and a GEGLU feed-forward of 4x the width, each added to its input.
public struct BasicTransformerBlock {
    public let norm1: LayerNormLayer, attn1: AttentionLayer
    public let norm2: LayerNormLayer, attn2: AttentionLayer
    public let norm3: LayerNormLayer, ffIn: LinearLayer, ffOut: LinearLayer

    /// Reads the block's parameters under prefix `p`: `attn1`, `attn2` (q/k/v without biases),
    /// `ff.net.0.proj` and `ff.net.2`.
    public init(_ s: some ParameterSource, _ p: String, dim: Int, contextDim: Int, heads: Int, eps: Float) throws {
        norm1 = try LayerNormLayer(s, p + ".norm1", channels: dim, eps: eps)
        attn1 = try AttentionLayer(s, p + ".attn1", dim: dim, heads: heads)
        norm2 = try LayerNormLayer(s, p + ".norm2", channels: dim, eps: eps)
        attn2 = try AttentionLayer(s, p + ".attn2", dim: dim, contextDim: contextDim, heads: heads)
        norm3 = try LayerNormLayer(s, p + ".norm3", channels: dim, eps: eps)
        ffIn = try LinearLayer(s, p + ".ff.net.0.proj", in: dim, out: 8 * dim)
        ffOut = try LinearLayer(s, p + ".ff.net.2", in: 4 * dim, out: dim)
    }

    /// x: [N, S, dim], context: [N, M, contextDim] -> [N, S, dim].
    public func callAsFunction(_ x: Var, context: Var, on tape: Tape) -> Var {
        var h = tape.add(attn1(norm1(x, on: tape), on: tape), x)
        h = tape.add(attn2(norm2(h, on: tape), context: context, on: tape), h)
        return tape.add(ffOut(tape.geglu(ffIn(norm3(h, on: tape), on: tape)), on: tape), h)
    }

    public var parameters: [Parameter] {
        norm1.parameters + attn1.parameters + norm2.parameters + attn2.parameters + norm3.parameters
            + ffIn.parameters + ffOut.parameters
    }
}
