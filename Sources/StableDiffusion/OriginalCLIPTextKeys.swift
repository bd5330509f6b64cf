/// The key table of the text encoder in an original SD2.x single-file checkpoint: OpenCLIP's
/// `TextTransformer` under `cond_stage_model.model.`.
///
/// OpenCLIP fuses each layer's q, k and v projections into `attn.in_proj_weight` [3D, D] and
/// `attn.in_proj_bias` [3D] (rows in the order q, k, v); they are split into three here, as
/// diffusers' conversion does. A file saved from OpenCLIP holds all 24 resblocks of ViT-H/14 but
/// SD2.x reads the penultimate layer's output and then `ln_final`, so the last resblock is not
/// used; neither are `text_projection` and `logit_scale`. These are the only stored text encoder
/// tensors allowed to stay unused (`isAllowedUnused`). A file written from a transformers
/// `CLIPTextModel` (diffusers' `convert_diffusers_to_original_stable_diffusion.py`) has no
/// `text_projection` and only the 23 resblocks SD2.x uses; `infer` tells the two apart.
///
/// This file is the only place that spells the OpenCLIP key strings.
enum OriginalCLIPTextKeys {
    static let prefix = "cond_stage_model.model."
    /// The text encoder's namespace in an original checkpoint (SD1.x's is `cond_stage_model.transformer.`).
    static let namespace = "cond_stage_model."
    static let tokenEmbedding = prefix + "token_embedding.weight"
    static let positionalEmbedding = prefix + "positional_embedding"
    static let resblocks = prefix + "transformer.resblocks."
    static let cFC = "mlp.c_fc.weight"
    static let textProjection = prefix + "text_projection"
    /// The stored tensors of a resblock that write into the residual stream: all zero, the block
    /// adds nothing to its input (the identity).
    static let residualWriters = ["attn.out_proj.weight", "attn.out_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]
    static let unusedTop: Set<String> = [textProjection, prefix + "logit_scale"]

    /// A canonical parameter's stored tensor; `part` (0, 1, 2) picks q, k or v of a fused
    /// projection: rows part*D..<(part+1)*D of the stored tensor.
    struct Stored: Equatable {
        var name: String
        var part: Int?
    }

    /// Layer sub-parameters: canonical (relative to the layer) -> stored (relative to the resblock).
    static let layerRenames: [String: Stored] = {
        var m: [String: Stored] = [:]
        for s in ["weight", "bias"] {
            m["layer_norm1.\(s)"] = Stored(name: "ln_1.\(s)")
            m["layer_norm2.\(s)"] = Stored(name: "ln_2.\(s)")
            m["self_attn.out_proj.\(s)"] = Stored(name: "attn.out_proj.\(s)")
            m["mlp.fc1.\(s)"] = Stored(name: "mlp.c_fc.\(s)")
            m["mlp.fc2.\(s)"] = Stored(name: "mlp.c_proj.\(s)")
            for (i, p) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                m["self_attn.\(p).\(s)"] = Stored(name: "attn.in_proj_\(s)", part: i)
            }
        }
        return m
    }()

