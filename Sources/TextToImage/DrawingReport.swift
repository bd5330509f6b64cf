import ExpertBundle
import StableDiffusion

/// What one `alter sample --prompt` run did (`--json`, formats/cli-json.md).
public struct DrawingReport: Encodable, Sendable {
    /// One image written.
    public struct Image: Encodable, Sendable {
        public var promptIndex: Int
        public var prompt: String
        /// The negative prompt used (null without guidance).
        public var negativePrompt: String?
        public var seed: UInt64
        /// The PNG file (null when the images went into one grid).
        public var file: String?
        public var seconds: StageSeconds
        public var macs: Int
        public var denseMACs: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case promptIndex = "prompt_index", prompt, negativePrompt = "negative_prompt", seed, file, seconds, macs, denseMACs = "dense_macs"
        }

        /// Every key is always present: null for no negative prompt (no guidance) or no own file (a grid).
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(promptIndex, forKey: .promptIndex)
            try c.encode(prompt, forKey: .prompt)
            try c.encode(negativePrompt, forKey: .negativePrompt)
            try c.encode(seed, forKey: .seed)
            try c.encode(file, forKey: .file)
            try c.encode(seconds, forKey: .seconds)
            try c.encode(macs, forKey: .macs)
            try c.encode(denseMACs, forKey: .denseMACs)
        }
    }

    public var model: String
    public var isBundle: Bool
    /// Where the tokenizer, text encoder and VAE came from.
    public var components: [String: String]
    public var scheduler: String
    public var steps: Int
    public var guidance: Float
    public var predictionType: String
    /// Image height and width in pixels.
    public var size: [Int]
    /// Latent height and width.
    public var latent: [Int]
    public var seeds: [UInt64]
    /// Images denoised together.
    public var batch: Int
    public var images: [Image]
    /// The grid file (`--grid`), else null.
    public var grid: String?
    /// The latents file (`--latents`), else null.
    public var latents: String?
    public var loadSeconds: Double
    /// Summed over the images.
    public var seconds: StageSeconds
    public var writeSeconds: Double
    public var unetCallCount: Int
    /// UNet calls per expert ("dense" for dense calls).
    public var expertCallCounts: [String: Int]
    public var macs: Int
    public var denseMACs: Int
    public var keptMACFraction: Double

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, isBundle = "is_bundle", components, scheduler, steps, guidance, predictionType = "prediction_type", size, latent, seeds
        case batch, images, grid, latents, loadSeconds = "load_seconds", seconds, writeSeconds = "write_seconds", unetCallCount = "unet_call_count"
        case expertCallCounts = "expert_call_counts", macs, denseMACs = "dense_macs", keptMACFraction = "kept_mac_fraction"
    }

    /// Every key is always present: `grid` and `latents` are null when not written.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(isBundle, forKey: .isBundle)
        try c.encode(components, forKey: .components)
        try c.encode(scheduler, forKey: .scheduler)
        try c.encode(steps, forKey: .steps)
        try c.encode(guidance, forKey: .guidance)
        try c.encode(predictionType, forKey: .predictionType)
        try c.encode(size, forKey: .size)
        try c.encode(latent, forKey: .latent)
        try c.encode(seeds, forKey: .seeds)
        try c.encode(batch, forKey: .batch)
        try c.encode(images, forKey: .images)
        try c.encode(grid, forKey: .grid)
        try c.encode(latents, forKey: .latents)
        try c.encode(loadSeconds, forKey: .loadSeconds)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(writeSeconds, forKey: .writeSeconds)
        try c.encode(unetCallCount, forKey: .unetCallCount)
        try c.encode(expertCallCounts, forKey: .expertCallCounts)
        try c.encode(macs, forKey: .macs)
        try c.encode(denseMACs, forKey: .denseMACs)
        try c.encode(keptMACFraction, forKey: .keptMACFraction)
    }

    /// The report of `result`, drawn by `pipeline` from `model` with `options`; `files` are the
    /// image files in the order of `result.images` (nil entries: in the grid).
    public init(result: DrawingResult, pipeline: TextToImagePipeline, model: String, options: RoutedSampler.Options, seeds: [UInt64],
                batch: Int = 1, files: [String?], grid: String?, latents: String?, loadSeconds: Double, writeSeconds: Double) {
        self.model = model
        if case .dense = pipeline.sampler.experts { isBundle = false } else { isBundle = true }
        components = pipeline.components.sources
        scheduler = options.scheduler.method.rawValue
        steps = options.scheduler.steps
        guidance = options.guidance
        predictionType = pipeline.sampler.schedulerConfig.predictionType.rawValue
        let f = pipeline.components.vae.config.downsamplingFactor
        size = [result.latentSize.height * f, result.latentSize.width * f]
        latent = [result.latentSize.height, result.latentSize.width]
        self.seeds = seeds
        self.batch = batch
        images = result.images.enumerated().map { i, d in
            Image(promptIndex: d.promptIndex, prompt: d.prompt, negativePrompt: d.negativePrompt, seed: d.seed,
                  file: i < files.count ? files[i] : nil, seconds: d.seconds, macs: d.macs, denseMACs: d.denseMACs)
        }
        self.grid = grid
        self.latents = latents
        self.loadSeconds = loadSeconds
        seconds = result.images.reduce(StageSeconds(encode: 0, denoise: 0, decode: 0)) {
            StageSeconds(encode: $0.encode + $1.seconds.encode, denoise: $0.denoise + $1.seconds.denoise, decode: $0.decode + $1.seconds.decode)
        }
        self.writeSeconds = writeSeconds
        let calls = result.images.flatMap(\.calls)
        unetCallCount = calls.count
        var counts: [String: Int] = [:]
        for c in calls { counts[c.expert.map(String.init) ?? "dense", default: 0] += 1 }
        expertCallCounts = counts
        macs = result.macs
        denseMACs = result.denseMACs
        keptMACFraction = Double(result.macs) / Double(max(result.denseMACs, 1))
    }
}
