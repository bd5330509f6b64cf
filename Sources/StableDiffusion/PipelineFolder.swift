import Foundation

/// The files of a diffusers `StableDiffusionPipeline` folder as alter writes it (SD2.1's, as
/// diffusers ships it): `model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
/// `scheduler/scheduler_config.json`; no `safety_checker/` and no `feature_extractor/` (both
/// `[null, null]` in `model_index.json`: SD2.1 has no safety checker, and its feature extractor
/// only serves one).
public enum PipelineFolder {
    static let modelIndex = "model_index.json"
    static let unet = "unet", vae = VAECheckpoint.folderName, textEncoder = CLIPTextCheckpoint.folderName
    static let tokenizer = "tokenizer", scheduler = "scheduler"
    static let schedulerConfig = "scheduler/scheduler_config.json"
    /// The scheduler SD2.1's pipeline ships.
    static let schedulerClass = "DDIMScheduler"
    /// The files of a transformers `CLIPTokenizer` folder that are copied (vocab.json and
    /// merges.txt must be there; the others are copied when present).
    static let tokenizerFiles = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]
    static let requiredTokenizerFiles = 2

    /// `model_index.json`; `tokenizer` false lists the tokenizer as absent (`[null, null]`).
    static func modelIndexJSON(tokenizer: Bool, diffusersVersion: String = "0.42.1") -> Data {
        let none: [Any] = [NSNull(), NSNull()]
        let tokenizerEntry: [Any] = tokenizer ? ["transformers", "CLIPTokenizer"] : none
        let o: [String: Any] = [
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": diffusersVersion,
            "feature_extractor": none,
            "requires_safety_checker": false,
            "safety_checker": none,
            "scheduler": ["diffusers", schedulerClass],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": tokenizerEntry,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        ]
        return (try? JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
    }
}
