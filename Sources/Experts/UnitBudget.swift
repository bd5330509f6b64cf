import StableDiffusion

/// Per-unit MAC shares of a UNet at one latent size: what the ratio loss and every kept-MAC
/// figure are computed from.
public struct UnitBudget: Sendable, Equatable {
    /// c_l / total MACs, per unit in execution order.
    public let share: [Double]
    /// The fraction of MACs outside every unit (always computed).
    public let fixedShare: Double
    /// MACs of the dense model per sample and call.
    public let totalMACs: Int

    /// Shares from the exact cost model (conv, linear and attention matmul MACs).
    public init(cost: CostModel) {
        let total = Double(cost.total.total)
        share = cost.units.map { Double($0.cost.total) / total }
        fixedShare = 1 - share.reduce(0, +)
        totalMACs = cost.total.total
    }

    /// Shares given directly (studies and tests): `share` per unit, the rest of `totalMACs` fixed.
    public init(share: [Double], totalMACs: Int) {
        precondition(share.allSatisfy { $0 >= 0 } && share.reduce(0, +) <= 1 + 1e-12, "UnitBudget: shares must be non-negative and sum to at most 1")
        self.share = share
        fixedShare = 1 - share.reduce(0, +)
        self.totalMACs = totalMACs
    }

    /// The kept fraction of total MACs, averaged over the table's timesteps.
    public func keptFraction(_ d: ExpertDecisions) -> Double {
        let perExpert = d.kept.map { keptUnitShare($0) }
        let mean = d.route.reduce(0) { $0 + perExpert[$1] } / Double(max(d.route.count, 1))
        return fixedShare + mean
    }

    /// The kept fraction of total MACs of one expert.
    public func keptFraction(expert kept: [Bool]) -> Double { fixedShare + keptUnitShare(kept) }

    private func keptUnitShare(_ kept: [Bool]) -> Double { zip(kept, share).reduce(0) { $0 + ($1.0 ? $1.1 : 0) } }
}
