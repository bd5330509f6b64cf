import TensorCore

/// Group normalisation with a learned affine transform.
public struct GroupNormLayer {
    public let weight: Parameter
    public let bias: Parameter
    public let groups: Int
    public let eps: Float

    public init(_ source: some ParameterSource, _ prefix: String, channels: Int, groups: Int, eps: Float) throws {
        weight = try source.parameter(prefix + ".weight", shape: [channels])
        bias = try source.parameter(prefix + ".bias", shape: [channels])
        self.groups = groups
        self.eps = eps
    }

    public var parameters: [Parameter] { [weight, bias] }

    /// x: [N, C, ...] -> same shape; with `silu`, followed by SiLU.
    public func callAsFunction(_ x: Var, on tape: Tape, silu: Bool = false) -> Var {
        tape.groupNorm(x, weight: tape.parameter(weight), bias: tape.parameter(bias), groups: groups, eps: eps, silu: silu)
    }
}
