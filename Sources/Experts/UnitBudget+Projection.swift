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
    /// tolerance (every pair left out is coarser than twice the tolerance), each pair left out, in
    /// the same order, is tried in an exchange: it is kept, kept pairs are dropped from the lowest
    /// logit up until the fraction is at most `keep + tolerance`, and pairs left out are kept again
    /// in logit order while the fraction is below `keep - tolerance` and stays within the bound; the
    /// first exchange within the tolerance is taken, or else the closest decisions seen. Decisions
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
        if fraction < lower || fraction > upper {
            var best = (distance: Swift.abs(fraction - keep), set: inSet)
            for j in pairs.indices where !inSet[j] {
                var trial = inSet, f = fraction + pairs[j].mass
                trial[j] = true
                for i in pairs.indices.reversed() where f > upper && trial[i] && i != j {
                    trial[i] = false
                    f -= pairs[i].mass
                }
                for i in pairs.indices where !trial[i] && f + pairs[i].mass <= upper && f < lower {
                    trial[i] = true
                    f += pairs[i].mass
                }
                if Swift.abs(f - keep) < best.distance { best = (Swift.abs(f - keep), trial) }
                if f >= lower && f <= upper { break }
            }
            inSet = best.set
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
}
