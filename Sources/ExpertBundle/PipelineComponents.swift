import Foundation
import SafeTensors
import StableDiffusion
/// The tokenizer, text encoder and VAE to put into a bundle, read strictly from a diffusers
/// pipeline folder or an original SD2.x single file (with a tokenizer folder beside it).
public struct PipelineComponents: @unchecked Sendable {
    /// The tokenizer folder whose files are copied (`vocab.json`, `merges.txt`, and when present
    /// `special_tokens_map.json`, `tokenizer_config.json`).
    public let tokenizerFolder: String
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextCheckpoint
    public let vae: VAECheckpoint

    /// Reads the components of `pipeline`: a diffusers pipeline folder (`tokenizer/`,
    /// `text_encoder/`, `vae/`), or an original single file whose tokenizer is the folder
    /// `tokenizer` (a tokenizer folder or a pipeline folder holding `tokenizer/`; it also
    /// replaces a pipeline's own). Both models load strictly; errors name the file and tensor.
    /// `heads`: the text encoder's attention heads, for an original file whose width is not a
    /// multiple of 64 (see `CLIPTextLoadOptions.heads`).
    /// `vaeConfig`: a diffusers `AutoencoderKL` config.json replacing the one found or inferred.
    public init(pipeline: String, tokenizer tokenizerPath: String? = nil, heads: Int? = nil, vaeConfig: String? = nil) throws(BundleError) {
        let kind: RegularFile.Kind?
        do { kind = try RegularFile.status(pipeline)?.kind } catch { throw BundleError(pipeline, error.reason) }
        guard let kind else { throw BundleError(pipeline, "not found") }
        let tokenizerSource: String
        switch (kind, tokenizerPath) {
        case (_, let t?): tokenizerSource = t
        case (.directory, nil): tokenizerSource = pipeline
        default:
            throw BundleError(pipeline, "a single-file checkpoint holds no tokenizer: give its tokenizer folder with --tokenizer DIR "
                                  + "(vocab.json, merges.txt), or a diffusers pipeline folder")
        }
        tokenizerFolder = try Self.tokenizerFolder(tokenizerSource)
        do { tokenizer = try CLIPTokenizer(folder: tokenizerFolder) } catch { throw BundleError(error.file, error.description) }
        var textOptions = CLIPTextLoadOptions()
        textOptions.heads = heads
        do { textEncoder = try CLIPTextCheckpoint(path: pipeline, options: textOptions) } catch { throw BundleError(pipeline, "text encoder: \(error)") }
        var vaeOptions = VAELoadOptions()
        vaeOptions.configPath = vaeConfig
        do { vae = try VAECheckpoint(path: pipeline, options: vaeOptions) } catch { throw BundleError(pipeline, "VAE: \(error)") }
    }

    /// The tokenizer folder at `path`: `path/tokenizer` (a pipeline) or `path` itself.
    static func tokenizerFolder(_ path: String) throws(BundleError) -> String {
        let kind = (try? RegularFile.status(path))??.kind
        if kind == .regular {
            throw BundleError(path, "a tokenizer is carried as its folder (vocab.json, merges.txt); open_clip's BPE file has no vocab.json to copy")
        }
        guard kind == .directory else { throw BundleError(path, "no tokenizer folder here") }
        for dir in [path + "/tokenizer", path] where (try? RegularFile.status(dir + "/vocab.json"))??.kind == .regular {
            return dir
        }
        throw BundleError(path, "no tokenizer here: expected tokenizer/vocab.json (a pipeline folder) or vocab.json (a tokenizer folder)")
    }

    /// Why these components do not fit `unet` (empty when they do): the text encoder's
    /// `hidden_size` must equal the UNet's `cross_attention_dim`, the VAE's `latent_channels` its
    /// `in_channels` and `out_channels`, the tokenizer's vocabulary size the text encoder's
    /// `vocab_size`, and the tokenizer's length at most its `max_position_embeddings`.
    public static func fitFailures(tokenizer: CLIPTokenizer, textEncoder: CLIPTextConfig, vae: VAEConfig, unet: UNetConfig,
                                   names: (tokenizer: String, textEncoder: String, vae: String)) -> [String] {
        var bad: [String] = []
        if textEncoder.hiddenSize != unet.crossAttentionDim {
            bad.append("\(names.textEncoder): hidden_size \(textEncoder.hiddenSize) differs from the UNet's cross_attention_dim \(unet.crossAttentionDim)")
        }
        if vae.latentChannels != unet.inChannels || vae.latentChannels != unet.outChannels {
            bad.append("\(names.vae): latent_channels \(vae.latentChannels) differs from the UNet's in_channels \(unet.inChannels) / out_channels \(unet.outChannels)")
        }
        if tokenizer.tokens.count != textEncoder.vocabSize {
            bad.append("\(names.tokenizer): the vocabulary has \(tokenizer.tokens.count) ids, the text encoder's vocab_size is \(textEncoder.vocabSize)")
        }
        if tokenizer.maxLength > textEncoder.maxPositionEmbeddings {
            bad.append("\(names.tokenizer): model_max_length \(tokenizer.maxLength) exceeds the text encoder's max_position_embeddings \(textEncoder.maxPositionEmbeddings)")
        }
        return bad
    }

    /// `fitFailures` of these components against `unet`.
    public func fitFailures(unet: UNetConfig) -> [String] {
        Self.fitFailures(tokenizer: tokenizer, textEncoder: textEncoder.config, vae: vae.config, unet: unet,
                         names: (tokenizerFolder, textEncoder.configFile ?? textEncoder.path, vae.configFile ?? vae.path))
    }
}
