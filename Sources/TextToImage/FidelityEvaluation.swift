import ExpertBundle
import Images
import StableDiffusion

/// How close a candidate model's images come to a reference model's: both draw the same prompts
/// with the same seeds (`TextToImagePipeline.draw`: each image from its own seed's noise, the same
/// latent size, guidance and negative prompts), each with its own scheduler and steps, and every
/// pair is compared in image space (`ImageMetrics.psnr` and `ImageMetrics.ssim` on the 8-bit
/// images), with the MACs and wall time each model spent on it.
///
/// ```swift
/// var reference = RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: 50))
/// var candidate = RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: 25))
/// let eval = FidelityEvaluation(reference: dense, referenceOptions: reference, candidate: compressed, candidateOptions: candidate)
/// let result = try eval.run([PromptEntry(prompt: "a lighthouse")], negativePrompt: nil, seeds: [1, 2])
/// print(result.psnr.mean, result.ssim.mean, result.ratio.macs)
/// ```
public struct FidelityEvaluation {
    public let reference: TextToImagePipeline
    public let candidate: TextToImagePipeline
    /// The reference's sampling options (scheduler, steps, guidance, latent size).
    public let referenceOptions: RoutedSampler.Options
    /// The candidate's; its guidance and latent size are the reference's (see `init`).
    public let candidateOptions: RoutedSampler.Options

    /// Which model a progress report is about.
    public enum Side: String, Sendable { case reference, candidate }

    /// An evaluation of `candidate` against `reference`. The candidate draws with
    /// `candidateOptions`' scheduler and steps but the reference's guidance and latent size (the
    /// reference's latent size, else its sampler's default), so both images of a pair have the
    /// same size and conditioning.
    public init(reference: TextToImagePipeline, referenceOptions: RoutedSampler.Options,
                candidate: TextToImagePipeline, candidateOptions: RoutedSampler.Options) {
        self.reference = reference
        self.candidate = candidate
        var r = referenceOptions
        let (h, w) = reference.sampler.defaultLatentSize
        r.latentHeight = r.latentHeight ?? h
        r.latentWidth = r.latentWidth ?? w
        var c = candidateOptions
        c.guidance = r.guidance
        c.latentHeight = r.latentHeight
        c.latentWidth = r.latentWidth
        self.referenceOptions = r
        self.candidateOptions = c
    }

    /// Draws every prompt and seed (prompts outermost) with the reference, then the candidate,
    /// `batch` pairs at a time (`TextToImagePipeline.draw`: an image does not depend on the batch
    /// size), and compares the two images. `keepImages`: the result also holds both images of every
    /// pair. `progress` receives the index of the first pair of the batch being drawn, the side,
    /// the UNet call and the calls per image. Throws when the two VAEs make images of different
    /// sizes or SSIM's window does not fit.
    public func run(_ entries: [PromptEntry], negativePrompt: String?, seeds: [UInt64], keepImages: Bool = false, batch: Int = 1,
                    progress: (Int, Side, Sampler.Call, Int) -> Void = { _, _, _, _ in }) throws(TextToImageError) -> FidelityResult {
        guard !entries.isEmpty else { throw .input("no prompts") }
        guard !seeds.isEmpty else { throw .input("no seeds") }
        guard entries.count.multipliedReportingOverflow(by: seeds.count).partialValue <= TextToImagePipeline.maxImages,
              entries.count <= TextToImagePipeline.maxImages, seeds.count <= TextToImagePipeline.maxImages else {
            throw .input("\(entries.count) prompts x \(seeds.count) seeds is more than \(TextToImagePipeline.maxImages) images")
        }
        guard (1...TextToImagePipeline.maxBatch).contains(batch) else {
            throw .input("batch \(batch): give 1 to \(TextToImagePipeline.maxBatch) pairs per batch")
        }
        let fr = reference.components.vae.config.downsamplingFactor, fc = candidate.components.vae.config.downsamplingFactor
        guard fr == fc else {
            throw .mismatch("the reference's VAE scales latents by \(fr), the candidate's by \(fc): their images differ in size")
        }
        var pairs: [FidelityPair] = []
        var images: [(reference: RGBImage, candidate: RGBImage)] = []
        // (entry, seed) pairs, prompts outermost, drawn `batch` at a time by each model.
        let jobs = TextToImagePipeline.DrawingJob.all(entries, seeds: seeds)
        for first in stride(from: 0, to: jobs.count, by: batch) {
            let chunk = Array(jobs[first..<min(jobs.count, first + batch)])
            func drawAll(_ pipe: TextToImagePipeline, _ options: RoutedSampler.Options, _ side: Side) throws(TextToImageError) -> [DrawnImage] {
                try pipe.draw(jobs: chunk, negativePrompt: negativePrompt, options: options, batch: batch) { _, call, n in
                    progress(first, side, call, n)
                }.images
            }
            let r = try drawAll(reference, referenceOptions, .reference)
            let c = try drawAll(candidate, candidateOptions, .candidate)
            for (i, job) in chunk.enumerated() {
                let psnr: Double, ssim: Double
                do {
                    psnr = try ImageMetrics.psnr(r[i].image, c[i].image)
                    ssim = try ImageMetrics.ssim(r[i].image, c[i].image)
                } catch { throw .input("prompt \(job.promptIndex), seed \(job.seed): \(error)") }
                pairs.append(FidelityPair(promptIndex: job.promptIndex, prompt: job.entry.prompt, negativePrompt: r[i].negativePrompt, seed: job.seed,
                                          psnr: psnr, ssim: ssim, reference: DrawingCost(r[i]), candidate: DrawingCost(c[i])))
                if keepImages { images.append((r[i].image, c[i].image)) }
            }
        }
        let (h, w) = reference.sampler.defaultLatentSize
        let latent = [referenceOptions.latentHeight ?? h, referenceOptions.latentWidth ?? w]
        return FidelityResult(pairs: pairs, images: images, size: latent.map { $0 * fr }, latent: latent)
    }
}

