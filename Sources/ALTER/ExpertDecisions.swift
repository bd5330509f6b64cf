import StableDiffusion

/// Hard pruning and routing decisions: which units each expert keeps and which expert serves
/// each training timestep. The mask table is m[t, l] = kept[route[t]][l].
public struct ExpertDecisions: Codable, Equatable, Sendable {
    /// Unit names in execution order.
    public var units: [String]
    /// kept[e][l]: whether expert e computes unit l.
    public var kept: [[Bool]]
    /// route[t]: the expert of timestep t.
    public var route: [Int]

    public init(units: [String], kept: [[Bool]], route: [Int]) {
        self.units = units
        self.kept = kept
        self.route = route
    }

    public var experts: Int { kept.count }

    /// m[t, l] for every timestep: [T, L] row-major.
    public var table: [Float] {
        route.flatMap { e in kept[e].map { $0 ? Float(1) : 0 } }
    }

    /// Share of timesteps each expert serves.
    public var expertShares: [Double] {
        var counts = [Int](repeating: 0, count: experts)
        for e in route { counts[e] += 1 }
        return counts.map { Double($0) / Double(max(route.count, 1)) }
    }
}

/// Per-unit MAC shares of a UNet at one latent size: what the ratio loss and every kept-MAC
/// figure are computed from.
public struct UnitBudget: Sendable, Equatable {
    /// c_l / total MACs, per unit in execution order.
    public let share: [Double]
    /// The fraction of MACs outside every unit (always computed).
    public let fixedShare: Double
    public let totalMACs: Int

    /// Shares from the exact cost model (conv, linear and attention matmul MACs).
    public init(cost: CostModel) {
        let total = Double(cost.total.total)
        share = cost.units.map { Double($0.cost.total) / total }
        fixedShare = 1 - share.reduce(0, +)
        totalMACs = cost.total.total
    }

    /// The kept fraction of total MACs, averaged over the table's timesteps.
    public func keptFraction(_ d: ExpertDecisions) -> Double {
        let perExpert = d.kept.map { k in zip(k, share).reduce(0) { $0 + ($1.0 ? $1.1 : 0) } }
        let mean = d.route.reduce(0) { $0 + perExpert[$1] } / Double(max(d.route.count, 1))
        return fixedShare + mean
    }

    /// The kept fraction of total MACs of one expert.
    public func keptFraction(expert kept: [Bool]) -> Double {
        fixedShare + zip(kept, share).reduce(0) { $0 + ($1.0 ? $1.1 : 0) }
    }
}
