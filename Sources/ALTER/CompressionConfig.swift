import StableDiffusion

/// Everything that determines an ALTER run; stored as the run directory's `config.json`
/// (formats/run-directory.md, version 2: snake_case keys, `format` and `format_version` first).
public struct CompressionConfig: Codable, Sendable, Equatable {
    public static let formatName = "alter.run"
    public static let formatVersion = 2

    /// The model (teacher and student initialisation), as given.
    public var model: String
    /// The training-data file, as given.
    public var data: String
    public var settings = ALTERSettings()
    /// Total training iterations.
    public var steps: Int
    /// Iterations with a hypernetwork step (ALTER.md 6); after them the masks are frozen.
    public var hypernetSteps: Int
    public var batch = 1
    public var seed: UInt64 = 0
    /// Write a checkpoint every this many steps (0: not by step count).
    public var checkpointEvery = 0
    /// Write a checkpoint when this many minutes have passed since the last one (0: not by time).
    public var checkpointMinutes = CompressionConfig.defaultCheckpointMinutes
    /// The default time between checkpoints: a killed run loses at most this much work.
    public static let defaultCheckpointMinutes = 10.0
    public var predictionType = NoiseSchedule.PredictionType.epsilon
    /// Loader options of the model.
    public var ema = false
    public var variant: String?
    public var configPath: String?

    /// A run of `steps` iterations. `hypernetSteps` nil: `defaultHypernetSteps(steps)`; the
    /// settings' warm-up nil: `defaultWarmupSteps(steps)`.
    public init(model: String, data: String, steps: Int, hypernetSteps: Int? = nil, warmupSteps: Int? = nil) {
        self.model = model
        self.data = data
        self.steps = steps
        self.hypernetSteps = hypernetSteps ?? Self.defaultHypernetSteps(steps)
        settings.warmupSteps = warmupSteps ?? Self.defaultWarmupSteps(steps)
    }

    /// The hypernetwork phase when none is given: 30% of the steps, rounded (the paper's 2 of about
    /// 6.8 epochs: 9.4 k of 32 k steps).
    public static func defaultHypernetSteps(_ steps: Int) -> Int { Int((Double(max(steps, 0)) * 0.3).rounded()) }

    /// The learning-rate warm-up when none is given: the paper's 250 steps, at most a tenth of the run.
    public static func defaultWarmupSteps(_ steps: Int) -> Int { min(250, max(steps, 0) / 10) }