/// What one model spent on one image.
public struct DrawingCost: Encodable, Sendable, Equatable {
    /// MACs of every UNet call of the image (as `alter sample --json` counts them).
    public var macs: Int
    /// The same calls made dense.
    public var denseMACs: Int
    /// Wall time of the denoising loop.
    public var denoiseSeconds: Double
    /// Wall time of encoding, denoising and decoding.
    public var totalSeconds: Double

    enum CodingKeys: String, CodingKey, CaseIterable {
        case macs, denseMACs = "dense_macs", denoiseSeconds = "denoise_seconds", totalSeconds = "total_seconds"
    }

    public init(macs: Int, denseMACs: Int, denoiseSeconds: Double, totalSeconds: Double) {
        self.macs = macs
        self.denseMACs = denseMACs
        self.denoiseSeconds = denoiseSeconds
        self.totalSeconds = totalSeconds
    }

    init(_ d: DrawnImage) {
        self.init(macs: d.macs, denseMACs: d.denseMACs,
                  denoiseSeconds: d.seconds.denoise, totalSeconds: d.seconds.encode + d.seconds.denoise + d.seconds.decode)
    }
}

/// One prompt and seed drawn by both models.
public struct FidelityPair: Sendable {
    public var promptIndex: Int
    public var prompt: String
    /// The negative prompt used (nil without guidance).
    public var negativePrompt: String?
    public var seed: UInt64
    /// dB; `+infinity` for identical images.
    public var psnr: Double
    public var ssim: Double
    public var reference: DrawingCost
    public var candidate: DrawingCost
}

/// Mean, population standard deviation, minimum and maximum of a metric's finite values, with
/// how many there were and how many were infinite (left out: an identical pair's PSNR).
public struct MetricSummary: Encodable, Sendable, Equatable {
    /// nil when no value is finite.
    public var mean: Double?
    public var std: Double?
    public var min: Double?
    public var max: Double?
    /// Finite values summarised.
    public var count: Int
    /// Values left out for being infinite.
    public var infiniteCount: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case mean, std, min, max, count, infiniteCount = "infinite_count"
    }

    public init(_ values: [Double]) {
        let finite = values.filter(\.isFinite)
        count = finite.count
        infiniteCount = values.count - finite.count
        guard !finite.isEmpty else { return }
        let m = finite.reduce(0, +) / Double(finite.count)
        mean = m
        std = (finite.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(finite.count)).squareRoot()
        min = finite.min()
        max = finite.max()
    }

    /// Every key is always present (null when there is no finite value).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(mean, forKey: .mean)
        try c.encode(std, forKey: .std)
        try c.encode(min, forKey: .min)
        try c.encode(max, forKey: .max)
        try c.encode(count, forKey: .count)
        try c.encode(infiniteCount, forKey: .infiniteCount)
    }
}

/// What `FidelityEvaluation.run` measured.
public struct FidelityResult: Sendable {
    /// One per prompt and seed, prompts outermost.
    public var pairs: [FidelityPair]
    /// Both images of every pair, in the order of `pairs` (empty unless asked for).
    public var images: [(reference: RGBImage, candidate: RGBImage)]
    /// Image [height, width] in pixels.
    public var size: [Int]
    /// Latent [height, width].
    public var latent: [Int]

    public var psnr: MetricSummary { MetricSummary(pairs.map(\.psnr)) }
    public var ssim: MetricSummary { MetricSummary(pairs.map(\.ssim)) }
    /// Mean cost per image of the reference.
    public var referenceCost: DrawingCost { Self.mean(pairs.map(\.reference)) }
    /// Mean cost per image of the candidate.
    public var candidateCost: DrawingCost { Self.mean(pairs.map(\.candidate)) }
    /// Candidate / reference of the mean costs per image.
    public var ratio: CostRatio {
        let r = referenceCost, c = candidateCost
        return CostRatio(macs: Double(c.macs) / Double(Swift.max(r.macs, 1)),
                         denoiseSeconds: c.denoiseSeconds / Swift.max(r.denoiseSeconds, .leastNonzeroMagnitude),
                         totalSeconds: c.totalSeconds / Swift.max(r.totalSeconds, .leastNonzeroMagnitude))
    }

    /// The mean per image; MACs summed then divided (rounded down).
    static func mean(_ costs: [DrawingCost]) -> DrawingCost {
        let n = Swift.max(costs.count, 1)
        return DrawingCost(macs: costs.reduce(0) { $0 + $1.macs } / n, denseMACs: costs.reduce(0) { $0 + $1.denseMACs } / n,
                           denoiseSeconds: costs.reduce(0) { $0 + $1.denoiseSeconds } / Double(n),
                           totalSeconds: costs.reduce(0) { $0 + $1.totalSeconds } / Double(n))
    }
}

/// Candidate / reference of the costs per image.
public struct CostRatio: Encodable, Sendable, Equatable {
    public var macs: Double
    public var denoiseSeconds: Double
    public var totalSeconds: Double
    enum CodingKeys: String, CodingKey, CaseIterable {
        case macs, denoiseSeconds = "denoise_seconds", totalSeconds = "total_seconds"
    }
}
