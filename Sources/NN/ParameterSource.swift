import TensorCore

/// Supplies a model's parameters by canonical name and expected shape.
public protocol ParameterSource {
    /// The tensor called `name`, which must have `shape`; throws when it cannot be supplied.
    func tensor(_ name: String, shape: [Int]) throws -> Tensor
}

extension ParameterSource {
    /// The tensor called `name` as a trainable parameter of that name.
    public func parameter(_ name: String, shape: [Int]) throws -> Parameter {
        Parameter(name: name, value: try tensor(name, shape: shape))
    }
}

/// Parameters held in memory by name.
public struct ParameterDictionary: ParameterSource {
    public var tensors: [String: Tensor]
    public init(_ tensors: [String: Tensor] = [:]) { self.tensors = tensors }

    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let t = tensors[name] else { throw ParameterError.missing(name) }
        guard t.shape == shape else { throw ParameterError.shape(name, expected: shape, actual: t.shape) }
        return t
    }
}

/// A parameter that could not be supplied.
public enum ParameterError: Error, CustomStringConvertible {
    case missing(String)
    case shape(String, expected: [Int], actual: [Int])

    public var description: String {
        switch self {
        case .missing(let n): return "parameter '\(n)' is missing"
        case .shape(let n, let e, let a): return "parameter '\(n)' has shape \(a), expected \(e)"
        }
    }
}

/// Deterministic random parameters (for benchmarks and tests): weights uniform in
/// ±1/sqrt(fan-in), 1-D tensors (norm scales, biases) near 1 and 0.
public struct RandomParameters: ParameterSource {
    public var seed: UInt64
    public init(seed: UInt64) { self.seed = seed }

    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        var rng = SeededGenerator(seed: seed, stream: name)
        let t = Tensor(uninitialized: shape)
        let fanIn = shape.count > 1 ? shape.dropFirst().reduce(1, *) : 1
        let bound = shape.count > 1 ? 1 / Float(fanIn).squareRoot() : 0.1
        let offset: Float = shape.count == 1 && name.hasSuffix(".weight") ? 1 : 0
        for i in 0..<t.count {
            let u = Float(rng.next() >> 40) / Float(1 << 24)
            t.data[i] = offset + (2 * u - 1) * bound
        }
        return t
    }
}
