import Foundation
import SafeTensors

/// Architecture of a Stable Diffusion UNet (SD1.x / SD2.x family), in the terms of diffusers'
/// `UNet2DConditionModel` `config.json`.
public struct UNetConfig: Equatable, Sendable {
    public enum DownBlock: String, Sendable { case crossAttention = "CrossAttnDownBlock2D", plain = "DownBlock2D" }
    public enum UpBlock: String, Sendable { case crossAttention = "CrossAttnUpBlock2D", plain = "UpBlock2D" }

    public var sampleSize: Int = 64
    public var inChannels: Int = 4
    public var outChannels: Int = 4
    public var downBlocks: [DownBlock] = [.crossAttention, .crossAttention, .crossAttention, .plain]
    public var upBlocks: [UpBlock] = [.plain, .crossAttention, .crossAttention, .crossAttention]
    public var blockOutChannels: [Int] = [320, 640, 1280, 1280]
    public var layersPerBlock: Int = 2
    public var normNumGroups: Int = 32
    public var normEps: Double = 1e-5
    public var crossAttentionDim: Int = 1024
    /// Attention heads per down block (diffusers' `attention_head_dim` for this family).
    public var attentionHeads: [Int] = [5, 10, 20, 20]
    public var useLinearProjection: Bool = true
    public var upcastAttention: Bool = false
    public var flipSinToCos: Bool = true
    public var freqShift: Int = 0
    public var downsamplePadding: Int = 1
    public var midBlockScaleFactor: Double = 1
    public var centerInputSample: Bool = false

    public init() {}

    /// The published SD2.1 (768-v) UNet configuration.
    public static var sd21: UNetConfig {
        var c = UNetConfig()
        c.sampleSize = 96
        c.upcastAttention = true
        return c
    }

    /// Number of resolution levels.
    public var levels: Int { blockOutChannels.count }

    /// Checks everything needed to build and run the model: structure, norm groups, heads, and
    /// every number within `Bounds` (so that no edited config can make the module walk, the
    /// parameter list or the cost model run away).
    public func validate(source: String) throws(CheckpointError) {
        func bad(_ s: String) -> CheckpointError { .invalidConfig(file: source, s) }
        try validateStructure(source: source)
        func bound(_ v: Int, _ r: ClosedRange<Int>, _ field: String) throws(CheckpointError) {
            do { try Bounds.check(v, in: r, field: field) } catch { throw bad(error.description) }
        }
        for (i, h) in attentionHeads.enumerated() where h > Bounds.heads.upperBound {
            try bound(h, Bounds.heads, "attention_head_dim[\(i)]")
        }
        try bound(sampleSize, Bounds.latentSide, "sample_size")
        try bound(freqShift, Bounds.freqShift, "freq_shift")
        try bound(downsamplePadding, Bounds.downsamplePadding, "downsample_padding")
        guard normEps.isFinite, normEps > 0, normEps <= 1 else { throw bad("`norm_eps` is \(normEps), expected a number in (0, 1]") }
        guard midBlockScaleFactor.isFinite else { throw bad("`mid_block_scale_factor` is \(midBlockScaleFactor), expected a finite number") }
        for (i, c) in blockOutChannels.enumerated() {
            guard c % normNumGroups == 0 else {
                throw bad("block_out_channels[\(i)] = \(c) is not a multiple of norm_num_groups \(normNumGroups); give a config.json (load option config_path)")
            }
            guard attentionHeads[i] >= 1 else {
                throw bad("the number of attention heads of block \(i) is unknown; give a config.json (load option config_path)")
            }
            guard c % attentionHeads[i] == 0 else {
                throw bad("block_out_channels[\(i)] = \(c) is not divisible by \(attentionHeads[i]) attention heads")
            }
        }
    }

