extension CostModel {
    /// The unit table of `alter inspect MODEL --units --json` (formats/cli-json.md).
    public struct Report: Encodable, Sendable {
        public var latentHeight: Int
        public var latentWidth: Int
        public var contextLength: Int
        public var units: [UnitCost]
        /// The sum over all units.
        public var unitsTotal: Cost
        /// The whole UNet (dense).
        public var total: Cost

        public init(_ cost: CostModel) {
            latentHeight = cost.latentHeight
            latentWidth = cost.latentWidth
            contextLength = cost.contextLength
            units = cost.units
            unitsTotal = cost.unitTotal
            total = cost.total
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case latentHeight = "latent_height", latentWidth = "latent_width", contextLength = "context_length"
            case unitCount = "unit_count", units, unitsTotal = "units_total", total
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(latentHeight, forKey: .latentHeight)
            try c.encode(latentWidth, forKey: .latentWidth)
            try c.encode(contextLength, forKey: .contextLength)
            try c.encode(units.count, forKey: .unitCount)
            try c.encode(units, forKey: .units)
            try c.encode(unitsTotal, forKey: .unitsTotal)
            try c.encode(total, forKey: .total)
        }
    }
}
