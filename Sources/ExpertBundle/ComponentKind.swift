/// A pipeline component a bundle may carry, with the fixed paths it is stored at.
public enum ComponentKind: String, CaseIterable, Sendable, Codable {
    case tokenizer
    case textEncoder = "text_encoder"
    case vae

    /// Its folder inside the bundle (the diffusers pipeline folder's name).
    public var folder: String { rawValue }

    /// Files it MUST store (relative to the bundle).
    public var requiredFiles: [String] {
        switch self {
        case .tokenizer: [Self.vocabulary, "tokenizer/merges.txt"]
        case .textEncoder: [Self.textEncoderConfig, Self.textEncoderWeights]
        case .vae: [Self.vaeConfig, Self.vaeWeights]
        }
    }

    /// Files it MAY store besides.
    public var optionalFiles: [String] {
        self == .tokenizer ? ["tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json"] : []
    }

    /// Its safetensors weight file, nil for the tokenizer.
    public var weightFile: String? {
        switch self {
        case .tokenizer: nil
        case .textEncoder: Self.textEncoderWeights
        case .vae: Self.vaeWeights
        }
    }

    static let vocabulary = "tokenizer/vocab.json"
    static let textEncoderConfig = "text_encoder/config.json", textEncoderWeights = "text_encoder/model.safetensors"
    static let vaeConfig = "vae/config.json"
    static let vaeWeights = "vae/diffusion_pytorch_model.safetensors"

    /// The files `fitFailures` names: the tokenizer's vocabulary and the two configs.
    static let fitNames = (tokenizer: vocabulary, textEncoder: textEncoderConfig, vae: vaeConfig)
}