    /// Checks what the parameter list depends on: block counts, channels, layers (each within
    /// `Bounds`).
    public func validateStructure(source: String) throws(CheckpointError) {
        func bad(_ s: String) -> CheckpointError { .invalidConfig(file: source, s) }
        func bound(_ v: Int, _ r: ClosedRange<Int>, _ field: String) throws(CheckpointError) {
            do { try Bounds.check(v, in: r, field: field) } catch { throw bad(error.description) }
        }
        guard levels >= 1 else { throw bad("block_out_channels is empty") }
        guard levels <= Bounds.levels.upperBound else {
            throw bad("`block_out_channels` has \(levels) entries, expected \(Bounds.levels.lowerBound)...\(Bounds.levels.upperBound) levels")
        }
        try bound(layersPerBlock, Bounds.layersPerBlock, "layers_per_block")
        try bound(inChannels, Bounds.latentChannels, "in_channels")
        try bound(outChannels, Bounds.latentChannels, "out_channels")
        try bound(crossAttentionDim, Bounds.channels, "cross_attention_dim")
        for (i, c) in blockOutChannels.enumerated() { try bound(c, Bounds.channels, "block_out_channels[\(i)]") }
        try bound(normNumGroups, Bounds.normGroups, "norm_num_groups")
        guard downBlocks.count == levels, upBlocks.count == levels else {
            throw bad("down_block_types (\(downBlocks.count)) and up_block_types (\(upBlocks.count)) must match block_out_channels (\(levels))")
        }
        guard attentionHeads.count == levels else { throw bad("attention_head_dim has \(attentionHeads.count) entries for \(levels) blocks") }
        for i in 0..<levels where (downBlocks[i] == .crossAttention) != (upBlocks[levels - 1 - i] == .crossAttention) {
            throw bad("down block \(i) and up block \(levels - 1 - i) disagree on cross-attention")
        }
    }
}

/// Reading and writing diffusers' `config.json`.
extension UNetConfig {
    /// Fields of diffusers' config this implementation supports with their required values when
    /// they differ from the SD family.
    static let unsupported: [(String, @Sendable (Any) -> Bool)] = [
        ("class_embed_type", { $0 is NSNull }),
        ("addition_embed_type", { $0 is NSNull }),
        ("encoder_hid_dim", { $0 is NSNull }),
        ("encoder_hid_dim_type", { $0 is NSNull }),
        ("num_class_embeds", { $0 is NSNull }),
        ("time_embedding_type", { ($0 as? String) == "positional" }),
        ("resnet_time_scale_shift", { ($0 as? String) == "default" }),
        ("act_fn", { ($0 as? String) == "silu" }),
        ("mid_block_type", { ($0 as? String) == "UNetMidBlock2DCrossAttn" }),
        ("dual_cross_attention", { ($0 as? Bool) == false }),
        ("only_cross_attention", { ($0 as? Bool) == false || (($0 as? [Bool])?.allSatisfy { !$0 } ?? false) }),
        ("transformer_layers_per_block", { ($0 as? Int) == 1 || (($0 as? [Int])?.allSatisfy { $0 == 1 } ?? false) }),
        ("conv_in_kernel", { ($0 as? Int) == 3 }),
        ("conv_out_kernel", { ($0 as? Int) == 3 }),
        ("time_embedding_dim", { $0 is NSNull }),
        ("time_cond_proj_dim", { $0 is NSNull }),
        ("projection_class_embeddings_input_dim", { $0 is NSNull }),
        ("class_embeddings_concat", { ($0 as? Bool) == false }),
        ("mid_block_only_cross_attention", { $0 is NSNull || ($0 as? Bool) == false }),
        ("cross_attention_norm", { $0 is NSNull }),
        ("reverse_transformer_layers_per_block", { $0 is NSNull }),
        ("attention_type", { ($0 as? String) == "default" }),
        ("addition_time_embed_dim", { $0 is NSNull }),
        ("timestep_post_act", { $0 is NSNull }),
    ]

