import Foundation
import SafeTensors

/// The architecture of a VAE: diffusers' `AutoencoderKL` fields that change its outputs. The
/// defaults are SD2.1's (`stabilityai/stable-diffusion-2-1` `vae/config.json`).
///
/// Every level is a `DownEncoderBlock2D` / `UpDecoderBlock2D` with SiLU; the encoder has
/// `layersPerBlock` resnets per level, the decoder one more; the mid blocks hold one single-head
/// attention (when `midBlockAddAttention`). Group norms use eps 1e-6.
public struct VAEConfig: Sendable, Equatable {
    public var inChannels = 3
    public var outChannels = 3
    public var blockOutChannels = [128, 256, 512, 512]
    public var layersPerBlock = 2
    public var latentChannels = 4
    public var normNumGroups = 32
    /// `sample_size`: the image side the model was trained at (not used by the computation).
    public var sampleSize = 768
    /// Latents for the UNet are the VAE's latents times this; decode divides by it first.
    public var scalingFactor = 0.18215
    public var useQuantConv = true
    public var usePostQuantConv = true
    public var midBlockAddAttention = true

    public init() {}

    /// SD2.1's VAE.
    public static let sd21 = VAEConfig()

    /// Resolution levels (entries of `block_out_channels`).
    public var levels: Int { blockOutChannels.count }
    /// Image pixels per latent pixel along one side: 2^(levels-1).
    public var downsamplingFactor: Int { 1 << (levels - 1) }

    static let blockType = (down: "DownEncoderBlock2D", up: "UpDecoderBlock2D")
    static let className = "AutoencoderKL"

    /// Reads a diffusers `AutoencoderKL` `config.json` (a pipeline's `vae/config.json`) through
    /// `StrictJSON`. Absent fields take diffusers' `AutoencoderKL` defaults (not SD2.1's). Fields
    /// that do not change the outputs (`force_upcast`, `latents_mean`, `latents_std`) are
    /// ignored; a non-null `shift_factor`, another block type or activation are refused.
    public init(diffusersJSON data: Data, source: String) throws(VAEError) {
        func bad(_ s: String) -> VAEError { .invalidConfig(file: source, s) }
        let any: Any
        do { any = try StrictJSON.jsonObject(data, source: source) } catch { throw bad(error.message) }
        guard let o = any as? [String: Any] else { throw bad("not a JSON object") }
        func present(_ k: String) -> Any? { o[k].flatMap { $0 is NSNull ? nil : $0 } }
        // JSONSerialization gives NSNumber for both numbers and booleans; a boolean's type is "c".
        func isBool(_ v: Any) -> Bool { (v as? NSNumber).map { String(cString: $0.objCType) == "c" } ?? false }
        if let t = present("_class_name") {
            guard let s = t as? String, s == Self.className else { throw bad("_class_name is '\(t)', expected \(Self.className)") }
        }
        func int(_ k: String, _ d: Int) throws(VAEError) -> Int {
            guard let v = present(k) else { return d }
            guard !isBool(v), let n = v as? Int else { throw bad("\(k) must be an integer") }
            return n
        }
        func bool(_ k: String, _ d: Bool) throws(VAEError) -> Bool {
            guard let v = present(k) else { return d }
            guard isBool(v), let b = v as? Bool else { throw bad("\(k) must be true or false") }
            return b
        }
        func strings(_ k: String) throws(VAEError) -> [String]? {
            guard let v = present(k) else { return nil }
            guard let a = v as? [String] else { throw bad("\(k) must be a list of strings") }
            return a
        }
        var c = VAEConfig()
        // diffusers' AutoencoderKL defaults.
        c.inChannels = try int("in_channels", 3)
        c.outChannels = try int("out_channels", 3)
        if let v = present("block_out_channels") {
            guard let items = v as? [Any], !items.isEmpty, !items.contains(where: isBool), let a = items as? [Int] else { throw bad("block_out_channels must be a non-empty list of integers") }
            c.blockOutChannels = a
        } else {
            c.blockOutChannels = [64]
        }
        c.layersPerBlock = try int("layers_per_block", 1)
        c.latentChannels = try int("latent_channels", 4)
        c.normNumGroups = try int("norm_num_groups", 32)
        c.sampleSize = try int("sample_size", 32)
        if let v = present("scaling_factor") {
            guard !isBool(v), let x = v as? Double else { throw bad("scaling_factor must be a number") }
            c.scalingFactor = x
        } else {
            c.scalingFactor = 0.18215
        }
        c.useQuantConv = try bool("use_quant_conv", true)
        c.usePostQuantConv = try bool("use_post_quant_conv", true)
        c.midBlockAddAttention = try bool("mid_block_add_attention", true)
        let down = try strings("down_block_types") ?? [Self.blockType.down]
        let up = try strings("up_block_types") ?? [Self.blockType.up]
        for (k, types, expected) in [("down_block_types", down, Self.blockType.down), ("up_block_types", up, Self.blockType.up)] {
            guard types.count == c.levels else { throw bad("\(k) has \(types.count) entries, block_out_channels \(c.levels)") }
            if let other = types.first(where: { $0 != expected }) {
                throw .unsupportedConfig(file: source, "\(k) holds '\(other)'; only \(expected) is implemented")
            }
        }
        if let a = present("act_fn") {
            guard let s = a as? String else { throw bad("act_fn must be a string") }
            guard s == "silu" || s == "swish" else { throw .unsupportedConfig(file: source, "act_fn '\(s)'; only silu is implemented") }
        }
        if let s = present("shift_factor") {
            throw .unsupportedConfig(file: source, "shift_factor \(s); only SD1/SD2-style VAEs without a shift are implemented")
        }
        try c.validate(source: source)
        self = c
    }

