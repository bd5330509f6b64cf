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

    /// Draws one image per prompt and seed (prompts outermost), one image at a time (UNet batch 2
    /// with guidance, 1 without), each from standard normal noise drawn from its own seed alone
    /// (`RoutedSampler.noise(seed:shape:)` for [1, C, h, w]): an image depends on its prompt,
    /// negative prompt and seed only, not on the other images of the run. `negativePrompt` applies
    /// to the entries without one of their own. `options.seed` and `options.noise` are not used.
    /// `progress` receives the image index, the UNet call and the calls per image.
    public func draw(_ entries: [PromptEntry], negativePrompt: String?, seeds: [UInt64], options: RoutedSampler.Options,
                     progress: (Int, Sampler.Call, Int) -> Void = { _, _, _ in }) throws(TextToImageError) -> DrawingResult {
        guard !entries.isEmpty else { throw .input("no prompts") }
        guard !seeds.isEmpty else { throw .input("no seeds") }
        guard entries.count <= Self.maxImages, seeds.count <= Self.maxImages, entries.count * seeds.count <= Self.maxImages else {
            throw .input("\(entries.count) prompts x \(seeds.count) seeds is more than \(Self.maxImages) images")
        }
        let size = latentSize(options)
        var result = DrawingResult(images: [], latentSize: size)
        let channels = sampler.unet.config.inChannels
        for (p, entry) in entries.enumerated() {
            let negative = entry.negativePrompt ?? negativePrompt
            for seed in seeds {
                var o = options
                o.noise = RoutedSampler.noise(seed: seed, shape: [1, channels, size.height, size.width])
                o.latentHeight = size.height
                o.latentWidth = size.width
                let index = result.images.count
                let run = try generate(prompts: [entry.prompt], negativePrompts: negative.map { [$0] }, options: o) { call, total in
                    progress(index, call, total)
                }
                let image: RGBImage
                do { image = try RGBImage(tensor: run.images) } catch { throw .input("image \(index): \(error)") }
                let used = Self.usesGuidance(options.guidance) ? (negative ?? "") : nil
                result.images.append(DrawnImage(promptIndex: p, prompt: entry.prompt, negativePrompt: used, seed: seed, image: image,
                                                latents: run.latents, calls: run.calls, seconds: run.seconds, denseMACsPerSample: run.denseMACsPerSample))
            }
        }
        return result
    }

    /// The latent size of `options` (its latent height and width, else the sampler's default).
    func latentSize(_ options: RoutedSampler.Options) -> (height: Int, width: Int) {
        let (h, w) = sampler.defaultLatentSize
        return (options.latentHeight ?? h, options.latentWidth ?? w)
    }
}
