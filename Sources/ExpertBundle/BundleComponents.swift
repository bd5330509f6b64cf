import Foundation
import NN
import SafeTensors
import StableDiffusion
import TensorCore

extension BundleManifest {
    /// `bundle.json` `components` (format version 3, formats/bundle.md "Pipeline components"):
    /// the tokenizer, text encoder and VAE of the pipeline the bundle was compressed from, stored
    /// under `tokenizer/`, `text_encoder/` and `vae/` as a diffusers pipeline folder has them.
    public struct Components: Codable, Equatable, Sendable {
        public var tokenizer: Component
        public var textEncoder: Component
        public var vae: Component

        public init(tokenizer: Component, textEncoder: Component, vae: Component) {
            self.tokenizer = tokenizer
            self.textEncoder = textEncoder
            self.vae = vae
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case tokenizer, textEncoder = "text_encoder", vae
        }

        /// The components by their key in `components`.
        public var all: [(kind: ComponentKind, component: Component)] {
            [(.tokenizer, tokenizer), (.textEncoder, textEncoder), (.vae, vae)]
        }

        /// Every file the components list.
        public var files: [FileDigest] { all.flatMap(\.component.files) }
    }

    /// One component: its files (each with size and SHA-256) and, for the text encoder and VAE,
    /// every tensor of its weight file with the SHA-256 of its stored bytes (empty for the tokenizer).
    public struct Component: Codable, Equatable, Sendable {
        public var files: [FileDigest]
        public var tensors: [ExpertManifest.TensorEntry]

        public init(files: [FileDigest], tensors: [ExpertManifest.TensorEntry]) {
            self.files = files
            self.tensors = tensors
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case files, tensors
        }
    }
}

/// A pipeline component a bundle may carry, with the fixed paths it is stored at.
public enum ComponentKind: String, CaseIterable, Sendable, Codable {
    case tokenizer
    case textEncoder = "text_encoder"
    case vae

    /// Its folder inside the bundle (the diffusers pipeline folder's name).
    public var folder: String { rawValue }

    /// Files it MUST store (relative to the bundle).
    public var requiredFiles: [String] {
        switch self {
        case .tokenizer: ["tokenizer/vocab.json", "tokenizer/merges.txt"]
        case .textEncoder: ["text_encoder/config.json", Self.textEncoderWeights]
        case .vae: ["vae/config.json", Self.vaeWeights]
        }
    }

    /// Files it MAY store besides.
    public var optionalFiles: [String] {
        self == .tokenizer ? ["tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json"] : []
    }

    /// Its safetensors weight file, nil for the tokenizer.
    public var weightFile: String? {
        switch self {
        case .tokenizer: nil
        case .textEncoder: Self.textEncoderWeights
        case .vae: Self.vaeWeights
        }
    }

    static let textEncoderWeights = "text_encoder/model.safetensors"
    static let vaeWeights = "vae/diffusion_pytorch_model.safetensors"
}

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

