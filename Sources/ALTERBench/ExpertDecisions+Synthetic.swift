import Experts
import StableDiffusion
import TensorCore

extension ExpertDecisions {
    /// Synthetic decisions for benchmarks: `experts` experts serving equal intervals of
    /// `trainTimesteps` timesteps (expert 0 the lowest), whose kept fractions of the dense MACs (at
    /// `cost`'s size) rise linearly from keep - spread to keep + spread (mean over the timesteps:
    /// about `keep`). Each expert skips units in a seeded random order, each taken while its skipped
    /// MACs stay within its target, so it keeps a little more than its target.
    public static func synthetic(cost: CostModel, experts: Int, keep: Double, spread: Double = 0.1,
                                 trainTimesteps: Int = 1000, seed: UInt64 = 1) -> ExpertDecisions {
        precondition(experts >= 1 && trainTimesteps >= experts, "ExpertDecisions.synthetic: experts")
        let units = cost.units
        let total = Double(cost.total.total)
        var rng = SeededGenerator(seed: seed)
        var kept: [[Bool]] = []
        for e in 0..<experts {
            let target = experts == 1 ? keep : keep - spread + 2 * spread * Double(e) / Double(experts - 1)
            let budget = (1 - target) * total
            var order = Array(units.indices)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.index(i + 1)) }
            var k = [Bool](repeating: true, count: units.count), skipped = 0.0
            for l in order where skipped + Double(units[l].cost.total) <= budget {
                k[l] = false
                skipped += Double(units[l].cost.total)
            }
            kept.append(k)
        }
        let route = (0..<trainTimesteps).map { min($0 * experts / trainTimesteps, experts - 1) }
        return ExpertDecisions(units: units.map(\.name), kept: kept, route: route)
    }
}
