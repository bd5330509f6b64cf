import Dispatch
import ExpertBundle
import Images
import StableDiffusion
import TensorCore

/// One image of a drawing run: a prompt, a seed, and what came of them.
public struct DrawnImage: Sendable {
    /// Position of the prompt in the run's list.
    public var promptIndex: Int
    public var prompt: String
    /// The negative prompt used (the empty prompt when none was given; nil without guidance).
    public var negativePrompt: String?
    public var seed: UInt64
    public var image: RGBImage
    /// The final latents [1, C, h, w].
    public var latents: Tensor
    /// Every UNet call of this image.
    public var calls: [Sampler.Call]
    public var seconds: StageSeconds
    /// MACs of one dense UNet call per sample at the sampled size.
    public var denseMACsPerSample: Int
    /// MACs of every UNet call of this image.
    public var macs: Int { calls.reduce(0) { $0 + $1.macs } }
    /// MACs of the same calls made dense.
    public var denseMACs: Int { calls.reduce(0) { $0 + denseMACsPerSample * $1.batch } }
}

/// What `TextToImagePipeline.draw` made: one image per prompt and seed, prompts outermost.
public struct DrawingResult: Sendable {
    public var images: [DrawnImage]
    /// Latent height and width.
    public var latentSize: (height: Int, width: Int)
    /// MACs of every UNet call of the run.
    public var macs: Int { images.reduce(0) { $0 + $1.macs } }
    /// MACs of the same calls made dense.
    public var denseMACs: Int { images.reduce(0) { $0 + $1.denseMACs } }
    /// The images laid out as a grid: one row per prompt, one column per seed.
    public func grid(seedCount: Int) throws(ImageError) -> RGBImage {
        try RGBImage.grid(images.map(\.image), rows: images.count / max(seedCount, 1), cols: seedCount)
    }
}

extension TextToImagePipeline {
    /// The most images one `draw` call makes.
    public static let maxImages = 10_000
    /// The most images denoised together (`draw`'s `batch`).
    public static let maxBatch = 256

    /// Draws one image per prompt and seed (prompts outermost), `batch` images at a time (one UNet
    /// call on 2 x `batch` samples with guidance, `batch` without; the last batch may be smaller;
    /// the VAE decodes one image at a time), each from standard normal noise drawn from its own
    /// seed alone (`RoutedSampler.noise(seed:shape:)` for [1, C, h, w]): an image depends on its
    /// prompt, negative prompt and seed only, not on the other images of the run (the images of a
    /// batch share the scheduler's timesteps, hence the routed expert of every call). The batch
    /// size changes an image only by rounding (matrix products of another size sum in another
    /// order): final latents within 1e-4 of the image drawn alone, the 8-bit image within 1 level.
    /// `negativePrompt` applies to the entries without one of their own. `options.seed` and
    /// `options.noise` are not used. Each image's `calls`, MACs and `seconds` are its share of its
    /// batch's: its own samples of every call, and the batch's wall time divided by the images in
    /// it. `progress` receives the index of the first image of the batch being drawn, the UNet
    /// call and the calls per image.
    public func draw(_ entries: [PromptEntry], negativePrompt: String?, seeds: [UInt64], options: RoutedSampler.Options, batch: Int = 1,
                     progress: (Int, Sampler.Call, Int) -> Void = { _, _, _ in }) throws(TextToImageError) -> DrawingResult {
        guard !entries.isEmpty else { throw .input("no prompts") }
        guard !seeds.isEmpty else { throw .input("no seeds") }
        guard entries.count <= Self.maxImages, seeds.count <= Self.maxImages, entries.count * seeds.count <= Self.maxImages else {
            throw .input("\(entries.count) prompts x \(seeds.count) seeds is more than \(Self.maxImages) images")
        }
        return try draw(jobs: DrawingJob.all(entries, seeds: seeds), negativePrompt: negativePrompt, options: options, batch: batch,
                        progress: progress)
    }

