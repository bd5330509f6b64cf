import ExpertBundle
import StableDiffusion

/// Something that keeps a prompt-to-image run from loading or running, with the component's own
/// error (which names the file and tensor) where there is one.
public enum TextToImageError: Error, CustomStringConvertible, Sendable {
    /// The tokenizer files.
    case tokenizer(CLIPTokenizerError)
    /// The text encoder's checkpoint, config or input.
    case textEncoder(CLIPTextEncoderError)
    /// The UNet's checkpoint or config.
    case unet(CheckpointError)
    /// The VAE's checkpoint, config or input.
    case vae(VAEError)
    /// The scheduler config.
    case scheduler(SchedulerError)
    /// The bundle whose experts denoise.
    case bundle(BundleError)
    /// The denoising loop refused its inputs or a step.
    case sampling(SamplingError)
    /// A component's layers could not be built from its checked tensors: the component and why.
    case parameters(component: String, String)
    /// Components that do not fit together (for example a text encoder width other than the
    /// UNet's cross_attention_dim).
    case mismatch(String)
    /// Prompts or options that cannot be used.
    case input(String)

    public var description: String {
        switch self {
        case .tokenizer(let e): return e.description
        case .textEncoder(let e): return e.description
        case .unet(let e): return e.description
        case .vae(let e): return e.description
        case .scheduler(let e): return e.description
        case .bundle(let e): return e.description
        case .sampling(let e): return e.description
        case .parameters(let c, let s): return "\(c): \(s)"
        case .mismatch(let s): return "the components do not fit together: \(s)"
        case .input(let s): return s
        }
    }
}
