import ExpertBundle
import Foundation
import StableDiffusion

/// The parts of a text-to-image model around the denoiser: the tokenizer, the text encoder and the
/// VAE. A diffusers pipeline folder and an original SD2.x single file (with a tokenizer given
/// apart) hold them; anything else that can produce these values (for example a bundle that
/// carries them) can be paired with a `RoutedSampler` in `TextToImagePipeline`.
public struct TextToImageComponents {
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextEncoder
    public let vae: AutoencoderKL
    /// Where each part came from (for reports): tokenizer, text encoder, VAE.
    public var sources: [String: String]

    /// Components from values. Checks that they fit together: every token id of the tokenizer is
    /// in the text encoder's vocabulary and its length within the text encoder's positions.
    public init(tokenizer: CLIPTokenizer, textEncoder: CLIPTextEncoder, vae: AutoencoderKL,
                sources: [String: String] = [:]) throws(TextToImageError) {
        let c = textEncoder.config
        guard tokenizer.tokens.count <= c.vocabSize else {
            throw .mismatch("the tokenizer has \(tokenizer.tokens.count) token ids, the text encoder's vocab_size is \(c.vocabSize)")
        }
        guard tokenizer.maxLength <= c.maxPositionEmbeddings else {
            throw .mismatch("the tokenizer makes \(tokenizer.maxLength) tokens, the text encoder has \(c.maxPositionEmbeddings) positions")
        }
        self.tokenizer = tokenizer
        self.textEncoder = textEncoder
        self.vae = vae
        self.sources = sources
    }

    /// The tokenizer (`tokenizer/`), text encoder (`text_encoder/`) and VAE (`vae/`) of a
    /// diffusers pipeline folder, loaded strictly.
    public init(pipeline path: String, textEncoder textOptions: CLIPTextLoadOptions = CLIPTextLoadOptions(),
                vae vaeOptions: VAELoadOptions = VAELoadOptions()) throws(TextToImageError) {
        let tokenizer: CLIPTokenizer
        do { tokenizer = try CLIPTokenizer(path: path) } catch { throw .tokenizer(error) }
        try self.init(tokenizer: tokenizer, tokenizerSource: path, checkpoint: path, textEncoder: textOptions, vae: vaeOptions)
    }

    /// The text encoder (`cond_stage_model.model.*`) and VAE (`first_stage_model.*`) of an original
    /// SD2.x single file, with `tokenizer` (such files hold none; SD2.x uses open_clip's BPE with
    /// "!" as padding). What the tensors do not tell (heads, config) comes from the options.
    public init(singleFile path: String, tokenizer: CLIPTokenizer, tokenizerSource: String = "given",
                textEncoder textOptions: CLIPTextLoadOptions = CLIPTextLoadOptions(),
                vae vaeOptions: VAELoadOptions = VAELoadOptions()) throws(TextToImageError) {
        try self.init(tokenizer: tokenizer, tokenizerSource: tokenizerSource, checkpoint: path, textEncoder: textOptions, vae: vaeOptions)
    }

    private init(tokenizer: CLIPTokenizer, tokenizerSource: String, checkpoint path: String,
                 textEncoder textOptions: CLIPTextLoadOptions, vae vaeOptions: VAELoadOptions) throws(TextToImageError) {
        let encoder: CLIPTextEncoder
        do {
            encoder = try CLIPTextCheckpoint(path: path, options: textOptions).encoder()
        } catch let e as CLIPTextEncoderError { throw .textEncoder(e) } catch { throw .parameters(component: "\(path): text encoder", "\(error)") }
        let vae: AutoencoderKL
        do {
            vae = try VAECheckpoint(path: path, options: vaeOptions).autoencoder()
        } catch let e as VAEError { throw .vae(e) } catch { throw .parameters(component: "\(path): VAE", "\(error)") }
        try self.init(tokenizer: tokenizer, textEncoder: encoder, vae: vae,
                      sources: ["tokenizer": tokenizerSource, "text_encoder": path, "vae": path])
    }
}

extension TextToImageComponents {
    /// The tokenizer, text encoder and VAE a bundle carries (`alter export --pipeline`; formats/bundle.md).
    public init(bundle: ExpertBundle) throws(TextToImageError) {
        let tokenizer: CLIPTokenizer?, encoder: CLIPTextEncoder?, vae: AutoencoderKL?
        do {
            tokenizer = try bundle.tokenizer()
            encoder = try bundle.textEncoder()
            vae = try bundle.autoencoder()
        } catch { throw .bundle(error) }
        guard let tokenizer, let encoder, let vae else {
            throw .input("\(bundle.path) carries no tokenizer, text encoder and VAE (export it with --pipeline, or give the pipeline it was compressed from)")
        }
        try self.init(tokenizer: tokenizer, textEncoder: encoder, vae: vae,
                      sources: ["tokenizer": bundle.path, "text_encoder": bundle.path, "vae": bundle.path])
    }
}
