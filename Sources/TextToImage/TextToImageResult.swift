import StableDiffusion
import TensorCore

/// What one prompt-to-image run made.
public struct TextToImageResult: Sendable {
    /// [B, 3, H, W]: the VAE decoder's output for the final latents, before postprocessing
    /// (diffusers' range: about [-1, 1], not clamped). `TextToImagePipeline.denormalize` maps it
    /// to [0, 1].
    public var images: Tensor
    /// The final latents [B, 4, h, w] (before the division by the VAE's scaling factor).
    public var latents: Tensor
    public var embeddings: PromptEmbeddings
    /// Every UNet call: timestep, expert, seconds, MACs.
    public var calls: [Sampler.Call]
    public var seconds: StageSeconds
    /// MACs of one dense UNet call per sample at the sampled size and context length.
    public var denseMACsPerSample: Int

    public init(images: Tensor, latents: Tensor, embeddings: PromptEmbeddings, calls: [Sampler.Call], seconds: StageSeconds,
                denseMACsPerSample: Int = 0) {
        self.denseMACsPerSample = denseMACsPerSample
        self.images = images
        self.latents = latents
        self.embeddings = embeddings
        self.calls = calls
        self.seconds = seconds
    }
}

/// Wall time of each stage of a run, in seconds.
public struct StageSeconds: Encodable, Sendable, Equatable {
    /// Tokenizing and encoding the prompts and negative prompts.
    public var encode: Double
    /// The denoising loop (every UNet call and scheduler step).
    public var denoise: Double
    /// Decoding the final latents with the VAE.
    public var decode: Double

    enum CodingKeys: String, CodingKey, CaseIterable {
        case encode = "encode_seconds", denoise = "denoise_seconds", decode = "decode_seconds"
    }

    public init(encode: Double, denoise: Double, decode: Double) {
        self.encode = encode
        self.denoise = denoise
        self.decode = decode
    }
}