    /// Parses a diffusers `UNet2DConditionModel` `config.json` (diffusers' field names and defaults).
    public init(diffusersJSON data: Data, source: String) throws(CheckpointError) {
        func bad(_ s: String) -> CheckpointError { .invalidConfig(file: source, s) }
        let any: Any
        do { any = try StrictJSON.jsonObject(data, source: source) } catch { throw bad(error.message) }
        guard let o = any as? [String: Any] else { throw bad("not a JSON object") }
        if let cls = o["_class_name"] as? String, cls != "UNet2DConditionModel" {
            throw bad("_class_name is '\(cls)', expected UNet2DConditionModel")
        }
        for (key, ok) in Self.unsupported {
            if let v = o[key], !ok(v) { throw bad("unsupported \(key) = \(v) (only the SD1.x/SD2.x UNet family is supported)") }
        }
        func int(_ k: String, _ d: Int) throws(CheckpointError) -> Int {
            guard let v = o[k], !(v is NSNull) else { return d }
            guard let n = v as? Int else { throw bad("\(k) must be an integer") }
            return n
        }
        func bool(_ k: String, _ d: Bool) throws(CheckpointError) -> Bool {
            guard let v = o[k], !(v is NSNull) else { return d }
            guard let b = v as? Bool else { throw bad("\(k) must be true or false") }
            return b
        }
        func double(_ k: String, _ d: Double) throws(CheckpointError) -> Double {
            guard let v = o[k], !(v is NSNull) else { return d }
            guard let x = v as? Double else { throw bad("\(k) must be a number") }
            return x
        }
        var c = UNetConfig()
        c.sampleSize = try int("sample_size", 64)
        c.inChannels = try int("in_channels", 4)
        c.outChannels = try int("out_channels", 4)
        c.layersPerBlock = try int("layers_per_block", 2)
        c.normNumGroups = try int("norm_num_groups", 32)
        c.normEps = try double("norm_eps", 1e-5)
        c.crossAttentionDim = try int("cross_attention_dim", 1280)
        c.useLinearProjection = try bool("use_linear_projection", false)
        c.upcastAttention = try bool("upcast_attention", false)
        c.flipSinToCos = try bool("flip_sin_to_cos", true)
        c.freqShift = try int("freq_shift", 0)
        c.downsamplePadding = try int("downsample_padding", 1)
        c.midBlockScaleFactor = try double("mid_block_scale_factor", 1)
        c.centerInputSample = try bool("center_input_sample", false)
        if let v = o["layers_per_block"] as? [Int] {
            guard let f = v.first, v.allSatisfy({ $0 == f }) else { throw bad("per-block layers_per_block is not supported") }
            c.layersPerBlock = f
        }
        if let v = o["block_out_channels"] {
            guard let a = v as? [Int] else { throw bad("block_out_channels must be a list of integers") }
            c.blockOutChannels = a
        } else {
            c.blockOutChannels = [320, 640, 1280, 1280]
        }
        if let v = o["down_block_types"] {
            guard let a = v as? [String] else { throw bad("down_block_types must be a list of strings") }
            var blocks: [DownBlock] = []
            for s in a {
                guard let b = DownBlock(rawValue: s) else { throw bad("unsupported down block type '\(s)'") }
                blocks.append(b)
            }
            c.downBlocks = blocks
        }
        if let v = o["up_block_types"] {
            guard let a = v as? [String] else { throw bad("up_block_types must be a list of strings") }
            var blocks: [UpBlock] = []
            for s in a {
                guard let b = UpBlock(rawValue: s) else { throw bad("unsupported up block type '\(s)'") }
                blocks.append(b)
            }
            c.upBlocks = blocks
        }
        // diffusers: num_attention_heads defaults to attention_head_dim, which (for this family)
        // is the number of heads, per block or for all blocks.
        let headsValue = (o["num_attention_heads"].flatMap { $0 is NSNull ? nil : $0 }) ?? o["attention_head_dim"] ?? 8
        if let n = headsValue as? Int {
            c.attentionHeads = Array(repeating: n, count: c.levels)
        } else if let a = headsValue as? [Int] {
            c.attentionHeads = a
        } else {
            throw bad("attention_head_dim must be an integer or a list of integers")
        }
        try c.validate(source: source)
        self = c
    }

    /// A diffusers `config.json` for this architecture, which `UNet2DConditionModel.from_pretrained` loads.
    public func diffusersJSON(diffusersVersion: String = "0.42.1") -> Data {
        let o: [String: Any] = [
            "_class_name": "UNet2DConditionModel",
            "_diffusers_version": diffusersVersion,
            "act_fn": "silu",
            "attention_head_dim": Set(attentionHeads).count == 1 && !useLinearProjection ? attentionHeads[0] as Any : attentionHeads as Any,
            "block_out_channels": blockOutChannels,
            "center_input_sample": centerInputSample,
            "cross_attention_dim": crossAttentionDim,
            "down_block_types": downBlocks.map(\.rawValue),
            "downsample_padding": downsamplePadding,
            "dual_cross_attention": false,
            "flip_sin_to_cos": flipSinToCos,
            "freq_shift": freqShift,
            "in_channels": inChannels,
            "layers_per_block": layersPerBlock,
            "mid_block_scale_factor": midBlockScaleFactor,
            "norm_eps": normEps,
            "norm_num_groups": normNumGroups,
            "num_class_embeds": NSNull(),
            "only_cross_attention": false,
            "out_channels": outChannels,
            "sample_size": sampleSize,
            "up_block_types": upBlocks.map(\.rawValue),
            "upcast_attention": upcastAttention,
            "use_linear_projection": useLinearProjection,
        ]
        return (try? JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
    }
}
