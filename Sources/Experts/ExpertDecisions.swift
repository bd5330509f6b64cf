import StableDiffusion

/// Hard pruning and routing decisions: which units each expert keeps and which expert serves
/// each training timestep. The mask table is m[t, l] = kept[route[t]][l].
public struct ExpertDecisions: Codable, Equatable, Sendable {
    /// Unit names in execution order.
    public var units: [String]
    /// kept[e][l]: whether expert e computes unit l.
    public var kept: [[Bool]]
    /// route[t]: the expert of training timestep t.
    public var route: [Int]

    public init(units: [String], kept: [[Bool]], route: [Int]) {
        self.units = units
        self.kept = kept
        self.route = route
    }

    public var experts: Int { kept.count }

    /// Checks that the decisions are self-consistent and within `Bounds`: 1 to
    /// `Bounds.experts` experts (at most one per timestep), one kept flag per unit in every row,
    /// a route of `trainTimesteps` entries (when given: the model's training timesteps; else any
    /// length in `Bounds.trainTimesteps`), and every route entry an expert. Errors name the field
    /// (`kept`, `kept[e]`, `route`, `route[t]`).
    public func validate(trainTimesteps: Int? = nil) throws(ExpertsError) {
        guard !kept.isEmpty else { throw .invalid(field: "kept", "has no experts") }
        guard kept.count <= Bounds.experts.upperBound else {
            throw .invalid(field: "kept", "has \(kept.count) experts, expected at most \(Bounds.experts.upperBound)")
        }
        for (e, row) in kept.enumerated() where row.count != units.count {
            throw .invalid(field: "kept[\(e)]", "has \(row.count) entries for \(units.count) units")
        }
        guard !route.isEmpty else { throw .invalid(field: "route", "is empty") }
        if let trainTimesteps {
            guard route.count == trainTimesteps else {
                throw .invalid(field: "route", "has \(route.count) entries, expected one per training timestep: \(trainTimesteps)")
            }
        } else if !Bounds.trainTimesteps.contains(route.count) {
            throw .invalid(field: "route", "has \(route.count) entries, expected \(Bounds.trainTimesteps.lowerBound)...\(Bounds.trainTimesteps.upperBound)")
        }
        guard kept.count <= route.count else {
            throw .invalid(field: "kept", "has \(kept.count) experts for \(route.count) timesteps (at most one expert per timestep)")
        }
        if let t = route.indices.first(where: { route[$0] < 0 || route[$0] >= kept.count }) {
            throw .invalid(field: "route[\(t)]", "is \(route[t]), not an expert (0..<\(kept.count))")
        }
    }

    /// m[t, l] for every timestep: [T, L] row-major.
    public var table: [Float] {
        route.flatMap { e in kept[e].map { $0 ? Float(1) : 0 } }
    }

    /// Share of timesteps each expert serves.
    public var expertShares: [Double] { RoutingTable.shares(route, experts: experts) }

    /// The units expert `e` computes, in execution order.
    public func keptUnits(expert e: Int) -> [String] { units.indices.filter { kept[e][$0] }.map { units[$0] } }

    /// The units expert `e` does not compute, in execution order.
    public func skippedUnits(expert e: Int) -> [String] { units.indices.filter { !kept[e][$0] }.map { units[$0] } }

    /// The skip set of every expert.
    public var skipSets: [Set<String>] { kept.indices.map { Set(skippedUnits(expert: $0)) } }

    /// Units that no expert keeps.
    public var unitsNoExpertKeeps: Set<String> { Set(units.indices.filter { l in !kept.contains { $0[l] } }.map { units[$0] }) }

    /// The expert that serves a sampler timestep (the routing rule of `RoutingTable`).
    public func expert(forSamplerTimestep t: Float) -> Int {
        route[RoutingTable.trainingTimestep(forSamplerTimestep: t, count: route.count)]
    }
}

/// Decisions or a routing table that do not hold together; `field` names the offending entry.
public enum ExpertsError: Error, CustomStringConvertible, Equatable {
    case invalid(field: String, String)

    public var description: String {
        switch self {
        case .invalid(let field, let why): return "\(field) \(why)"
        }
    }
}
