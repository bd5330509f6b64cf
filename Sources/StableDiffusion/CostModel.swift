/// Exact multiply-accumulate counts of one UNet call per sample, derived from the architecture.
///
/// Counts conv and linear MACs (`convLinear`) and the attention matmuls QK^T and AV
/// (`attention`); normalisations, activations and additions are not counted.
public struct CostModel: Sendable {
    /// MACs of one module or unit.
    public struct Cost: Sendable, Equatable, Encodable {
        public var convLinear: Int = 0
        public var attention: Int = 0
        public var total: Int { convLinear + attention }
        public init(convLinear: Int = 0, attention: Int = 0) {
            self.convLinear = convLinear
            self.attention = attention
        }
        public static func + (a: Cost, b: Cost) -> Cost {
            Cost(convLinear: a.convLinear + b.convLinear, attention: a.attention + b.attention)
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case total = "macs", convLinear = "macs_conv_linear", attention = "macs_attention"
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(total, forKey: .total)
            try c.encode(convLinear, forKey: .convLinear)
            try c.encode(attention, forKey: .attention)
        }
    }

    public struct UnitCost: Sendable, Equatable, Encodable {
        public var name: String
        public var kind: String
        public var cost: Cost

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, kind
        }

        /// The name and kind beside the cost's keys (`macs`, `macs_conv_linear`, `macs_attention`).
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(kind, forKey: .kind)
            try cost.encode(to: encoder)
        }
    }

    public let config: UNetConfig
    public let latentHeight: Int
    public let latentWidth: Int
    public let contextLength: Int
    /// Per-unit costs in execution order.
    public let units: [UnitCost]
    /// The whole UNet.
    public let total: Cost

    /// The cost model at a `latentHeight` x `latentWidth` latent with `contextLength` context tokens.
    public init(config: UNetConfig, latentHeight: Int, latentWidth: Int, contextLength: Int) {
        self.config = config
        self.latentHeight = latentHeight
        self.latentWidth = latentWidth
        self.contextLength = contextLength
        var units: [UnitCost] = []
        var total = Cost()
        let temb = 4 * config.blockOutChannels[0]
        for m in config.modules() {
            let hw = (latentHeight >> m.level) * (latentWidth >> m.level)
            var c = Cost()
            switch m.kind {
            case .convIn(let i, let o), .convOut(let i, let o):
                c.convLinear = o * i * 9 * hw
            case .timeEmbedding(let ch, let d):
                c.convLinear = ch * d + d * d
            case .resnet(let i, let o, let main):
                c.convLinear = o * i * 9 * hw + temb * o + o * o * 9 * hw + (i != o ? o * i * hw : 0)
                if main == o { units.append(UnitCost(name: m.name, kind: "resnet", cost: c)) }
            case .transformer(let ch, _):
                let block = Self.transformerBlock(channels: ch, tokens: hw, context: contextLength, contextDim: config.crossAttentionDim)
                units.append(UnitCost(name: m.name + ".transformer_blocks.0", kind: "transformer", cost: block))
                c = block
                c.convLinear += 2 * ch * ch * hw  // proj_in, proj_out
            case .downsampler(let ch):
                c.convLinear = ch * ch * 9 * (hw / 4)
            case .upsampler(let ch):
                c.convLinear = ch * ch * 9 * (hw * 4)
            }
            total = total + c
        }
        self.units = units
        self.total = total
    }

    /// MACs of one BasicTransformerBlock over `tokens` tokens of `channels`, with `context` tokens of `contextDim`.
    static func transformerBlock(channels c: Int, tokens n: Int, context s: Int, contextDim d: Int) -> Cost {
        var cost = Cost()
        cost.convLinear += 4 * c * c * n             // attn1 q, k, v, out
        cost.attention += 2 * n * n * c              // attn1 QK^T, AV
        cost.convLinear += 2 * c * c * n + 2 * d * c * s  // attn2 q, out; k, v on the context
        cost.attention += 2 * n * s * c              // attn2 QK^T, AV
        cost.convLinear += 12 * c * c * n            // GEGLU c -> 8c, then 4c -> c
        return cost
    }

    /// The sum over all units.
    public var unitTotal: Cost { units.reduce(Cost()) { $0 + $1.cost } }

    /// MACs of one call with the units named in `skipped` not computed: the dense total minus
    /// their costs (names that are not units cost nothing).
    public func cost(skipping skipped: Set<String>) -> Cost {
        var c = total
        for u in units where skipped.contains(u.name) {
            c.convLinear -= u.cost.convLinear
            c.attention -= u.cost.attention
        }
        return c
    }
}
