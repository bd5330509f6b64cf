/// The key table of the original (CompVis / Stability AI) single-file checkpoint layout:
/// UNet under `model.diffusion_model.`, VAE under `first_stage_model.`, text encoder under
/// `cond_stage_model.`, EMA copies under `model_ema.` with the dots removed.
///
/// This file is the only place that spells the original layout's key strings.
struct OriginalUNetKeys {
    static let unetPrefix = "model.diffusion_model."
    static let emaPrefix = "model_ema."
    static let componentPrefixes: [(String, Component)] = [
        ("model.diffusion_model.", .unet),
        ("model_ema.", .ema),
        ("first_stage_model.", .vae),
        ("cond_stage_model.", .textEncoder),
    ]

    /// Resnet sub-module names: diffusers -> original.
    static let resnetRenames: [String: String] = [
        "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
        "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
    ]
    /// Top-level module names: diffusers -> original.
    static let topRenames: [String: String] = [
        "conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2",
    ]

    let config: UNetConfig

    /// The original-layout key of a canonical (diffusers) parameter name.
    func storedName(_ canonical: String) -> String {
        Self.unetPrefix + relativeName(canonical)
    }

    /// The key of the EMA copy: `model_ema.` + `diffusion_model.<name>` without dots.
    func emaName(_ canonical: String) -> String {
        Self.emaPrefix + ("diffusion_model." + relativeName(canonical)).replacingOccurrences(of: ".", with: "")
    }

    private func relativeName(_ canonical: String) -> String {
        for (d, o) in Self.topRenames where canonical.hasPrefix(d + ".") {
            return o + canonical.dropFirst(d.count)
        }
        let parts = canonical.split(separator: ".").map(String.init)
        let stride = config.layersPerBlock + 1
        func resnet(_ base: String, _ rest: ArraySlice<String>) -> String {
            let sub = rest.first.map { Self.resnetRenames[$0] ?? $0 } ?? ""
            return ([base, sub] + rest.dropFirst()).joined(separator: ".")
        }
        guard parts.count >= 4 else { return canonical }
        switch parts[0] {
        case "down_blocks":
            let i = Int(parts[1]) ?? 0
            let j = Int(parts[3]) ?? 0
            switch parts[2] {
            case "resnets": return resnet("input_blocks.\(i * stride + j + 1).0", parts[4...])
            case "attentions": return (["input_blocks.\(i * stride + j + 1).1"] + parts[4...]).joined(separator: ".")
            case "downsamplers": return (["input_blocks.\((i + 1) * stride).0.op"] + parts[5...]).joined(separator: ".")
            default: return canonical
            }
        case "mid_block":
            let j = Int(parts[2]) ?? 0
            if parts[1] == "attentions" { return (["middle_block.1"] + parts[3...]).joined(separator: ".") }
            return resnet("middle_block.\(j == 0 ? 0 : 2)", parts[3...])
        case "up_blocks":
            let i = Int(parts[1]) ?? 0
            let j = Int(parts[3]) ?? 0
            let hasAttention = config.upBlocks[i] == .crossAttention
            switch parts[2] {
            case "resnets": return resnet("output_blocks.\(i * stride + j).0", parts[4...])
            case "attentions": return (["output_blocks.\(i * stride + j).1"] + parts[4...]).joined(separator: ".")
            case "upsamplers":
                return (["output_blocks.\(i * stride + config.layersPerBlock).\(hasAttention ? 2 : 1)"] + parts[4...]).joined(separator: ".")
            default: return canonical
            }
        default: return canonical
        }
    }

    /// Which component a stored key of an original checkpoint belongs to.
    static func component(of key: String) -> Component {
        for (p, c) in componentPrefixes where key.hasPrefix(p) { return c }
        return .other
    }

    /// Whether the keys look like an original single-file checkpoint.
    static func isOriginalLayout(_ keys: some Sequence<String>) -> Bool {
        keys.contains { $0.hasPrefix(unetPrefix) }
    }

    /// EMA bookkeeping scalars (`model_ema.decay`, `model_ema.num_updates`), not weights.
    static func isEMABookkeeping(_ key: String) -> Bool {
        key == emaPrefix + "decay" || key == emaPrefix + "num_updates"
    }

    /// The noise schedule buffers of LDM's `LatentDiffusion` (`register_schedule`), stored beside
    /// the weights of an original checkpoint; a diffusers pipeline's scheduler config replaces them.
    static let scheduleBuffers: Set<String> = [
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar",
    ]

    /// Why a tensor of an original checkpoint that no model reads may be left out of a converted
    /// pipeline (nil: it is not on the allow-list). `ema`: the EMA copies are the UNet converted.
    static func droppedReason(_ key: String, ema: Bool) -> String? {
        if scheduleBuffers.contains(key) { return "LDM noise schedule buffer (scheduler/scheduler_config.json replaces it)" }
        if isEMABookkeeping(key) { return "EMA bookkeeping (model_ema.decay, model_ema.num_updates)" }
        switch component(of: key) {
        case .ema where !ema: return "EMA copy of the UNet (model_ema.*; --ema converts these instead of the plain weights)"
        case .unet where ema: return "plain UNet weights (--ema converts the EMA copies instead)"
        default: return nil
        }
    }

    /// Whether the checkpoint carries EMA copies of the UNet.
    static func hasEMA(_ keys: some Sequence<String>) -> Bool {
        keys.contains { $0.hasPrefix(emaPrefix + "diffusion_model") }
    }

    /// The structure an original checkpoint's UNet key names reveal: number of levels,
    /// resnets per down block, which down levels have cross-attention.
    static func structure(_ keys: [String], file: String) throws(CheckpointError) -> (levels: Int, layers: Int, attention: [Bool]) {
        var inputIndices = Set<Int>(), outputIndices = Set<Int>()
        var opIndex: Int?
        var attentionAt = Set<Int>()
        for k in keys where k.hasPrefix(unetPrefix) {
            let parts = k.dropFirst(unetPrefix.count).split(separator: ".")
            guard parts.count >= 3, let n = Int(parts[1]) else { continue }
            if parts[0] == "input_blocks" {
                inputIndices.insert(n)
                if parts[2] == "0", parts.count > 3, parts[3] == "op" { opIndex = min(opIndex ?? n, n) }
                if parts[2] == "1" { attentionAt.insert(n) }
            } else if parts[0] == "output_blocks" {
                outputIndices.insert(n)
            }
        }
        guard !inputIndices.isEmpty, !outputIndices.isEmpty else {
            throw .cannotInfer(file: file, "no input_blocks/output_blocks tensors under \(unetPrefix)")
        }
        let layers: Int
        if let opIndex { layers = opIndex - 1 } else { layers = inputIndices.count - 1 }
        guard layers >= 1 else { throw .cannotInfer(file: file, "cannot find the resnets of the first down block") }
        let stride = layers + 1
        guard outputIndices.count % stride == 0 else {
            throw .cannotInfer(file: file, "\(outputIndices.count) output blocks is not a multiple of \(stride) (layers per block + 1)")
        }
        let levels = outputIndices.count / stride
        guard inputIndices.count == levels * stride else {
            throw .cannotInfer(file: file, "\(inputIndices.count) input blocks do not fit \(levels) levels of \(layers) resnets")
        }
        let attention = (0..<levels).map { attentionAt.contains($0 * stride + 1) }
        return (levels, layers, attention)
    }
}

/// Parts of a Stable Diffusion checkpoint.
public enum Component: String, Sendable, CaseIterable, Codable {
    case unet = "UNet", ema = "UNet EMA", vae = "VAE", textEncoder = "text encoder", other = "other"
}
