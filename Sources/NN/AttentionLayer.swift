import TensorCore

/// diffusers' `Attention`: q/k/v projections (with biases or without), multi-head scaled
/// dot-product attention over the input itself or over a context, with an optional mask, and an
/// output projection with bias.
public struct AttentionLayer {
    /// The module names of the four projections under the layer's prefix.
    public struct Names: Sendable, Equatable {
        public var q: String, k: String, v: String, out: String
        public init(q: String, k: String, v: String, out: String) {
            (self.q, self.k, self.v, self.out) = (q, k, v, out)
        }

        /// diffusers' `to_q`, `to_k`, `to_v`, `to_out.0`.
        public static let diffusers = Names(q: "to_q", k: "to_k", v: "to_v", out: "to_out.0")
        /// transformers' CLIP attention: `q_proj`, `k_proj`, `v_proj`, `out_proj`.
        public static let clip = Names(q: "q_proj", k: "k_proj", v: "v_proj", out: "out_proj")
    }

    public let toQ: LinearLayer, toK: LinearLayer, toV: LinearLayer, toOut: LinearLayer
    public let heads: Int

    /// Reads the projections under prefix `p`. `contextDim`: the width of the context keys and
    /// values come from (nil: `dim`, for self-attention); `qkvBias`: whether q/k/v have biases.
    public init(_ s: some ParameterSource, _ p: String, dim: Int, contextDim: Int? = nil, heads: Int, qkvBias: Bool = false,
                names: Names = .diffusers) throws {
        let contextDim = contextDim ?? dim
        toQ = try LinearLayer(s, p + "." + names.q, in: dim, out: dim, bias: qkvBias)
        toK = try LinearLayer(s, p + "." + names.k, in: contextDim, out: dim, bias: qkvBias)
        toV = try LinearLayer(s, p + "." + names.v, in: contextDim, out: dim, bias: qkvBias)
        toOut = try LinearLayer(s, p + "." + names.out, in: dim, out: dim)
        self.heads = heads
    }

    /// x: [N, S, dim], context: [N, M, contextDim] (nil: attention over x itself) -> [N, S, dim].
    /// `mask` says which keys each query attends to (see `AttentionMask`).
    public func callAsFunction(_ x: Var, context: Var? = nil, mask: AttentionMask? = nil, on tape: Tape) -> Var {
        let context = context ?? x
        let a = tape.attention(q: toQ(x, on: tape), k: toK(context, on: tape), v: toV(context, on: tape), heads: heads, mask: mask)
        return toOut(a, on: tape)
    }

    public var parameters: [Parameter] { toQ.parameters + toK.parameters + toV.parameters + toOut.parameters }
}
