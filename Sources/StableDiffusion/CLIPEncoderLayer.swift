import NN
import TensorCore

/// transformers' `CLIPEncoderLayer` (pre-LN): causal self-attention with q/k/v/out biases, then an
/// MLP (fc1 -> activation -> fc2), each added to its input.
public struct CLIPEncoderLayer {
    public let layerNorm1: LayerNormLayer, selfAttention: AttentionLayer
    public let layerNorm2: LayerNormLayer, fc1: LinearLayer, fc2: LinearLayer
    public let activation: CLIPActivation

    /// Reads the layer's parameters under prefix `p` (transformers names).
    public init(_ s: some ParameterSource, _ p: String, config c: CLIPTextConfig) throws {
        let eps = Float(c.layerNormEps)
        layerNorm1 = try LayerNormLayer(s, p + "." + CLIPTextKeys.layerNorm1, channels: c.hiddenSize, eps: eps)
        selfAttention = try AttentionLayer(s, p + "." + CLIPTextKeys.selfAttention, dim: c.hiddenSize, heads: c.numAttentionHeads,
                                           qkvBias: true, names: .clip)
        layerNorm2 = try LayerNormLayer(s, p + "." + CLIPTextKeys.layerNorm2, channels: c.hiddenSize, eps: eps)
        fc1 = try LinearLayer(s, p + "." + CLIPTextKeys.fc1, in: c.hiddenSize, out: c.intermediateSize)
        fc2 = try LinearLayer(s, p + "." + CLIPTextKeys.fc2, in: c.intermediateSize, out: c.hiddenSize)
        activation = c.hiddenAct
    }

    /// x: [B, S, D] -> [B, S, D]; query i attends to tokens 0...i.
    public func callAsFunction(_ x: Var, on tape: Tape) -> Var {
        let h = tape.add(selfAttention(layerNorm1(x, on: tape), mask: .causal, on: tape), x)
        let m = fc1(layerNorm2(h, on: tape), on: tape)                        // [B, S, I]
        let a: Var
        switch activation {
        case .gelu: a = tape.gelu(m)
        case .quickGELU: a = tape.multiply(m, tape.sigmoid(tape.scale(m, 1.702)))   // x * sigmoid(1.702 x)
        }
        return tape.add(fc2(a, on: tape), h)
    }

    public var parameters: [Parameter] {
        layerNorm1.parameters + selfAttention.parameters + layerNorm2.parameters + fc1.parameters + fc2.parameters
    }
}
