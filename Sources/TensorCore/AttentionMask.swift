/// Which keys each query of an attention may attend to. Masked keys get exactly zero probability;
/// every query must keep at least one key (a fully masked row is a programmer error).
public struct AttentionMask: Sendable, Equatable, CustomStringConvertible {
    /// The keys each sample offers.
    public enum Keys: Sendable, Equatable {
        /// Every key.
        case all
        /// Sample b offers its first `lengths[b]` keys (the rest is padding); one length per sample.
        case lengths([Int])
        /// Sample b offers key j where `flags[b * M + j]`; [B, M] row-major.
        case flags([Bool])
    }

    /// Query i attends only to keys j <= i (a text encoder's causal mask).
    public var causal: Bool
    public var keys: Keys

    public init(causal: Bool = false, keys: Keys = .all) {
        self.causal = causal
        self.keys = keys
    }

    /// The causal mask alone.
    public static let causal = AttentionMask(causal: true)

    /// Sample b attends to its first `lengths[b]` keys.
    public static func keyLengths(_ lengths: [Int]) -> AttentionMask { AttentionMask(keys: .lengths(lengths)) }

    /// Sample b attends to key j where `flags[b * M + j]`.
    public static func keyFlags(_ flags: [Bool]) -> AttentionMask { AttentionMask(keys: .flags(flags)) }

    public var description: String {
        let parts: [String?] = [causal ? "causal" : nil, {
            switch keys {
            case .all: return nil
            case .lengths(let l): return "key lengths \(l)"
            case .flags(let f): return "key flags " + String(f.map { $0 ? "1" : "0" })
            }
        }()]
        let named = parts.compactMap { $0 }
        return named.isEmpty ? "no mask" : named.joined(separator: ", ")
    }

    /// Whether query `query` of sample `sample` attends to key `key` of `m`.
    public func attends(sample: Int, query: Int, key: Int, keys m: Int) -> Bool {
        if causal && key > query { return false }
        switch keys {
        case .all: return true
        case .lengths(let l): return key < l[sample]
        case .flags(let f): return f[sample * m + key]
        }
    }

    /// Checks the mask against the attention's sizes and that no query loses every key (with the
    /// causal mask, query 0 keeps key 0 only).
    func validate(batch b: Int, keys m: Int, _ kernel: String) {
        switch keys {
        case .all:
            precondition(m > 0, "\(kernel): no keys")
        case .lengths(let l):
            precondition(l.count == b, "\(kernel): \(l.count) key lengths for a batch of \(b)")
            precondition(l.allSatisfy { (1...m).contains($0) }, "\(kernel): key lengths \(l) outside 1...\(m) (a fully masked row)")
        case .flags(let f):
            precondition(f.count == b * m, "\(kernel): \(f.count) key flags for [\(b), \(m)] keys")
            for s in 0..<b {
                let offered = causal ? f[s * m] : f[(s * m)..<((s + 1) * m)].contains(true)
                precondition(offered, "\(kernel): sample \(s) leaves a query without keys (a fully masked row)")
            }
        }
    }

    /// Sets the scores of the keys that query `query` of sample `sample` may not attend to
    /// -infinity, in a row of `m` scores.
    func fill(_ row: UnsafeMutablePointer<Float>, keys m: Int, sample: Int, query: Int) {
        var end = causal ? min(m, query + 1) : m
        switch keys {
        case .all: break
        case .lengths(let l): end = min(end, l[sample])
        case .flags(let f):
            let base = sample * m
            for j in 0..<end where !f[base + j] { row[j] = -.infinity }
        }
        if end < m { (row + end).update(repeating: -.infinity, count: m - end) }
    }
}
