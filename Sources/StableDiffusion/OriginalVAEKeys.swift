/// The key table of the VAE in an original (CompVis/Stability LDM) single-file checkpoint: the
/// `AutoencoderKL` of `ldm.models.autoencoder` under `first_stage_model.`.
///
/// The renames (checked against diffusers' `convert_ldm_vae_checkpoint` by
/// scripts/make_vae_fixtures.py): `down_blocks.{i}.resnets.{j}` -> `down.{i}.block.{j}`,
/// `downsamplers.0.conv` -> `downsample.conv`, `up_blocks.{i}` -> `up.{n-1-i}` (LDM numbers the
/// decoder's levels from the highest resolution, diffusers in execution order),
/// `upsamplers.0.conv` -> `upsample.conv`, `mid_block.resnets.{0,1}` -> `mid.block_{1,2}`,
/// `mid_block.attentions.0` -> `mid.attn_1` with `group_norm`/`to_q`/`to_k`/`to_v`/`to_out.0` ->
/// `norm`/`q`/`k`/`v`/`proj_out` (1x1 convolutions: weights [C, C, 1, 1], read as [C, C]),
/// `conv_shortcut` -> `nin_shortcut`, `conv_norm_out` -> `norm_out`.
///
/// Only `first_stage_model.*` is the VAE's namespace (a training checkpoint's `loss.*`
/// discriminator is not in it). This file is the only place that spells the LDM VAE key strings.
enum OriginalVAEKeys {
    static let prefix = "first_stage_model."
    static let attentionRenames = ["group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"]

    /// The stored tensor of canonical (diffusers) name `canonical` in a VAE of `levels` levels,
    /// and whether it is stored as a 1x1 convolution ([C, C, 1, 1] for a [C, C] parameter); nil
    /// for a name that is not a VAE parameter.
    static func stored(_ canonical: String, levels: Int) -> (name: String, conv1x1: Bool)? {
        var parts = canonical.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2 else { return nil }
        let side = parts[0]
        if side == VAEKeys.quantConv || side == VAEKeys.postQuantConv { return (prefix + canonical, false) }
        guard side == VAEKeys.encoder || side == VAEKeys.decoder else { return nil }
        func renamedShortcut(_ tail: ArraySlice<String>) -> String {
            tail.map { $0 == VAEKeys.shortcut ? "nin_shortcut" : $0 }.joined(separator: ".")
        }
        var rest: String
        switch parts[1] {
        case VAEKeys.convIn, VAEKeys.convOut:
            rest = parts[1...].joined(separator: ".")
        case VAEKeys.convNormOut:
            rest = "norm_out." + parts[2...].joined(separator: ".")
        case VAEKeys.downBlocks, VAEKeys.upBlocks:
            guard parts.count >= 6, let i = Int(parts[2]), (0..<levels).contains(i) else { return nil }
            let down = parts[1] == VAEKeys.downBlocks
            let level = down ? "down.\(i)" : "up.\(levels - 1 - i)"
            switch parts[3] {
            case VAEKeys.resnets: rest = "\(level).block.\(parts[4])." + renamedShortcut(parts[5...])
            case "downsamplers" where down, "upsamplers" where !down:
                guard parts[4] == "0", parts[5] == "conv" else { return nil }
                rest = "\(level).\(down ? "downsample" : "upsample")." + parts[5...].joined(separator: ".")
            default: return nil
            }
        case VAEKeys.midBlock:
            guard parts.count >= 5 else { return nil }
            if parts[2] == "resnets", let j = Int(parts[3]), j == 0 || j == 1 {
                rest = "mid.block_\(j + 1)." + renamedShortcut(parts[4...])
            } else if parts[2] == "attentions", parts[3] == "0" {
                parts.removeFirst(4)
                let param = parts.removeLast()
                guard let r = attentionRenames[parts.joined(separator: ".")] else { return nil }
                return (prefix + side + ".mid.attn_1.\(r).\(param)", r != "norm" && param == "weight")
            } else {
                return nil
            }
        default:
            return nil
        }
        return (prefix + side + "." + rest, false)
    }

    /// Whether `key` belongs to the VAE of an original checkpoint.
    static func inNamespace(_ key: String) -> Bool { key.hasPrefix(prefix) }

    /// Whether the checkpoint has an LDM VAE.
    static func isPresent(_ keys: some Sequence<String>) -> Bool { keys.contains { $0 == prefix + "encoder.conv_in.weight" } }

    /// What an original checkpoint's tensors tell of the architecture, and what it assumes: LDM's
    /// `Normalize` (32 groups), SiLU, the SD scaling factor 0.18215, and a mid-block attention
    /// when `mid.attn_1` is stored.
    static func infer(_ store: TensorStore, file: String) throws(VAEError) -> (VAEConfig, [String]) {
        func shape(_ name: String, rank: Int) throws(VAEError) -> [Int] {
            guard let s = store[prefix + name]?.info.shape else { throw .cannotInfer(file: file, "no tensor '\(prefix + name)'") }
            guard s.count == rank else { throw .cannotInfer(file: file, "tensor '\(prefix + name)' has shape \(s), expected rank \(rank)") }
            return s
        }
        func indices(_ head: String) -> Set<Int> {
            var found = Set<Int>()
            for k in store.names where k.hasPrefix(prefix + head) {
                let rest = k.dropFirst(prefix.count + head.count)
                if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]) { found.insert(i) }
            }
            return found
        }
        let downs = indices("encoder.down.")
        guard let levels = downs.max().map({ $0 + 1 }), levels == downs.count else {
            throw .cannotInfer(file: file, "levels under \(prefix)encoder.down. are absent or not numbered 0..<n")
        }
        let blocks = indices("encoder.down.0.block.")
        guard let layers = blocks.max().map({ $0 + 1 }), layers == blocks.count else {
            throw .cannotInfer(file: file, "resnets under \(prefix)encoder.down.0.block. are absent or not numbered 0..<n")
        }
        var c = VAEConfig()
        c.blockOutChannels = []
        for i in 0..<levels { c.blockOutChannels.append(try shape("encoder.down.\(i).block.0.conv1.weight", rank: 4)[0]) }
        c.layersPerBlock = layers
        c.inChannels = try shape("encoder.conv_in.weight", rank: 4)[1]
        c.outChannels = try shape("decoder.conv_out.weight", rank: 4)[0]
        c.latentChannels = try shape("decoder.conv_in.weight", rank: 4)[1]
        c.useQuantConv = store[prefix + "quant_conv.weight"] != nil
        c.usePostQuantConv = store[prefix + "post_quant_conv.weight"] != nil
        c.midBlockAddAttention = store[prefix + "encoder.mid.attn_1.q.weight"] != nil
        c.normNumGroups = 32
        c.scalingFactor = 0.18215
        c.sampleSize = 768
        let assumptions = [
            "norm_num_groups = 32 (LDM's Normalize)",
            "act_fn = silu (LDM's nonlinearity)",
            "scaling_factor = 0.18215 (SD1.x/SD2.x; the file does not store it)",
            "sample_size = 768 (not stored; it does not change the outputs)",
        ]
        try c.validate(source: file)
        return (c, assumptions)
    }
}
