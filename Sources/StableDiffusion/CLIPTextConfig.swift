import Foundation
import SafeTensors

/// The activation of a CLIP text encoder's MLP (transformers' `hidden_act`).
public enum CLIPActivation: String, Sendable, CaseIterable, Codable {
    /// erf GELU (OpenCLIP ViT-H/14, SD2.x).
    case gelu
    /// x * sigmoid(1.702 x) (OpenAI CLIP ViT-L/14, SD1.x).
    case quickGELU = "quick_gelu"
}

/// The architecture of a CLIP text encoder: transformers' `CLIPTextConfig` fields that change
/// `last_hidden_state`. The defaults are SD2.1's (OpenCLIP ViT-H/14 cut to 23 layers).
public struct CLIPTextConfig: Sendable, Equatable {
    public var vocabSize = 49408
    public var hiddenSize = 1024
    public var intermediateSize = 4096
    public var numHiddenLayers = 23
    public var numAttentionHeads = 16
    public var maxPositionEmbeddings = 77
    public var hiddenAct: CLIPActivation = .gelu
    public var layerNormEps = 1e-5

    public init() {}

    /// SD2.1's text encoder (`stabilityai/stable-diffusion-2-1` `text_encoder/config.json`).
    public static let sd21 = CLIPTextConfig()

    /// Width of one attention head.
    public var headDim: Int { hiddenSize / numAttentionHeads }

    /// Bounds on every number of the config (see `Bounds`).
    static let vocabBounds = 1...(1 << 20)
    static let layerBounds = 1...256

    /// Reads a transformers `CLIPTextConfig` JSON (a diffusers pipeline's `text_encoder/config.json`)
    /// through `StrictJSON`. Fields that do not change `last_hidden_state` (dropouts, token ids,
    /// `projection_dim`, ...) are ignored; absent fields take transformers' defaults for
    /// `CLIPTextConfig` (not SD2.1's).
    public init(transformersJSON data: Data, source: String) throws(CLIPTextEncoderError) {
        func bad(_ s: String) -> CLIPTextEncoderError { .invalidConfig(file: source, s) }
        let any: Any
        do { any = try StrictJSON.jsonObject(data, source: source) } catch { throw bad(error.message) }
        guard let o = any as? [String: Any] else { throw bad("not a JSON object") }
        if let t = o["model_type"], !(t is NSNull) {
            guard let s = t as? String, s == "clip_text_model" else { throw bad("model_type is '\(t)', expected clip_text_model") }
        }
        if let a = o["architectures"], !(a is NSNull) {
            guard let names = a as? [String] else { throw bad("architectures must be a list of strings") }
            guard names.allSatisfy({ $0 == "CLIPTextModel" }) else {
                throw bad("architectures \(names): expected CLIPTextModel (the projection of CLIPTextModelWithProjection is not read)")
            }
        }
        func int(_ k: String, _ d: Int) throws(CLIPTextEncoderError) -> Int {
            guard let v = o[k], !(v is NSNull) else { return d }
            guard let n = v as? Int else { throw bad("\(k) must be an integer") }
            return n
        }
        var c = CLIPTextConfig()
        // transformers' CLIPTextConfig defaults (ViT-B/32 text tower).
        c.vocabSize = try int("vocab_size", 49408)
        c.hiddenSize = try int("hidden_size", 512)
        c.intermediateSize = try int("intermediate_size", 2048)
        c.numHiddenLayers = try int("num_hidden_layers", 12)
        c.numAttentionHeads = try int("num_attention_heads", 8)
        c.maxPositionEmbeddings = try int("max_position_embeddings", 77)
        if let v = o["layer_norm_eps"], !(v is NSNull) {
            guard let x = v as? Double else { throw bad("layer_norm_eps must be a number") }
            c.layerNormEps = x
        } else {
            c.layerNormEps = 1e-5
        }
        if let v = o["hidden_act"], !(v is NSNull) {
            guard let s = v as? String else { throw bad("hidden_act must be a string") }
            guard let a = CLIPActivation(rawValue: s) else { throw .unsupportedActivation(file: source, hiddenAct: s) }
            c.hiddenAct = a
        } else {
            c.hiddenAct = .quickGELU
        }
        try c.validate(source: source)
        self = c
    }

    /// Checks every number against `Bounds` and the heads against the width.
    public func validate(source: String) throws(CLIPTextEncoderError) {
        func check(_ v: Int, _ r: ClosedRange<Int>, _ field: String) throws(CLIPTextEncoderError) {
            guard r.contains(v) else { throw .invalidConfig(file: source, "\(field) is \(v), expected \(r.lowerBound)...\(r.upperBound)") }
        }
        try check(vocabSize, Self.vocabBounds, "vocab_size")
        try check(hiddenSize, Bounds.channels, "hidden_size")
        try check(intermediateSize, 1...(4 * Bounds.channels.upperBound), "intermediate_size")
        try check(numHiddenLayers, Self.layerBounds, "num_hidden_layers")
        try check(numAttentionHeads, Bounds.heads, "num_attention_heads")
        try check(maxPositionEmbeddings, Bounds.contextLength, "max_position_embeddings")
        guard hiddenSize % numAttentionHeads == 0 else {
            throw .invalidConfig(file: source, "hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)")
        }
        guard layerNormEps.isFinite, layerNormEps > 0, layerNormEps < 1 else {
            throw .invalidConfig(file: source, "layer_norm_eps is \(layerNormEps), expected a number in (0, 1)")
        }
    }

    /// The config as transformers writes it (the fields this type holds, plus the class names).
    public func transformersJSON() -> Data {
        let o: [String: Any] = [
            "architectures": ["CLIPTextModel"],
            "hidden_act": hiddenAct.rawValue,
            "hidden_size": hiddenSize,
            "intermediate_size": intermediateSize,
            "layer_norm_eps": layerNormEps,
            "max_position_embeddings": maxPositionEmbeddings,
            "model_type": "clip_text_model",
            "num_attention_heads": numAttentionHeads,
            "num_hidden_layers": numHiddenLayers,
            "vocab_size": vocabSize,
        ]
        return (try? JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
    }
}
