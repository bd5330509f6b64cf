/// The hyperparameters of an ALTER run. Defaults are the paper's (ALTER.md sections 4 to 6).
public struct ALTERSettings: Codable, Sendable, Equatable {
    /// How timesteps are assigned to experts.
    public enum Routing: String, Codable, Sendable, CaseIterable {
        /// A learned router over the timestep embedding (ALTER).
        case learned
        /// Equal, fixed timestep intervals, one per expert.
        case intervals
        /// One mask for every timestep (a single expert).
        case `static`
        /// One contiguous timestep interval per expert, in order, with learned lengths.
        case segments
    }

    /// Number of temporal experts N_e.
    public var experts = 10
    /// Target kept fraction of total UNet MACs, averaged over the training timesteps.
    public var keep = 0.65
    public var routing = Routing.learned
    /// Width of the expert generator's input rows.
    public var embeddingWidth = 64
    /// Hidden width of the expert generator's MLP.
    public var generatorHidden = 256
    /// Hidden width of the router's MLP.
    public var routerHidden = 64
    /// Gumbel temperature of unit decisions and of routing.
    public var temperature = 0.4
    /// Offset b added to unit logits (so every unit starts kept).
    public var offset = 4.0
    /// Loss weights of the UNet objective.
    public var denoiseWeight = 1e-4
    public var outputKDWeight = 1.0
    public var featureKDWeight = 1.0
    /// Loss weights of the hypernetwork objective.
    public var ratioWeight = 5.0
    public var balanceWeight = 1.0
    /// AdamW, two parameter groups.
    public var learningRateUNet = 1e-5
    public var learningRateHypernet = 7e-5
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var adamEpsilon = 1e-8
    public var weightDecay = 1e-2
    public var warmupSteps = 250
    /// Global gradient-norm clip per group (0 disables).
    public var gradientClip = 1.0
    /// Probability that a training sample's context is replaced by the data's `uncond` (the empty
    /// prompt's context) for both the student and the teacher, so that the unconditional prediction
    /// classifier-free guidance uses is distilled too (docs/method.md, section 9). 0: never.
    public var captionDropout = 0.0
    /// Loss weight of guidance distillation (docs/method.md, section 5): each sample also runs with
    /// the data's `uncond`, and the student's classifier-free-guided output at `guidanceKDScale` is
    /// distilled. 0: off (one context per sample).
    public var guidanceKDWeight = 0.0
    /// The guidance scale g of that term.
    public var guidanceKDScale = 7.5
    /// Loss weight of the routing smoothness term (learned routing; docs/method.md, section 5). 0: off.
    public var smoothnessWeight = 0.0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case experts, keep, routing, embeddingWidth = "embedding_width", generatorHidden = "generator_hidden"
        case routerHidden = "router_hidden", temperature, offset, denoiseWeight = "denoise_weight"
        case outputKDWeight = "output_kd_weight", featureKDWeight = "feature_kd_weight", ratioWeight = "ratio_weight"
        case balanceWeight = "balance_weight", learningRateUNet = "lr_unet", learningRateHypernet = "lr_hypernet"
        case beta1, beta2, adamEpsilon = "adam_epsilon", weightDecay = "weight_decay", warmupSteps = "warmup_steps"
        case gradientClip = "gradient_clip", captionDropout = "caption_dropout"
        case smoothnessWeight = "smoothness_weight", guidanceKDWeight = "guidance_kd_weight", guidanceKDScale = "guidance_kd_scale"
    }

    /// Decodes every key; `caption_dropout`, `smoothness_weight`, `guidance_kd_weight` and
    /// `guidance_kd_scale` may be absent (runs written before they existed: the defaults, all off).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        experts = try c.decode(Int.self, forKey: .experts)
        keep = try c.decode(Double.self, forKey: .keep)
        routing = try c.decode(Routing.self, forKey: .routing)
        embeddingWidth = try c.decode(Int.self, forKey: .embeddingWidth)
        generatorHidden = try c.decode(Int.self, forKey: .generatorHidden)
        routerHidden = try c.decode(Int.self, forKey: .routerHidden)
        temperature = try c.decode(Double.self, forKey: .temperature)
        offset = try c.decode(Double.self, forKey: .offset)
        denoiseWeight = try c.decode(Double.self, forKey: .denoiseWeight)
        outputKDWeight = try c.decode(Double.self, forKey: .outputKDWeight)
        featureKDWeight = try c.decode(Double.self, forKey: .featureKDWeight)
        ratioWeight = try c.decode(Double.self, forKey: .ratioWeight)
        balanceWeight = try c.decode(Double.self, forKey: .balanceWeight)
        learningRateUNet = try c.decode(Double.self, forKey: .learningRateUNet)
        learningRateHypernet = try c.decode(Double.self, forKey: .learningRateHypernet)
        beta1 = try c.decode(Double.self, forKey: .beta1)
        beta2 = try c.decode(Double.self, forKey: .beta2)
        adamEpsilon = try c.decode(Double.self, forKey: .adamEpsilon)
        weightDecay = try c.decode(Double.self, forKey: .weightDecay)
        warmupSteps = try c.decode(Int.self, forKey: .warmupSteps)
        gradientClip = try c.decode(Double.self, forKey: .gradientClip)
        captionDropout = try c.decodeIfPresent(Double.self, forKey: .captionDropout) ?? 0
        smoothnessWeight = try c.decodeIfPresent(Double.self, forKey: .smoothnessWeight) ?? 0
        guidanceKDWeight = try c.decodeIfPresent(Double.self, forKey: .guidanceKDWeight) ?? 0
        guidanceKDScale = try c.decodeIfPresent(Double.self, forKey: .guidanceKDScale) ?? 7.5
    }
}
