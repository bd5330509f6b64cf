import ExpertBundle
import StableDiffusion

/// What one `alter eval` run measured (`--json`, formats/cli-json.md).
public struct FidelityReport: Encodable, Sendable {
    /// One of the two models.
    public struct Model: Encodable, Sendable {
        public var model: String
        public var isBundle: Bool
        /// Where the tokenizer, text encoder and VAE came from.
        public var components: [String: String]
        public var scheduler: String
        public var steps: Int
        public var predictionType: String
        /// Mean cost per image.
        public var perImage: DrawingCost

        enum CodingKeys: String, CodingKey, CaseIterable {
            case model, isBundle = "is_bundle", components, scheduler, steps, predictionType = "prediction_type", perImage = "per_image"
        }

        init(model: String, pipeline: TextToImagePipeline, options: RoutedSampler.Options, cost: DrawingCost) {
            self.model = model
            if case .dense = pipeline.sampler.experts { isBundle = false } else { isBundle = true }
            components = pipeline.components.sources
            scheduler = options.scheduler.method.rawValue
            steps = options.scheduler.steps
            predictionType = pipeline.sampler.schedulerConfig.predictionType.rawValue
            perImage = cost
        }
    }

    /// One prompt and seed.
    public struct Pair: Encodable, Sendable {
        public var promptIndex: Int
        public var prompt: String
        public var negativePrompt: String?
        public var seed: UInt64
        /// dB; nil (JSON null) for identical images (infinite PSNR).
        public var psnr: Double?
        public var ssim: Double
        public var reference: DrawingCost
        public var candidate: DrawingCost
        /// The PNG files of the pair (`--images`), else nil.
        public var referenceFile: String?
        public var candidateFile: String?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case promptIndex = "prompt_index", prompt, negativePrompt = "negative_prompt", seed, psnr, ssim, reference, candidate,
                 referenceFile = "reference_file", candidateFile = "candidate_file"
        }

        /// Every key is always present (null: no guidance, infinite PSNR, no image files).
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(promptIndex, forKey: .promptIndex)
            try c.encode(prompt, forKey: .prompt)
            try c.encode(negativePrompt, forKey: .negativePrompt)
            try c.encode(seed, forKey: .seed)
            try c.encode(psnr, forKey: .psnr)
            try c.encode(ssim, forKey: .ssim)
            try c.encode(reference, forKey: .reference)
            try c.encode(candidate, forKey: .candidate)
            try c.encode(referenceFile, forKey: .referenceFile)
            try c.encode(candidateFile, forKey: .candidateFile)
        }
    }

    public var reference: Model
    public var candidate: Model
    public var guidance: Float
    /// Image [height, width] in pixels.
    public var size: [Int]
    /// Latent [height, width].
    public var latent: [Int]
    public var seeds: [UInt64]
    /// Pairs drawn together (each model denoises that many images in one UNet call per step).
    public var batch: Int
    public var pairs: [Pair]
    public var psnr: MetricSummary
    public var ssim: MetricSummary
    /// Candidate / reference of the mean costs per image.
    public var ratio: CostRatio
    /// The `--images` folder, else nil.
    public var images: String?
    /// The `--side-by-side` image, else nil.
    public var sideBySide: String?
    public var loadSeconds: Double

    enum CodingKeys: String, CodingKey, CaseIterable {
        case reference, candidate, guidance, size, latent, seeds, batch, pairs, psnr, ssim, ratio, images, sideBySide = "side_by_side"
        case loadSeconds = "load_seconds"
    }

    /// Every key is always present (`images` null without `--images`, `side_by_side` without `--side-by-side`).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(reference, forKey: .reference)
        try c.encode(candidate, forKey: .candidate)
        try c.encode(guidance, forKey: .guidance)
        try c.encode(size, forKey: .size)
        try c.encode(latent, forKey: .latent)
        try c.encode(seeds, forKey: .seeds)
        try c.encode(batch, forKey: .batch)
        try c.encode(pairs, forKey: .pairs)
        try c.encode(psnr, forKey: .psnr)
        try c.encode(ssim, forKey: .ssim)
        try c.encode(ratio, forKey: .ratio)
        try c.encode(images, forKey: .images)
        try c.encode(sideBySide, forKey: .sideBySide)
        try c.encode(loadSeconds, forKey: .loadSeconds)
    }

    /// The report of `result` from `evaluation`; `files` are the (reference, candidate) PNG files
    /// in the order of `result.pairs` (empty: none written).
    public init(result: FidelityResult, evaluation: FidelityEvaluation, referenceModel: String, candidateModel: String, seeds: [UInt64],
                batch: Int = 1, files: [(reference: String, candidate: String)], images: String?, sideBySide: String? = nil,
                loadSeconds: Double) {
        reference = Model(model: referenceModel, pipeline: evaluation.reference, options: evaluation.referenceOptions, cost: result.referenceCost)
        candidate = Model(model: candidateModel, pipeline: evaluation.candidate, options: evaluation.candidateOptions, cost: result.candidateCost)
        guidance = evaluation.referenceOptions.guidance
        size = result.size
        latent = result.latent
        self.seeds = seeds
        self.batch = batch
        pairs = result.pairs.enumerated().map { i, p in
            Pair(promptIndex: p.promptIndex, prompt: p.prompt, negativePrompt: p.negativePrompt, seed: p.seed,
                 psnr: p.psnr.isFinite ? p.psnr : nil, ssim: p.ssim, reference: p.reference, candidate: p.candidate,
                 referenceFile: i < files.count ? files[i].reference : nil, candidateFile: i < files.count ? files[i].candidate : nil)
        }
        psnr = result.psnr
        ssim = result.ssim
        ratio = result.ratio
        self.images = images
        self.sideBySide = sideBySide
        self.loadSeconds = loadSeconds
    }
}
