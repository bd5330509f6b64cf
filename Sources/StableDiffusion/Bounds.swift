/// The bounds alter puts on every number it reads from a file or an argument, before using it.
///
/// One place for the numbers: `UNetConfig.validate` (architecture), `LatentSize` (latent sizes
/// and context lengths: the cost model, sampling, verify's probes), `ExpertDecisions.validate`
/// and the bundle reader (timesteps, experts, byte counts) and the CLI's argument checks all quote
/// these constants. formats/bundle.md ("Bounds") lists them.
public enum Bounds {
    /// Resolution levels of a UNet (entries of `block_out_channels`).
    public static let levels = 1...8
    /// Channels of one block (`block_out_channels[i]`) and `cross_attention_dim`.
    public static let channels = 1...8192
    /// `in_channels` and `out_channels` (latent channels).
    public static let latentChannels = 1...64
    /// `layers_per_block`.
    public static let layersPerBlock = 1...16
    /// Attention heads of a block and `norm_num_groups` (each must also divide its channels).
    public static let heads = 1...1024
    public static let normGroups = 1...1024
    /// `freq_shift` of the timestep embedding.
    public static let freqShift = 0...1
    /// `downsample_padding`: the only value the SD family (and this implementation) uses.
    public static let downsamplePadding = 1...1
    /// One side of a latent (`sample_size`, `latent_height`, `latent_width`, `--latent`), in latent
    /// pixels: 4096 is a 32768-pixel image side at the VAE's factor 8. A side must also be a
    /// multiple of 2^(levels-1) (`LatentSize`).
    public static let latentSide = 1...4096
    /// Context tokens (`context_length`, `--context`).
    public static let contextLength = 1...4096
    /// Training timesteps of a noise schedule or routing table (`num_train_timesteps`, `train_timesteps`).
    public static let trainTimesteps = 2...100_000
    /// Experts of decisions or a bundle (and at most one per training timestep).
    public static let experts = 1...1024
    /// Bytes of one file a manifest lists (1 PiB).
    public static let fileBytes = 0...(1 << 50)

    /// Throws unless `value` lies in `range`, naming `field`.
    public static func check(_ value: Int, in range: ClosedRange<Int>, field: String) throws(SizeError) {
        guard range.contains(value) else { throw SizeError(field: field, "is \(value), expected \(range.lowerBound)...\(range.upperBound)") }
    }

    /// The product of `factors`, or an error naming `field` when it does not fit in an `Int`.
    public static func product(_ factors: Int..., field: String) throws(SizeError) -> Int {
        var p = 1
        for f in factors {
            let (r, overflow) = p.multipliedReportingOverflow(by: f)
            guard !overflow else { throw SizeError(field: field, "overflows a 64-bit integer (\(factors.map(String.init).joined(separator: " x ")))") }
            p = r
        }
        return p
    }

    /// The sum of `terms`, or an error naming `field` when it does not fit in an `Int`.
    public static func sum(_ terms: some Sequence<Int>, field: String) throws(SizeError) -> Int {
        var s = 0
        for t in terms {
            let (r, overflow) = s.addingReportingOverflow(t)
            guard !overflow else { throw SizeError(field: field, "overflows a 64-bit integer when summed") }
            s = r
        }
        return s
    }
}

/// A number from a file or an argument outside its bounds (`Bounds`), or a count computed from
/// such numbers that does not fit in an `Int`. `field` is the file key (`latent_height`,
/// `layers_per_block`, `macs.latent_height`, `files[1].bytes`); the CLI maps keys to its flags.
public struct SizeError: Error, CustomStringConvertible, Equatable, Sendable {
    public var field: String
    /// What is wrong: the value and what was expected.
    public var message: String

    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    /// The field in backticks, then the message.
    public var description: String { "`\(field)` \(message)" }

    /// The same error with its field inside the object `parent` (`macs` + `latent_height`:
    /// `macs.latent_height`).
    public func nested(in parent: String) -> SizeError { SizeError(field: parent + "." + field, message) }
}

/// A latent size and context length checked against the architecture and `Bounds`: height and
/// width positive multiples of 2^(levels-1) (each level but the last halves them) up to
/// `Bounds.latentSide`, the context length in `Bounds.contextLength`. Every latent size read from
/// a file or an argument passes through here before anything is allocated or counted.
public struct LatentSize: Equatable, Sendable {
    public let height: Int
    public let width: Int
    public let contextLength: Int

    /// Checks the sizes for `config`; errors name `latent_height`, `latent_width` or `context_length`.
    public init(height: Int, width: Int, contextLength: Int, config: UNetConfig) throws(SizeError) {
        let multiple = Self.multiple(levels: config.levels)
        try Self.checkSide(height, field: "latent_height", multiple: multiple)
        try Self.checkSide(width, field: "latent_width", multiple: multiple)
        try Bounds.check(contextLength, in: Bounds.contextLength, field: "context_length")
        self.height = height
        self.width = width
        self.contextLength = contextLength
    }

    /// 2^(levels-1): what a latent side of a UNet with `levels` levels must be a multiple of.
    public static func multiple(levels: Int) -> Int {
        1 << min(max(levels - 1, 0), Bounds.levels.upperBound - 1)
    }

    /// Throws unless `side` is a positive multiple of `multiple` in `Bounds.latentSide`, naming `field`.
    public static func checkSide(_ side: Int, field: String, multiple: Int) throws(SizeError) {
        let r = Bounds.latentSide
        guard r.contains(side), side % multiple == 0 else {
            throw SizeError(field: field, "is \(side), expected a positive multiple of \(multiple) up to \(r.upperBound)")
        }
    }
}