    /// The stored tensor of canonical parameter `canonical` (nil: not a text encoder parameter).
    static func stored(_ canonical: String) -> Stored? {
        switch canonical {
        case CLIPTextKeys.tokenEmbedding: return Stored(name: tokenEmbedding)
        case CLIPTextKeys.positionEmbedding: return Stored(name: positionalEmbedding)
        case CLIPTextKeys.finalLayerNorm + ".weight": return Stored(name: prefix + "ln_final.weight")
        case CLIPTextKeys.finalLayerNorm + ".bias": return Stored(name: prefix + "ln_final.bias")
        default: break
        }
        let layers = CLIPTextKeys.layers
        guard canonical.hasPrefix(layers) else { return nil }
        let rest = canonical.dropFirst(layers.count)
        guard let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]),
              let r = layerRenames[String(rest[rest.index(after: dot)...])] else { return nil }
        return Stored(name: resblocks + "\(i)." + r.name, part: r.part)
    }

    /// Whether `key` belongs to the text encoder of an original checkpoint.
    static func inNamespace(_ key: String) -> Bool { key.hasPrefix(namespace) }

    /// SD1.x's text encoder (OpenAI CLIP in transformers names), not read yet.
    static let sd1Prefix = "cond_stage_model.transformer."

    /// What the text encoder of a file without an OpenCLIP one is, for the error message.
    static func absenceReason(_ keys: some Sequence<String>) -> String {
        keys.contains { $0.hasPrefix(sd1Prefix) }
            ? "its text encoder is SD1.x's (\(sd1Prefix)*), which is not read yet; only SD2.x's OpenCLIP one (\(prefix)*) is"
            : "no OpenCLIP text encoder (SD2.x) under \(prefix)"
    }

    /// Whether the checkpoint has an OpenCLIP text encoder.
    static func isPresent(_ keys: some Sequence<String>) -> Bool { keys.contains { $0 == tokenEmbedding } }

    /// The stored tensors that may stay unused with `layers` encoder layers: `text_projection`,
    /// `logit_scale` and resblock `layers` (the last one, skipped by SD2.x's penultimate layer).
    static func isAllowedUnused(_ key: String, layers: Int) -> Bool {
        unusedTop.contains(key) || key.hasPrefix(resblocks + "\(layers).")
    }

    /// Why an allowed unused tensor (`isAllowedUnused`) is not part of the text encoder; nil for
    /// any other tensor.
    static func allowedUnusedReason(_ key: String, layers: Int) -> String? {
        if key.hasPrefix(resblocks + "\(layers).") {
            return "the last resblock (SD2.x reads the penultimate layer's output; diffusers' text_encoder has \(layers) layers)"
        }
        if unusedTop.contains(key) { return "OpenCLIP's text_projection / logit_scale (not part of transformers' CLIPTextModel)" }
        return nil
    }

    /// What an original checkpoint's tensors tell of the architecture, and what they cannot.
    /// `heads`: attention heads if known (OpenCLIP's head width is 64 otherwise).
    static func infer(_ store: TensorStore, file: String, heads: Int?) throws(CLIPTextEncoderError) -> (CLIPTextConfig, [String]) {
        func shape(_ name: String, rank: Int) throws(CLIPTextEncoderError) -> [Int] {
            guard let s = store[name]?.info.shape else { throw .cannotInfer(file: file, "no tensor '\(name)'") }
            guard s.count == rank else { throw .cannotInfer(file: file, "tensor '\(name)' has shape \(s), expected rank \(rank)") }
            return s
        }
        let token = try shape(tokenEmbedding, rank: 2)
        let position = try shape(positionalEmbedding, rank: 2)
        var blocks = Set<Int>()
        for k in store.names where k.hasPrefix(resblocks) {
            let rest = k.dropFirst(resblocks.count)
            if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]) { blocks.insert(i) }
        }
        guard let count = blocks.max().map({ $0 + 1 }), count == blocks.count else {
            throw .cannotInfer(file: file, "resblocks under \(resblocks) are absent or not numbered 0..<n")
        }
        let fc = try shape(resblocks + "0." + cFC, rank: 2)
        var c = CLIPTextConfig()
        (c.vocabSize, c.hiddenSize) = (token[0], token[1])
        c.maxPositionEmbeddings = position[0]
        c.intermediateSize = fc[0]
        let layersNote: String
        if store[textProjection] != nil {
            guard count >= 2 else { throw .cannotInfer(file: file, "\(count) resblock: SD2.x needs the penultimate of at least 2") }
            c.numHiddenLayers = count - 1
            layersNote = "num_hidden_layers = \(count - 1): the penultimate of \(count) resblocks (an OpenCLIP text tower: "
                + "SD2.x reads the penultimate layer, then ln_final)"
        } else if count >= 2, try isIdentity(block: count - 1, in: store, file: file) {
            c.numHiddenLayers = count - 1
            layersNote = "num_hidden_layers = \(count - 1): resblock \(count - 1) is all zeros in its output projections "
                + "(the identity a converter adds so that SD2.x's penultimate layer is the last real one)"
        } else {
            c.numHiddenLayers = count
            layersNote = "num_hidden_layers = \(count): every one of \(count) resblocks (no text_projection: written from a "
                + "transformers CLIPTextModel, as by diffusers' convert_diffusers_to_original_stable_diffusion.py, "
                + "which stores only the layers SD2.x uses)"
        }
        var assumptions = [
            layersNote,
            "hidden_act = gelu (OpenCLIP's nn.GELU)",
            "layer_norm_eps = 1e-05 (torch.nn.LayerNorm's default)",
        ]
        if let heads {
            c.numAttentionHeads = heads
        } else {
            guard c.hiddenSize % 64 == 0 else {
                throw .cannotInfer(file: file, "width \(c.hiddenSize) is not a multiple of OpenCLIP's head width 64: give the number of heads")
            }
            c.numAttentionHeads = c.hiddenSize / 64
            assumptions.append("num_attention_heads = \(c.numAttentionHeads): width \(c.hiddenSize) / OpenCLIP's head width 64")
        }
        try c.validate(source: file)
        return (c, assumptions)
    }

    /// Whether resblock `block` adds nothing to the residual stream (every `residualWriters`
    /// tensor present and all zero).
    static func isIdentity(block: Int, in store: TensorStore, file: String) throws(CLIPTextEncoderError) -> Bool {
        for w in residualWriters {
            let name = resblocks + "\(block)." + w
            guard let loc = store[name] else { return false }
            let values: [Float]
            do { values = try loc.file.floats(name) } catch { throw .checkpoint(.safetensors(error)) }
            if values.contains(where: { $0 != 0 }) { return false }
        }
        return true
    }
}