    /// One image to draw: a prompt entry (its position in the run's list) and a seed.
    struct DrawingJob {
        var promptIndex: Int
        var entry: PromptEntry
        var seed: UInt64

        /// Every entry with every seed, prompts outermost.
        static func all(_ entries: [PromptEntry], seeds: [UInt64]) -> [DrawingJob] {
            entries.enumerated().flatMap { p, entry in seeds.map { DrawingJob(promptIndex: p, entry: entry, seed: $0) } }
        }
    }

    /// `draw` of the images `jobs` lists, in that order (sizes checked by the caller).
    func draw(jobs: [DrawingJob], negativePrompt: String?, options: RoutedSampler.Options, batch: Int,
              progress: (Int, Sampler.Call, Int) -> Void) throws(TextToImageError) -> DrawingResult {
        guard (1...Self.maxBatch).contains(batch) else { throw .input("batch \(batch): give 1 to \(Self.maxBatch) images per batch") }
        let size = latentSize(options)
        var result = DrawingResult(images: [], latentSize: size)
        let channels = sampler.unet.config.inChannels
        let guided = Self.usesGuidance(options.guidance)
        for first in stride(from: 0, to: jobs.count, by: batch) {
            let chunk = jobs[first..<min(jobs.count, first + batch)]
            let negatives = chunk.map { $0.entry.negativePrompt ?? negativePrompt ?? "" }
            var o = options
            o.noise = Self.stack(chunk.map { RoutedSampler.noise(seed: $0.seed, shape: [1, channels, size.height, size.width]) })
            o.latentHeight = size.height
            o.latentWidth = size.width
            let run = try generate(prompts: chunk.map(\.entry.prompt), negativePrompts: negatives, options: o, decodeEach: true) { call, total in
                progress(first, call, total)
            }
            let n = chunk.count
            let seconds = StageSeconds(encode: run.seconds.encode / Double(n), denoise: run.seconds.denoise / Double(n),
                                       decode: run.seconds.decode / Double(n))
            let calls = run.calls.map { c in
                var own = c
                own.batch = c.batch / n
                own.macs = c.macsPerSample * own.batch
                own.seconds = c.seconds / Double(n)
                return own
            }
            for (i, job) in chunk.enumerated() {
                let index = first + i
                let image: RGBImage
                do { image = try RGBImage(tensor: Self.item(run.images, i)) } catch { throw .input("image \(index): \(error)") }
                result.images.append(DrawnImage(promptIndex: job.promptIndex, prompt: job.entry.prompt, negativePrompt: guided ? negatives[i] : nil,
                                                seed: job.seed, image: image, latents: Self.item(run.latents, i), calls: calls, seconds: seconds,
                                                denseMACsPerSample: run.denseMACsPerSample))
            }
        }
        return result
    }

    /// The latent size of `options` (its latent height and width, else the sampler's default).
    func latentSize(_ options: RoutedSampler.Options) -> (height: Int, width: Int) {
        let (h, w) = sampler.defaultLatentSize
        return (options.latentHeight ?? h, options.latentWidth ?? w)
    }

    /// Tensors [1, ...] of one shape stacked along the batch axis: [N, ...].
    static func stack(_ items: [Tensor]) -> Tensor {
        precondition(!items.isEmpty && items.allSatisfy { $0.shape == items[0].shape && $0.shape.first == 1 }, "stack: shapes differ")
        let y = Tensor(uninitialized: [items.count] + items[0].shape.dropFirst())
        for (i, t) in items.enumerated() { (y.data + i * t.count).update(from: t.data, count: t.count) }
        return y
    }

    /// Sample `i` of `x` [N, ...] as [1, ...].
    static func item(_ x: Tensor, _ i: Int) -> Tensor {
        let per = x.count / x.shape[0]
        let y = Tensor(uninitialized: [1] + x.shape.dropFirst())
        y.data.update(from: x.data + i * per, count: per)
        return y
    }
}
