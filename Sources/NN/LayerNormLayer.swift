import TensorCore

/// Layer normalisation over the last axis with a learned affine transform.
public struct LayerNormLayer {
    public let weight: Parameter
    public let bias: Parameter
    public let eps: Float

    public init(_ source: some ParameterSource, _ prefix: String, channels: Int, eps: Float) throws {
        weight = try source.parameter(prefix + ".weight", shape: [channels])
        bias = try source.parameter(prefix + ".bias", shape: [channels])
        self.eps = eps
    }

    public var parameters: [Parameter] { [weight, bias] }

    /// x: [..., C] -> same shape.
    public func callAsFunction(_ x: Var, on tape: Tape) -> Var {
        tape.layerNorm(x, weight: tape.parameter(weight), bias: tape.parameter(bias), eps: eps)
    }
}
