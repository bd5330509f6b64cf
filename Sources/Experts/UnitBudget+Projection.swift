extension UnitBudget {
    /// How far from `--keep` an exported run's kept MAC fraction may be (absolute, in fractions
    /// of the dense MACs averaged over the routing table, as `keptFraction(_:)` counts them).
    public static let tolerance = 0.01

    /// Decisions moved onto a MAC budget, and where they were before (docs/method.md,
    /// "Projection onto the budget").
    public struct Projection: Sendable, Equatable {
        /// The projected decisions (the routing is the input's).
        public var decisions: ExpertDecisions
        /// Kept fraction of the decisions before and after the projection.
        public var inputKeptFraction: Double, keptFraction: Double
        /// Number of (expert, unit) keep flags the projection flipped.
        public var changed: Int
    }

    /// Moves `d` onto the budget `keep` (a kept fraction of total MACs averaged over `d.route`,
    /// the ratio loss's target) by the ranking of `logits` ([expert][unit], higher = keep first).
    ///
    /// Decisions already within `tolerance` are returned unchanged. Otherwise every (expert,
    /// unit) pair of an expert that serves a timestep is weighted by its MAC share times the
    /// expert's share of timesteps, and taken in the order of decreasing logit (ties: lower expert,
    /// then lower unit): (1) a pair is kept if the kept fraction stays at most `keep`; (2) if that
    /// ends below `keep - tolerance`, the pairs left out are taken again in the same order, each
    /// kept if the fraction stays at most `keep + tolerance`; (3) if it is still outside the
    /// tolerance (every pair left out is coarser than twice the tolerance), a subset-sum search
    /// (`closestSubset`) picks the pairs whose masses come closest to the target, preferring
    /// high logits, and replaces the result of (1) and (2) if it is closer. Decisions
    /// that end no closer to `keep` than the input are not taken (the input is returned). Experts that serve no timestep do not count and are left
    /// as they are. Deterministic: no randomness, one fixed order.
    public func project(_ d: ExpertDecisions, logits: [[Float]], keep: Double, tolerance: Double = UnitBudget.tolerance) -> Projection {
        precondition(logits.count == d.kept.count && zip(logits, d.kept).allSatisfy { $0.count == $1.count },
                     "UnitBudget.project: one logit per decision")
        precondition(share.count == d.units.count, "UnitBudget.project: one share per unit")
        let before = keptFraction(d)
        guard Swift.abs(before - keep) > tolerance else {
            return Projection(decisions: d, inputKeptFraction: before, keptFraction: before, changed: 0)
        }
        let weight = d.expertShares
        struct Pair { var e: Int, l: Int, logit: Float, mass: Double }
        var pairs: [Pair] = []
        for e in d.kept.indices where weight[e] > 0 {
            for l in d.units.indices { pairs.append(Pair(e: e, l: l, logit: logits[e][l], mass: weight[e] * share[l])) }
        }
        pairs.sort { $0.logit != $1.logit ? $0.logit > $1.logit : ($0.e != $1.e ? $0.e < $1.e : $0.l < $1.l) }

        // The caps sit a hair inside the tolerance, so that rounding in the sums cannot step outside it.
        let upper = keep + tolerance * (1 - 1e-9), lower = keep - tolerance * (1 - 1e-9)
        var kept = d.kept
        for p in pairs { kept[p.e][p.l] = false }
        var inSet = [Bool](repeating: false, count: pairs.count)
        var fraction = fixedShare
        for (i, p) in pairs.enumerated() where fraction + p.mass <= keep {
            inSet[i] = true
            fraction += p.mass
        }
        if fraction < lower {
            for (i, p) in pairs.enumerated() where !inSet[i] && fraction + p.mass <= upper {
                inSet[i] = true
                fraction += p.mass
            }
        }
        if fraction < lower || fraction > upper, let found = Self.closestSubset(pairs.map(\.mass), target: keep - fixedShare, tolerance: tolerance),
           Swift.abs(fixedShare + found.sum - keep) < Swift.abs(fraction - keep) {
            inSet = found.chosen
        }
        for (i, p) in pairs.enumerated() where inSet[i] { kept[p.e][p.l] = true }
        let projected = ExpertDecisions(units: d.units, kept: kept, route: d.route)
        let after = keptFraction(projected)
        guard Swift.abs(after - keep) < Swift.abs(before - keep) else {
            return Projection(decisions: d, inputKeptFraction: before, keptFraction: before, changed: 0)
        }
        let changed = zip(kept, d.kept).reduce(0) { n, rows in n + zip(rows.0, rows.1).filter { $0 != $1 }.count }
        return Projection(decisions: projected, inputKeptFraction: before, keptFraction: after, changed: changed)
    }

    /// The subset of `masses` (in the projection's logit order) whose sum comes closest to
    /// `target` at the resolution of the search: a 0/1 knapsack over masses rounded to bins of `tolerance / count` (at most 2^22
    /// bins), so a sum within `tolerance / 2` in bins is within `tolerance` exactly. Each bin is
    /// reached first through the earliest mass that can reach it, so the subset leans on the
    /// highest logits. Nil when there are no masses.
    static func closestSubset(_ masses: [Double], target: Double, tolerance: Double) -> (chosen: [Bool], sum: Double)? {
        guard !masses.isEmpty else { return nil }
        let total = masses.reduce(0, +)
        let width = max(tolerance / Double(masses.count), total / Double(1 << 22))
        let bins = masses.map { Int(($0 / width).rounded()) }
        let capacity = bins.reduce(0, +)
        var via = [Int32](repeating: -1, count: capacity + 1)
        var reach = [Bool](repeating: false, count: capacity + 1)
        reach[0] = true
        var top = 0
        for (k, w) in bins.enumerated() where w > 0 {
            for b in stride(from: top, through: 0, by: -1) where reach[b] && !reach[b + w] {
                reach[b + w] = true
                via[b + w] = Int32(k)
            }
            top += w
        }
        let goal = target / width
        var best = 0
        for b in 0...capacity where reach[b] && Swift.abs(Double(b) - goal) < Swift.abs(Double(best) - goal) { best = b }
        var chosen = [Bool](repeating: false, count: masses.count)
        var b = best
        while b > 0 {
            let k = Int(via[b])
            chosen[k] = true
            b -= bins[k]
        }
        return (chosen, zip(chosen, masses).reduce(0) { $0 + ($1.0 ? $1.1 : 0) })
    }
}
