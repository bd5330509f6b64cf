/// The timestep-to-expert rule: one place that says which training timestep a sampler timestep is
/// routed by and how a routing table is summarised, for in-memory decisions and bundles alike.
public enum RoutingTable {
    /// The training timestep a (possibly fractional) sampler timestep is routed by: the nearest
    /// integer, clamped to 0 ..< `count`.
    public static func trainingTimestep(forSamplerTimestep t: Float, count: Int) -> Int {
        precondition(count >= 1, "RoutingTable: an empty routing table")
        guard t.isFinite else { return t > 0 ? count - 1 : 0 }
        let r = t.rounded()
        if r <= 0 { return 0 }
        if r >= Float(count - 1) { return count - 1 }
        return Int(r)
    }

    /// Share of the table's timesteps each of `experts` experts serves (entries outside
    /// 0 ..< experts are not counted).
    public static func shares(_ route: [Int], experts: Int) -> [Double] {
        var counts = [Int](repeating: 0, count: experts)
        for e in route where e >= 0 && e < experts { counts[e] += 1 }
        return counts.map { Double($0) / Double(max(route.count, 1)) }
    }

    /// The timesteps routed to `expert`, as inclusive ranges [first, last] in increasing order.
    public static func ranges(_ route: [Int], expert: Int) -> [[Int]] {
        ranges(route.indices.filter { route[$0] == expert })
    }

    /// The number of contiguous segments of each of `experts` experts: maximal runs of consecutive
    /// timesteps that expert serves (an expert serving no timestep has 0). Their sum is the number
    /// of segments of the whole table.
    public static func segments(_ route: [Int], experts: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: experts)
        for (t, e) in route.enumerated() where e >= 0 && e < experts && (t == 0 || route[t - 1] != e) { counts[e] += 1 }
        return counts
    }

    /// Sorted timesteps as inclusive ranges [first, last].
    public static func ranges(_ timesteps: [Int]) -> [[Int]] {
        var out: [[Int]] = []
        for t in timesteps {
            if let last = out.last, last[1] + 1 == t { out[out.count - 1][1] = t } else { out.append([t, t]) }
        }
        return out
    }
}
