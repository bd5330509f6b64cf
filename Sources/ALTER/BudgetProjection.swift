import Experts

/// What happened when the masks froze: the learned noise-free decisions, their projection onto
/// `--keep` (`UnitBudget.project`), and how far the hypernetwork phase moved the decisions
/// (docs/method.md, "Projection onto the budget"). Written to `checkpoint/state.json` and
/// `final/decisions.json` as `budget_projection`.
public struct BudgetProjection: Codable, Sendable, Equatable {
    /// `--keep`, and the tolerance the projection aims within.
    public var target: Double
    public var tolerance: Double
    /// Kept fraction of the untrained hypernetwork's noise-free decisions (step 0).
    public var initialKeptFraction: Double
    /// Kept fraction of the learned noise-free decisions when the masks froze (before the projection).
    public var learnedKeptFraction: Double
    /// Kept fraction of the frozen decisions (after the projection).
    public var keptFraction: Double
    /// (expert, unit) keep flags the projection flipped, of `unitDecisions`.
    public var changedUnitDecisions: Int
    /// (expert, unit) keep flags in which the learned decisions differ from the initial ones.
    public var hypernetChangedUnitDecisions: Int
    public var unitDecisions: Int

    /// The learned decisions' distance from `--keep`, before the projection.
    public var learnedDistance: Double { Swift.abs(learnedKeptFraction - target) }
    /// The frozen decisions' distance from `--keep`.
    public var distance: Double { Swift.abs(keptFraction - target) }
    /// Whether the frozen decisions meet `--keep` within the tolerance (false only when the units
    /// are too coarse for it; `keptFraction` is then the closest fraction the projection found).
    public var withinTolerance: Bool { distance <= tolerance }

    /// The share of the way from the initial kept fraction to the target that the hypernetwork
    /// phase covered: (initial - learned) / (initial - target); 1 when the initial decisions
    /// already met the target within the tolerance. 0: the phase did not move the kept fraction;
    /// negative: it moved away from the target.
    public var hypernetProgress: Double {
        let need = initialKeptFraction - target
        return Swift.abs(need) <= tolerance ? 1 : (initialKeptFraction - learnedKeptFraction) / need
    }

    /// Progress below which the hypernetwork phase "hardly moved" the decisions: the projection,
    /// not the training, then chose most of what is pruned.
    public static let hardlyMovedProgress = 0.5

    /// Whether the hypernetwork phase covered less than `hardlyMovedProgress` of the way to the target.
    public var hardlyMoved: Bool { hypernetProgress < Self.hardlyMovedProgress }

    /// The report of projecting `learned` (the hypernetwork's noise-free decisions at the freeze,
    /// with their keep logits `logits`) onto `keep`; `initial` are the untrained hypernetwork's.
    static func project(_ learned: ExpertDecisions, logits: [[Float]], initial: ExpertDecisions, keep: Double,
                        budget: UnitBudget) -> (decisions: ExpertDecisions, report: BudgetProjection) {
        let p = budget.project(learned, logits: logits, keep: keep)
        let moved = zip(learned.kept, initial.kept).reduce(0) { n, rows in n + zip(rows.0, rows.1).filter { $0 != $1 }.count }
        let report = BudgetProjection(target: keep, tolerance: UnitBudget.tolerance, initialKeptFraction: budget.keptFraction(initial),
                                      learnedKeptFraction: p.inputKeptFraction, keptFraction: p.keptFraction,
                                      changedUnitDecisions: p.changed, hypernetChangedUnitDecisions: moved,
                                      unitDecisions: learned.kept.count * learned.units.count)
        return (p.decisions, report)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case target = "target_kept_mac_fraction", tolerance
        case initialKeptFraction = "initial_kept_mac_fraction", learnedKeptFraction = "learned_kept_mac_fraction"
        case keptFraction = "kept_mac_fraction", changedUnitDecisions = "changed_unit_decision_count"
        case hypernetChangedUnitDecisions = "hypernet_changed_unit_decision_count", unitDecisions = "unit_decision_count"
        case learnedDistance = "learned_distance", distance, withinTolerance = "within_tolerance"
        case hypernetProgress = "hypernet_progress", hardlyMoved = "hypernet_hardly_moved"
    }

    public init(target: Double, tolerance: Double, initialKeptFraction: Double, learnedKeptFraction: Double, keptFraction: Double,
                changedUnitDecisions: Int, hypernetChangedUnitDecisions: Int, unitDecisions: Int) {
        self.target = target
        self.tolerance = tolerance
        self.initialKeptFraction = initialKeptFraction
        self.learnedKeptFraction = learnedKeptFraction
        self.keptFraction = keptFraction
        self.changedUnitDecisions = changedUnitDecisions
        self.hypernetChangedUnitDecisions = hypernetChangedUnitDecisions
        self.unitDecisions = unitDecisions
    }

    /// Reads the stored fields; the derived ones (distances, progress, flags) are recomputed.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(target: try c.decode(Double.self, forKey: .target), tolerance: try c.decode(Double.self, forKey: .tolerance),
                  initialKeptFraction: try c.decode(Double.self, forKey: .initialKeptFraction),
                  learnedKeptFraction: try c.decode(Double.self, forKey: .learnedKeptFraction),
                  keptFraction: try c.decode(Double.self, forKey: .keptFraction),
                  changedUnitDecisions: try c.decode(Int.self, forKey: .changedUnitDecisions),
                  hypernetChangedUnitDecisions: try c.decode(Int.self, forKey: .hypernetChangedUnitDecisions),
                  unitDecisions: try c.decode(Int.self, forKey: .unitDecisions))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(target, forKey: .target)
        try c.encode(tolerance, forKey: .tolerance)
        try c.encode(initialKeptFraction, forKey: .initialKeptFraction)
        try c.encode(learnedKeptFraction, forKey: .learnedKeptFraction)
        try c.encode(keptFraction, forKey: .keptFraction)
        try c.encode(changedUnitDecisions, forKey: .changedUnitDecisions)
        try c.encode(hypernetChangedUnitDecisions, forKey: .hypernetChangedUnitDecisions)
        try c.encode(unitDecisions, forKey: .unitDecisions)
        try c.encode(learnedDistance, forKey: .learnedDistance)
        try c.encode(distance, forKey: .distance)
        try c.encode(withinTolerance, forKey: .withinTolerance)
        try c.encode(hypernetProgress, forKey: .hypernetProgress)
        try c.encode(hardlyMoved, forKey: .hardlyMoved)
    }
}
