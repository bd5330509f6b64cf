import Dispatch
import ExpertBundle
import StableDiffusion
import TensorCore

/// Options for loading a whole text-to-image model.
public struct TextToImageLoadOptions: Sendable {
    public var unet = LoadOptions()
    public var textEncoder = CLIPTextLoadOptions()
    public var vae = VAELoadOptions()
    /// The noise schedule and prediction type to sample with; nil: a pipeline folder's
    /// `scheduler/scheduler_config.json`, else SD2.1's (v_prediction; noted in `notes`).
    public var schedulerConfig: SchedulerConfig?
    public init() {}
}

/// Stable Diffusion from a prompt to an image, as diffusers' `StableDiffusionPipeline` makes it:
/// the prompts are tokenized and encoded (`encodePrompts`), the latents denoised with
/// classifier-free guidance by a `RoutedSampler` (a dense UNet, or a bundle's routed experts), and
/// decoded by the VAE after the division by its scaling factor.
///
/// ```swift
/// let pipeline = try TextToImagePipeline(pipeline: "sd21/")
/// var options = RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: 50))
/// options.seed = 1
/// let result = try pipeline.generate(prompts: ["a lighthouse at dusk"], negativePrompts: nil, options: options)
/// let pixels = TextToImagePipeline.denormalize(result.images)   // [B, 3, H, W] in [0, 1]
/// ```
public final class TextToImagePipeline {
    public let components: TextToImageComponents
    /// The denoiser: its UNet, experts and scheduler config.
    public let sampler: RoutedSampler
    /// Remarks for the user (the sampler's, and defaults assumed while loading); the library never prints.
    public let notes: [String]

    /// A pipeline from components and a sampler (the seam for any source of the parts). Checks
    /// that the text encoder's width is the UNet's cross_attention_dim and that the VAE's latent
    /// channels are the UNet's input and output channels.
    public init(components: TextToImageComponents, sampler: RoutedSampler, notes: [String] = []) throws(TextToImageError) {
        let u = sampler.unet.config, t = components.textEncoder.config, v = components.vae.config
        guard t.hiddenSize == u.crossAttentionDim else {
            throw .mismatch("the text encoder's hidden_size is \(t.hiddenSize), the UNet's cross_attention_dim is \(u.crossAttentionDim)")
        }
        guard v.latentChannels == u.inChannels, v.latentChannels == u.outChannels else {
            throw .mismatch("the VAE's latent_channels is \(v.latentChannels), the UNet has \(u.inChannels) input and \(u.outChannels) output channels")
        }
        self.components = components
        self.sampler = sampler
        self.notes = sampler.notes + notes
    }

    /// Every part from a diffusers pipeline folder (`tokenizer/`, `text_encoder/`, `unet/`,
    /// `vae/`, `scheduler/`), loaded strictly; every UNet call dense.
    public convenience init(pipeline path: String, options: TextToImageLoadOptions = TextToImageLoadOptions()) throws(TextToImageError) {
        let components = try TextToImageComponents(pipeline: path, textEncoder: options.textEncoder, vae: options.vae)
        let (sampler, notes) = try Self.denseSampler(path, options)
        try self.init(components: components, sampler: sampler, notes: notes)
    }

    /// UNet (`model.diffusion_model.*`), VAE (`first_stage_model.*`) and text encoder
    /// (`cond_stage_model.model.*`) from an original SD2.x single file, with `tokenizer` given
    /// apart; every UNet call dense. Such files name no scheduler: without
    /// `options.schedulerConfig`, SD2.1's (v_prediction, as the 768 model) is used.
    public convenience init(singleFile path: String, tokenizer: CLIPTokenizer, tokenizerSource: String = "given",
                            options: TextToImageLoadOptions = TextToImageLoadOptions()) throws(TextToImageError) {
        let components = try TextToImageComponents(singleFile: path, tokenizer: tokenizer, tokenizerSource: tokenizerSource,
                                                   textEncoder: options.textEncoder, vae: options.vae)
        let (sampler, notes) = try Self.denseSampler(path, options)
        try self.init(components: components, sampler: sampler, notes: notes)
    }

