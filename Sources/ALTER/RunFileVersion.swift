import Foundation
import SafeTensors

/// Reading run directories of format version 1 (camelCase keys in `config.json` and
/// `state.json`, metrics keys without `_loss`), which `--resume` still continues: their files
/// are decoded through this key table and written back in version 2.
enum RunFileVersion {
    /// Version 1 key -> version 2 key, for every key that changed (the names are unique across
    /// the three files and their nested objects).
    static let version1Keys: [String: String] = [
        // config.json
        "hypernetSteps": "hypernet_steps", "checkpointEvery": "checkpoint_every", "predictionType": "prediction_type",
        "configPath": "config_path",
        // config.json settings
        "embeddingWidth": "embedding_width", "generatorHidden": "generator_hidden", "routerHidden": "router_hidden",
        "denoiseWeight": "denoise_weight", "outputKDWeight": "output_kd_weight", "featureKDWeight": "feature_kd_weight",
        "ratioWeight": "ratio_weight", "balanceWeight": "balance_weight", "learningRateUNet": "lr_unet",
        "learningRateHypernet": "lr_hypernet", "adamEpsilon": "adam_epsilon", "weightDecay": "weight_decay",
        "warmupSteps": "warmup_steps", "gradientClip": "gradient_clip",
        // checkpoint/state.json
        "dataRNG": "data_rng", "noiseRNG": "noise_rng", "unetOptimizerStep": "unet_optimizer_step",
        "hypernetOptimizerStep": "hypernet_optimizer_step",
        // metrics.jsonl
        "output_kd": "output_kd_loss", "feature_kd": "feature_kd_loss", "denoise": "denoise_loss",
        "performance": "performance_loss", "ratio": "ratio_loss", "balance": "balance_loss",
    ]

    /// Marks a decoder that reads version 1 files (no `format` / `format_version` keys).
    static let version1 = CodingUserInfoKey(rawValue: "alter.run.version1")!

    /// A decoder that reads version 1 keys as version 2 keys.
    static func version1Decoder() -> JSONDecoder {
        let d = JSONDecoder.renamingKeys(version1Keys)
        d.userInfo[version1] = true
        return d
    }

    /// The bytes of a run-directory JSON file: a regular file, checked by `StrictJSON` (duplicate
    /// keys refused) before anything is decoded from it.
    static func read(_ path: String) throws(StrictJSONError) -> Data {
        try StrictJSON.read(path, limit: 256 << 20)
    }

    /// The decoder for a run file: version 1 when its top-level object has neither `format` nor
    /// any version 2 key, else the plain one.
    static func decoder(for data: Data) -> JSONDecoder {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return JSONDecoder() }
        let keys = Set(object.keys)
        let isVersion1 = !keys.contains("format") && !keys.isDisjoint(with: version1Keys.keys)
        return isVersion1 ? version1Decoder() : JSONDecoder()
    }
}
