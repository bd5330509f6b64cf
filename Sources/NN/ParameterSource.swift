import TensorCore

/// Supplies a model's parameters by canonical name and expected shape.
public protocol ParameterSource {
    /// The tensor called `name`, which must have `shape`; throws when it cannot be supplied.
    func tensor(_ name: String, shape: [Int]) throws -> Tensor
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