    /// A bundle's routed experts (`RoutedSampler(bundle:)`: its UNet, routing table and scheduler
    /// config) with `components` from elsewhere (for example `TextToImageComponents(pipeline:)`
    /// of the model the bundle was compressed from).
    public convenience init(bundle: ExpertBundle, components: TextToImageComponents) throws(TextToImageError) {
        let sampler: RoutedSampler
        do { sampler = try RoutedSampler(bundle: bundle) } catch { throw .bundle(error) }
        try self.init(components: components, sampler: sampler)
    }

    private static func denseSampler(_ path: String, _ options: TextToImageLoadOptions) throws(TextToImageError) -> (RoutedSampler, [String]) {
        let checkpoint: UNetCheckpoint
        do { checkpoint = try UNetCheckpoint(path: path, options: options.unet) } catch { throw .unet(error) }
        let unet: UNet
        do { unet = try UNet(checkpoint: checkpoint) } catch { throw .parameters(component: "\(path): UNet", "\(error)") }
        var notes: [String] = []
        let config: SchedulerConfig
        if let c = options.schedulerConfig {
            config = c
        } else if let file = checkpoint.source.schedulerConfigPath {
            do { config = try SchedulerConfig(contentsOfFile: file) } catch { throw .scheduler(error) }
        } else {
            config = .sd21
            notes.append("\(path): no scheduler config; sampling with SD2.1's (\(config.predictionType.rawValue))")
        }
        return (RoutedSampler(unet: unet, schedulerConfig: config), notes)
    }

    /// Whether diffusers runs classifier-free guidance at scale `guidance`: only above 1 (at 1 and
    /// below there is no unconditional half and the scale is not used).
    public static func usesGuidance(_ guidance: Float) -> Bool { guidance > 1 }

    /// The prompts as diffusers' `StableDiffusionPipeline.encode_prompt` makes them for SD2.x: each
    /// prompt tokenized to the tokenizer's length (start token, truncated text, end token,
    /// padding) and encoded (`last_hidden_state`, no attention mask); with guidance (scale above
    /// 1) the negative prompts likewise, the empty prompt for each when `negativePrompts` is nil.
    /// Prompts and negative prompts are encoded as two batches, as diffusers does.
    public func encodePrompts(_ prompts: [String], negativePrompts: [String]?, guidance: Float) throws(TextToImageError) -> PromptEmbeddings {
        guard !prompts.isEmpty else { throw .input("no prompts") }
        guard guidance.isFinite else { throw .input("the guidance scale must be finite, not \(guidance)") }
        if let n = negativePrompts, n.count != prompts.count {
            throw .input("\(n.count) negative prompt\(n.count == 1 ? "" : "s") for \(prompts.count) prompt\(prompts.count == 1 ? "" : "s") (give one per prompt)")
        }
        let tokenizer = components.tokenizer
        let tokens = prompts.map { tokenizer.tokenize($0) }
        let context = try encode(tokens)
        guard Self.usesGuidance(guidance) else { return PromptEmbeddings(context: context, uncond: nil, prompts: tokens, negativePrompts: []) }
        let negatives = (negativePrompts ?? Array(repeating: "", count: prompts.count)).map { tokenizer.tokenize($0) }
        return PromptEmbeddings(context: context, uncond: try encode(negatives), prompts: tokens, negativePrompts: negatives)
    }

    private func encode(_ tokens: [CLIPTokenization]) throws(TextToImageError) -> Tensor {
        do { return try components.textEncoder.encode(tokens.map(\.inputIds)) } catch { throw .textEncoder(error) }
    }