extension BundleWriter {
    /// Writes the components into the bundle's staging directory (formats/bundle.md, "Pipeline
    /// components"): the tokenizer files as they are, each config.json as read (or, for a config
    /// inferred from an original file, as alter writes it), the weights under their canonical
    /// names in `dtype`.
    static func writeComponents(_ c: PipelineComponents, to staging: AtomicDirectory, dtype: DType,
                                progress: (String) -> Void) throws(BundleError) -> BundleManifest.Components {
        let fm = FileManager.default, root = staging.path
        for kind in ComponentKind.allCases {
            do { try staging.createSubdirectory(kind.folder) } catch { throw BundleError(root + "/" + kind.folder, error.description) }
        }
        func copy(_ source: String, to relative: String) throws(BundleError) -> BundleManifest.FileDigest {
            let data: Data
            do { data = try RegularFile.read(source, limit: CLIPTokenizer.fileLimit) } catch { throw BundleError(source, error.reason) }
            return try put(data, relative)
        }
        func put(_ data: Data, _ relative: String) throws(BundleError) -> BundleManifest.FileDigest {
            try writeFile(data, to: root + "/" + relative)
            return .init(path: relative, bytes: data.count, sha256: data.withUnsafeBytes { SHA256.hex($0) })
        }
        func digest(_ relative: String) throws(BundleError) -> BundleManifest.FileDigest {
            let full = root + "/" + relative
            let size = (try? fm.attributesOfItem(atPath: full)[.size] as? Int) ?? 0
            do { return .init(path: relative, bytes: size, sha256: try SHA256.hex(file: full)) } catch { throw BundleError(full, "\(error)") }
        }

        progress("writing tokenizer/ (\(c.tokenizerFolder))")
        var tokenizerFiles: [BundleManifest.FileDigest] = []
        for relative in ComponentKind.tokenizer.requiredFiles + ComponentKind.tokenizer.optionalFiles {
            let source = c.tokenizerFolder + "/" + (relative as NSString).lastPathComponent
            if ComponentKind.tokenizer.optionalFiles.contains(relative), ((try? RegularFile.status(source)) ?? nil) == nil { continue }
            tokenizerFiles.append(try copy(source, to: relative))
        }

        progress("writing text_encoder/ (\(c.textEncoder.keyMap.entries.count) tensors, \(dtype.rawValue))")
        let textConfig: BundleManifest.FileDigest
        if let p = c.textEncoder.configFile { textConfig = try copy(p, to: "text_encoder/config.json") } else {
            textConfig = try put(c.textEncoder.config.transformersJSON(), "text_encoder/config.json")
        }
        let textTensors = try writeTensors(c.textEncoder.keyMap.entries.map { ($0.canonical, $0.shape) }, from: c.textEncoder,
                                           to: root, relative: ComponentKind.textEncoderWeights, dtype: dtype)
        let textWeights = try digest(ComponentKind.textEncoderWeights)

        progress("writing vae/ (\(c.vae.keyMap.entries.count) tensors, \(dtype.rawValue))")
        let vaeConfig: BundleManifest.FileDigest
        if let p = c.vae.configFile { vaeConfig = try copy(p, to: "vae/config.json") } else {
            vaeConfig = try put(c.vae.config.diffusersJSON(), "vae/config.json")
        }
        let vaeTensors = try writeTensors(c.vae.keyMap.entries.map { ($0.canonical, $0.shape) }, from: c.vae,
                                          to: root, relative: ComponentKind.vaeWeights, dtype: dtype)
        let vaeWeights = try digest(ComponentKind.vaeWeights)

        return .init(tokenizer: .init(files: tokenizerFiles, tensors: []),
                     textEncoder: .init(files: [textConfig, textWeights], tensors: textTensors),
                     vae: .init(files: [vaeConfig, vaeWeights], tensors: vaeTensors))
    }

    /// Writes `params` read from `source` (Float32, converted to `dtype`) as the safetensors file
    /// `root/relative` (metadata `format: pt`, as transformers and diffusers expect), returning
    /// each tensor's entry with the SHA-256 of its stored bytes.
    static func writeTensors(_ params: [(name: String, shape: [Int])], from source: some ParameterSource, to root: String, relative: String,
                             dtype: DType) throws(BundleError) -> [ExpertManifest.TensorEntry] {
        let path = root + "/" + relative
        var out: [ExpertManifest.TensorEntry] = []
        do {
            let w = try SafeTensorsWriter(path: path, tensors: params.map { TensorSpec(name: $0.name, dtype: dtype, shape: $0.shape) },
                                          metadata: ["format": "pt"])
            do {
                for spec in w.order {
                    let t = try source.tensor(spec.name, shape: spec.shape)
                    precondition(t.count == spec.elementCount, "export: \(spec.name)")
                    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: spec.byteCount, alignment: 16)
                    defer { bytes.deallocate() }
                    DTypeConversion.convert(UnsafeRawBufferPointer(start: t.data, count: t.count * 4), from: .f32, to: dtype, into: bytes)
                    try w.write(spec.name, bytes: UnsafeRawBufferPointer(bytes))
                    out.append(.init(name: spec.name, file: relative, dtype: dtype.rawValue, shape: spec.shape,
                                     sha256: SHA256.hex(UnsafeRawBufferPointer(bytes))))
                }
                try w.finish()
            } catch {
                w.abort()
                throw error
            }
        } catch let e as BundleError { throw e } catch { throw BundleError(path, "\(error)") }
        return out
    }
}
