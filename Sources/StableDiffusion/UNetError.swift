/// A forward request that does not fit the model.
public enum UNetError: Error, CustomStringConvertible, Equatable {
    case notAUnit(String)
    case gateCount(unit: String, expected: Int, actual: Int)
    case gateRange(unit: String)
    case shape(String, expected: String, actual: [Int])
    case absentUnit(String)

    public var description: String {
        switch self {
        case .notAUnit(let n): return "'\(n)' is not a prunable unit of this UNet"
        case .gateCount(let u, let e, let a): return "gate '\(u)' has \(a) values for a batch of \(e)"
        case .gateRange(let u): return "gate '\(u)' has values outside [0, 1]"
        case .shape(let n, let e, let a): return "\(n) has shape \(a), expected \(e)"
        case .absentUnit(let u): return "unit '\(u)' is not stored in this model (every expert skips it) and must be skipped"
        }
    }
}
