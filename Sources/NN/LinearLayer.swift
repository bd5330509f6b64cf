import TensorCore

/// A fully connected layer, y = x W^T + b.
public struct LinearLayer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ source: some ParameterSource, _ prefix: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true) throws {
        weight = try source.parameter(prefix + ".weight", shape: [outFeatures, inFeatures])
        self.bias = bias ? try source.parameter(prefix + ".bias", shape: [outFeatures]) : nil
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }
    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    /// x: [..., in] -> [..., out].
    public func callAsFunction(_ x: Var, on tape: Tape) -> Var {
        tape.linear(x, weight: tape.parameter(weight), bias: bias.map(tape.parameter))
    }
}