    /// The latent size of an image of `height` x `width` pixels: each divided by the VAE's
    /// downsampling factor (8 for SD), which must divide it. The sampler checks the UNet's own
    /// multiple.
    public func latentSize(height: Int, width: Int) throws(TextToImageError) -> (height: Int, width: Int) {
        let f = components.vae.config.downsamplingFactor
        guard height > 0, width > 0, height % f == 0, width % f == 0 else {
            throw .input("image size \(height)x\(width): height and width must be positive multiples of \(f) (the VAE's downsampling factor)")
        }
        return (height / f, width / f)
    }

    /// The images of UNet latents [B, C, h, w]: the VAE decoder's output for latents / scaling
    /// factor, [B, 3, h*f, w*f], before postprocessing.
    public func decode(_ latents: Tensor) throws(TextToImageError) -> Tensor {
        do { return try components.vae.decodeScaled(latents) } catch { throw .vae(error) }
    }

    /// One run: `encodePrompts`, the denoising loop with `options` (the seed's noise, or
    /// `options.noise`; at a guidance scale of at most 1 without an unconditional half, as in
    /// diffusers), then `decode`. `progress` receives each UNet call when it is done and the number
    /// of calls of the run.
    public func generate(prompts: [String], negativePrompts: [String]?, options: RoutedSampler.Options,
                         progress: (Sampler.Call, Int) -> Void = { _, _ in }) throws(TextToImageError) -> TextToImageResult {
        try generate(prompts: prompts, negativePrompts: negativePrompts, options: options, decodeEach: false, progress: progress)
    }

    /// `generate`; `decodeEach`: the VAE decodes the images one at a time (faster than a batch at
    /// SD's image sizes on the CPU, and each image then equals the one decoded alone).
    func generate(prompts: [String], negativePrompts: [String]?, options: RoutedSampler.Options, decodeEach: Bool,
                  progress: (Sampler.Call, Int) -> Void) throws(TextToImageError) -> TextToImageResult {
        let start = DispatchTime.now().uptimeNanoseconds
        let embeddings = try encodePrompts(prompts, negativePrompts: negativePrompts, guidance: options.guidance)
        let encoded = DispatchTime.now().uptimeNanoseconds
        var sampling = options
        if !Self.usesGuidance(options.guidance) { sampling.guidance = 1 }
        let sampled: Sampler.Result
        do { sampled = try sampler.sample(context: embeddings.context, uncond: embeddings.uncond, options: sampling, progress: progress) } catch {
            throw .sampling(error)
        }
        let denoised = DispatchTime.now().uptimeNanoseconds
        let images: Tensor
        if decodeEach && sampled.latents.shape[0] > 1 {
            images = Self.stack(try (0..<sampled.latents.shape[0]).map { i throws(TextToImageError) in try decode(Self.item(sampled.latents, i)) })
        } else {
            images = try decode(sampled.latents)
        }
        let decoded = DispatchTime.now().uptimeNanoseconds
        func seconds(_ a: UInt64, _ b: UInt64) -> Double { Double(b - a) / 1e9 }
        return TextToImageResult(images: images, latents: sampled.latents, embeddings: embeddings, calls: sampled.calls,
                                 seconds: StageSeconds(encode: seconds(start, encoded), denoise: seconds(encoded, denoised),
                                                       decode: seconds(denoised, decoded)),
                                 denseMACsPerSample: sampled.denseMACsPerSample)
    }

    /// diffusers' `VaeImageProcessor.denormalize`: images from the decoder's range to [0, 1]
    /// (x * 0.5 + 0.5, clamped), same shape; a NaN stays NaN.
    public static func denormalize(_ images: Tensor) -> Tensor {
        let y = Tensor(uninitialized: images.shape)
        for i in 0..<images.count {
            let v = images.data[i] * 0.5 + 0.5
            y.data[i] = v < 0 ? 0 : (v > 1 ? 1 : v)
        }
        return y
    }
}
