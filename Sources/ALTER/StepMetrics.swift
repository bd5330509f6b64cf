/// What one training iteration measured; one line of `metrics.jsonl`.
public struct StepMetrics: Codable, Sendable, Equatable {
    /// 1-based iteration number.
    public var step: Int
    /// UNet objective and its terms (with the hard mask table).
    public var loss: Double
    public var outputKD: Double
    public var featureKD: Double
    public var denoise: Double
    /// The guidance-distillation term (only with `guidance_kd_weight` > 0).
    public var guidanceKD: Double?
    /// Hypernetwork objective and its terms (nil after the hypernetwork phase).
    public var hypernetLoss: Double?
    public var performance: Double?
    public var ratio: Double?
    public var balance: Double?
    /// The routing smoothness term (only with `smoothness_weight` > 0).
    public var smoothness: Double?
    /// Kept fraction of total MACs of the mask table used in this step, over all training timesteps.
    public var keptFraction: Double
    /// Share of training timesteps per expert.
    public var expertShares: [Double]
    public var learningRateUNet: Double
    public var learningRateHypernet: Double?
    public var gradientNormUNet: Double
    public var gradientNormHypernet: Double?
    public var seconds: Double

    enum CodingKeys: String, CodingKey, CaseIterable {
        case step, loss, outputKD = "output_kd_loss", featureKD = "feature_kd_loss", denoise = "denoise_loss"
        case guidanceKD = "guidance_kd_loss"
        case hypernetLoss = "hypernet_loss", performance = "performance_loss", ratio = "ratio_loss", balance = "balance_loss"
        case smoothness = "smoothness_loss"
        case keptFraction = "kept_mac_fraction", expertShares = "expert_shares"
        case learningRateUNet = "lr_unet", learningRateHypernet = "lr_hypernet"
        case gradientNormUNet = "grad_norm_unet", gradientNormHypernet = "grad_norm_hypernet", seconds
    }
}