    /// Checks values that do not depend on the model or the data. Errors name the field
    /// (`config.json` key).
    public func validate() throws(CompressionError) {
        func bad(_ field: String, _ why: String) -> CompressionError { .invalid(field: field, why) }
        let s = settings
        let numbers: [(String, Double)] = [
            ("keep", s.keep), ("temperature", s.temperature), ("offset", s.offset), ("denoise_weight", s.denoiseWeight),
            ("output_kd_weight", s.outputKDWeight), ("feature_kd_weight", s.featureKDWeight), ("ratio_weight", s.ratioWeight),
            ("balance_weight", s.balanceWeight), ("lr_unet", s.learningRateUNet), ("lr_hypernet", s.learningRateHypernet),
            ("beta1", s.beta1), ("beta2", s.beta2), ("adam_epsilon", s.adamEpsilon), ("weight_decay", s.weightDecay),
            ("gradient_clip", s.gradientClip), ("checkpoint_minutes", checkpointMinutes), ("caption_dropout", s.captionDropout),
            ("smoothness_weight", s.smoothnessWeight), ("guidance_kd_weight", s.guidanceKDWeight),
            ("guidance_kd_scale", s.guidanceKDScale),
        ]
        for (field, value) in numbers where !value.isFinite { throw bad(field, "must be a finite number, got \(value)") }
        guard s.keep > 0, s.keep <= 1 else { throw .keepOutOfRange(s.keep) }
        guard s.experts >= 1 else { throw bad("experts", "must be at least 1, got \(s.experts)") }
        guard s.experts <= 1000 else { throw .tooManyExperts(s.experts, timesteps: 1000) }
        guard steps >= 1 else { throw bad("steps", "must be at least 1, got \(steps)") }
        guard hypernetSteps >= 0, hypernetSteps <= steps else {
            throw bad("hypernet_steps", "must be between 0 and `steps` (\(steps)), got \(hypernetSteps)")
        }
        guard batch >= 1 else { throw bad("batch", "must be at least 1, got \(batch)") }
        guard s.temperature > 0 else { throw bad("temperature", "must be positive, got \(s.temperature)") }
        let nonNegative: Set = ["denoise_weight", "output_kd_weight", "feature_kd_weight", "ratio_weight", "balance_weight", "lr_unet",
                                "lr_hypernet", "weight_decay", "gradient_clip", "checkpoint_minutes", "smoothness_weight",
                                "guidance_kd_weight"]
        for (field, value) in numbers where nonNegative.contains(field) && value < 0 {
            throw bad(field, "must not be negative, got \(value)")
        }
        guard s.beta1 >= 0, s.beta1 < 1 else { throw bad("beta1", "must be in [0, 1), got \(s.beta1)") }
        guard s.beta2 >= 0, s.beta2 < 1 else { throw bad("beta2", "must be in [0, 1), got \(s.beta2)") }
        guard s.smoothnessWeight == 0 || s.routing == .learned else {
            throw bad("smoothness_weight", "applies to learned routing only (routing \(s.routing.rawValue) has no router logits to smooth)")
        }
        guard s.guidanceKDScale > 0 else { throw bad("guidance_kd_scale", "must be positive, got \(s.guidanceKDScale)") }
        guard s.captionDropout >= 0, s.captionDropout <= 1 else {
            throw bad("caption_dropout", "must be a probability in [0, 1], got \(s.captionDropout)")
        }
        guard s.adamEpsilon > 0 else { throw bad("adam_epsilon", "must be positive, got \(s.adamEpsilon)") }
        guard s.warmupSteps >= 0 else { throw bad("warmup_steps", "must not be negative, got \(s.warmupSteps)") }
        guard s.warmupSteps <= steps else { throw bad("warmup_steps", "is \(s.warmupSteps), longer than the run (`steps` \(steps))") }
        guard checkpointEvery >= 0 else { throw bad("checkpoint_every", "must not be negative, got \(checkpointEvery)") }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, formatVersion = "format_version"
        case model, data, settings, steps, hypernetSteps = "hypernet_steps", batch, seed, checkpointEvery = "checkpoint_every"
        case checkpointMinutes = "checkpoint_minutes"
        case predictionType = "prediction_type", ema, variant, configPath = "config_path"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let isVersion1 = decoder.userInfo[RunFileVersion.version1] as? Bool == true
        let format = isVersion1 ? Self.formatName : try c.decode(String.self, forKey: .format)
        let version = isVersion1 ? Self.formatVersion : try c.decode(Int.self, forKey: .formatVersion)
        guard format == Self.formatName, version == Self.formatVersion else {
            throw DecodingError.dataCorruptedError(forKey: .formatVersion, in: c,
                                                   debugDescription: "\(format) version \(version) is not \(Self.formatName) version \(Self.formatVersion)")
        }
        model = try c.decode(String.self, forKey: .model)
        data = try c.decode(String.self, forKey: .data)
        settings = try c.decode(ALTERSettings.self, forKey: .settings)
        steps = try c.decode(Int.self, forKey: .steps)
        hypernetSteps = try c.decode(Int.self, forKey: .hypernetSteps)
        batch = try c.decode(Int.self, forKey: .batch)
        seed = try c.decode(UInt64.self, forKey: .seed)
        checkpointEvery = try c.decode(Int.self, forKey: .checkpointEvery)
        checkpointMinutes = try c.decodeIfPresent(Double.self, forKey: .checkpointMinutes) ?? Self.defaultCheckpointMinutes
        predictionType = try c.decode(NoiseSchedule.PredictionType.self, forKey: .predictionType)
        ema = try c.decode(Bool.self, forKey: .ema)
        variant = try c.decodeIfPresent(String.self, forKey: .variant)
        configPath = try c.decodeIfPresent(String.self, forKey: .configPath)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.formatName, forKey: .format)
        try c.encode(Self.formatVersion, forKey: .formatVersion)
        try c.encode(model, forKey: .model)
        try c.encode(data, forKey: .data)
        try c.encode(settings, forKey: .settings)
        try c.encode(steps, forKey: .steps)
        try c.encode(hypernetSteps, forKey: .hypernetSteps)
        try c.encode(batch, forKey: .batch)
        try c.encode(seed, forKey: .seed)
        try c.encode(checkpointEvery, forKey: .checkpointEvery)
        try c.encode(checkpointMinutes, forKey: .checkpointMinutes)
        try c.encode(predictionType, forKey: .predictionType)
        try c.encode(ema, forKey: .ema)
        try c.encode(variant, forKey: .variant)
        try c.encode(configPath, forKey: .configPath)
    }
}

/// A compression request that cannot run; reported before any training starts. Fields are
/// named by their `config.json` keys, in backticks.
public enum CompressionError: Error, CustomStringConvertible, Equatable {
    case keepOutOfRange(Double)
    case keepBelowFixed(keep: Double, fixed: Double)
    case tooManyExperts(Int, timesteps: Int)
    /// A configuration field with a value that cannot work.
    case invalid(field: String, String)
    case data(String)
    case runDirectory(String)
    /// A loss or gradient norm of `step` is not finite; `stateIsLastGoodStep`: the trainer still
    /// holds the state after the previous step (so a checkpoint of it was written).
    case nonFinite(step: Int, String, stateIsLastGoodStep: Bool)

    /// The `config.json` key the error is about, if it is about one.
    public var field: String? {
        switch self {
        case .keepOutOfRange, .keepBelowFixed: return "keep"
        case .tooManyExperts: return "experts"
        case .invalid(let f, _): return f
        case .data, .runDirectory, .nonFinite: return nil
        }
    }

    public var description: String {
        switch self {
        case .keepOutOfRange(let k): return "`keep` must be in (0, 1] (the kept fraction of total UNet MACs), got \(k)"
        case .keepBelowFixed(let k, let f):
            return "`keep` \(k) is below the MAC fraction that no pruning can remove (\(String(format: "%.4f", f)): convs in/out, samplers, projections); choose a larger `keep`"
        case .tooManyExperts(let e, let t): return "`experts` \(e) exceeds the \(t) training timesteps; each expert needs at least one timestep"
        case .invalid(let f, let s): return "`\(f)` \(s)"
        case .data(let s): return s
        case .runDirectory(let s): return s
        case .nonFinite(let step, let what, let clean):
            return "step \(step): \(what); the run stopped "
                + (clean ? "with a checkpoint of step \(step - 1), the last good step" : "(its last checkpoint is the last state saved)")
                + ". Check the training data for extreme values, or lower the learning rates"
        }
    }
}