    /// The config as diffusers writes it (the fields this type holds, plus the class and block names).
    public func diffusersJSON() -> Data {
        let o: [String: Any] = [
            "_class_name": Self.className,
            "act_fn": "silu",
            "block_out_channels": blockOutChannels,
            "down_block_types": [String](repeating: Self.blockType.down, count: levels),
            "in_channels": inChannels,
            "latent_channels": latentChannels,
            "layers_per_block": layersPerBlock,
            "mid_block_add_attention": midBlockAddAttention,
            "norm_num_groups": normNumGroups,
            "out_channels": outChannels,
            "sample_size": sampleSize,
            "scaling_factor": scalingFactor,
            "up_block_types": [String](repeating: Self.blockType.up, count: levels),
            "use_post_quant_conv": usePostQuantConv,
            "use_quant_conv": useQuantConv,
        ]
        return (try? JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
    }

    /// Checks every number against `Bounds` and the group counts against the channels.
    public func validate(source: String) throws(VAEError) {
        func check(_ v: Int, _ r: ClosedRange<Int>, _ field: String) throws(VAEError) {
            guard r.contains(v) else { throw .invalidConfig(file: source, "\(field) is \(v), expected \(r.lowerBound)...\(r.upperBound)") }
        }
        try check(levels, Bounds.levels, "len(block_out_channels)")
        for (i, ch) in blockOutChannels.enumerated() {
            try check(ch, Bounds.channels, "block_out_channels[\(i)]")
            guard ch % normNumGroups == 0 else {
                throw .invalidConfig(file: source, "block_out_channels[\(i)] \(ch) is not a multiple of norm_num_groups \(normNumGroups)")
            }
        }
        try check(inChannels, Bounds.latentChannels, "in_channels")
        try check(outChannels, Bounds.latentChannels, "out_channels")
        try check(latentChannels, Bounds.latentChannels, "latent_channels")
        try check(layersPerBlock, Bounds.layersPerBlock, "layers_per_block")
        try check(normNumGroups, Bounds.normGroups, "norm_num_groups")
        try check(sampleSize, 1...(Bounds.latentSide.upperBound * 8), "sample_size")
        guard scalingFactor.isFinite, scalingFactor > 0 else {
            throw .invalidConfig(file: source, "scaling_factor is \(scalingFactor), expected a positive number")
        }
    }
}
