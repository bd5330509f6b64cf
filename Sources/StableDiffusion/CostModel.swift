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

    /// The cost model at a `latentHeight` x `latentWidth` latent with `contextLength` context
    /// tokens. The sizes are checked first (`LatentSize`: errors name `latent_height`,
    /// `latent_width`, `context_length`); every count is computed with checked arithmetic, so
    /// sizes whose MACs do not fit in an `Int` are an error naming `macs`, never a trap.
    public init(config: UNetConfig, latentHeight: Int, latentWidth: Int, contextLength: Int) throws(SizeError) {
        let size = try LatentSize(height: latentHeight, width: latentWidth, contextLength: contextLength, config: config)
        self.config = config
        self.latentHeight = size.height
        self.latentWidth = size.width
        self.contextLength = size.contextLength
        var units: [UnitCost] = []
        var total = Cost()
        let temb = 4 * config.blockOutChannels[0]
        let where_ = "at a \(latentHeight)x\(latentWidth) latent with \(contextLength) context tokens"
        for m in config.modules() {
            do throws(SizeError) {
                func p(_ f: Int...) throws(SizeError) -> Int {
                    var r = 1
                    for x in f { r = try Bounds.product(r, x, field: "macs") }
                    return r
                }
                func s(_ t: Int...) throws(SizeError) -> Int { try Bounds.sum(t, field: "macs") }
                let hw = (latentHeight >> m.level) * (latentWidth >> m.level)  // <= 4096^2
                var c = Cost()
                switch m.kind {
                case .convIn(let i, let o), .convOut(let i, let o):
                    c.convLinear = try p(o, i, 9, hw)
                case .timeEmbedding(let ch, let d):
                    c.convLinear = try s(p(ch, d), p(d, d))
                case .resnet(let i, let o, let main):
                    c.convLinear = try s(p(o, i, 9, hw), p(temb, o), p(o, o, 9, hw), i != o ? p(o, i, hw) : 0)
                    if main == o { units.append(UnitCost(name: m.name, kind: "resnet", cost: c)) }
                case .transformer(let ch, _):
                    let block = try Self.transformerBlock(channels: ch, tokens: hw, context: contextLength, contextDim: config.crossAttentionDim)
                    units.append(UnitCost(name: m.name + ".transformer_blocks.0", kind: "transformer", cost: block))
                    c = block
                    c.convLinear = try s(c.convLinear, p(2, ch, ch, hw))  // proj_in, proj_out
                case .downsampler(let ch):
                    c.convLinear = try p(ch, ch, 9, hw / 4)
                case .upsampler(let ch):
                    c.convLinear = try p(ch, ch, 9, hw, 4)
                }
                total = Cost(convLinear: try s(total.convLinear, c.convLinear), attention: try s(total.attention, c.attention))
                _ = try s(total.convLinear, total.attention)
            } catch {
                throw SizeError(field: "macs", "of \(m.name) and the modules before it overflow a 64-bit integer \(where_); use a smaller latent or context")
            }
        }
        self.units = units
        self.total = total
    }

    /// MACs of one BasicTransformerBlock over `tokens` tokens of `channels`, with `context` tokens of `contextDim`.
    static func transformerBlock(channels c: Int, tokens n: Int, context s: Int, contextDim d: Int) throws(SizeError) -> Cost {
        func p(_ f: Int...) throws(SizeError) -> Int {
            var r = 1
            for x in f { r = try Bounds.product(r, x, field: "macs") }
            return r
        }
        var cost = Cost()
        cost.convLinear = try Bounds.sum([
            p(4, c, c, n),              // attn1 q, k, v, out
            p(2, c, c, n), p(2, d, c, s),  // attn2 q, out; k, v on the context
            p(12, c, c, n),             // GEGLU c -> 8c, then 4c -> c
        ], field: "macs")
        cost.attention = try Bounds.sum([
            p(2, n, n, c),              // attn1 QK^T, AV
            p(2, n, s, c),              // attn2 QK^T, AV
        ], field: "macs")
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
