import Foundation
import NN
import SafeTensors
import TensorCore

/// Options for reading a VAE from a checkpoint.
public struct VAELoadOptions: Sendable {
    /// diffusers weight variant (e.g. `fp16`: `diffusion_pytorch_model.fp16.safetensors`) in a folder.
    public var variant: String?
    /// A diffusers `AutoencoderKL` `config.json` that overrides the one found or inferred.
    public var configPath: String?
    public init() {}
}

/// What a path holds, as the VAE loader recognises it.
public enum VAECheckpointKind: String, Sendable, Codable {
    /// A diffusers pipeline folder; its `vae/` is used.
    case diffusersPipeline = "diffusers pipeline folder"
    /// A diffusers `AutoencoderKL` folder (a pipeline's `vae/`: `config.json` + weights).
    case diffusersFolder = "diffusers AutoencoderKL folder"
    /// An original single-file checkpoint (the VAE under `first_stage_model.`).
    case originalSingleFile = "original single-file checkpoint"
}

/// A VAE located in a checkpoint, its config resolved and every parameter matched to a stored
/// tensor strictly: a missing, misshapen or non-float tensor, or a stored VAE tensor that no
/// parameter uses, is an error naming it.
public final class VAECheckpoint: @unchecked Sendable {
    /// The path the user gave.
    public let path: String
    public let kind: VAECheckpointKind
    public let layout: CheckpointLayout
    public let config: VAEConfig
    /// The config.json the architecture was read from (nil: inferred from the tensors).
    public let configFile: String?
    /// What inference assumed (empty when a config.json was read).
    public let assumptions: [String]
    public let store: TensorStore
    public let keyMap: VAEKeyMap
    public let report: LoadReport
    private let locations: [String: (TensorStore.Location, VAEKeyMap.Entry)]

    static let weightsName = "diffusion_pytorch_model"
    static let folderName = "vae"

    /// Opens `path` (pipeline folder, VAE folder or original single file), resolves the config
    /// and matches the tensors strictly.
    public init(path: String, options: VAELoadOptions = VAELoadOptions()) throws(VAEError) {
        self.path = path
        let files: ComponentFiles
        do {
            files = try ComponentFiles(path: path, folderName: Self.folderName, weightsName: Self.weightsName, pickleName: Self.weightsName,
                                       component: "VAE", variant: options.variant, configPath: options.configPath)
        } catch { throw .checkpoint(error) }
        switch files.place {
        case .pipeline: kind = .diffusersPipeline
        case .folder: kind = .diffusersFolder
        case .singleFile: kind = .originalSingleFile
        }
        layout = files.layout
        store = files.store
        let configFile = files.configFile, weights = files.weights
        if layout == .original && !OriginalVAEKeys.isPresent(store.names) {
            throw .checkpoint(.unrecognisedLayout(file: path, "no VAE under \(OriginalVAEKeys.prefix)"))
        }
        var assumptions: [String] = []
        let config: VAEConfig
        if let p = configFile {
            let data: Data
            do { data = try RegularFile.read(p, limit: 64 << 20) } catch { throw .checkpoint(.io(file: p, "cannot read: \(error.reason)")) }
            config = try VAEConfig(diffusersJSON: data, source: p)
        } else {
            (config, assumptions) = try OriginalVAEKeys.infer(store, file: path)
        }
        self.config = config
        self.configFile = configFile
        self.assumptions = assumptions
        let keyMap = VAEKeyMap(config: config, layout: layout)
        self.keyMap = keyMap
        var report = LoadReport(file: weights.count == 1 ? weights[0] : path, layout: layout, component: .vae)
        locations = StrictMatch.match(keyMap.entries, in: store, report: &report) { keyMap.isInNamespace($0) }
        self.report = report
        guard report.isAcceptable(allowUnused: false) else { throw .checkpoint(.strictLoad(report)) }
    }

    /// Where the parameter `canonical` is stored, with its key-table entry.
    func stored(_ canonical: String) -> (location: TensorStore.Location, entry: VAEKeyMap.Entry)? {
        locations[canonical].map { ($0.0, $0.1) }
    }

    /// The VAE these weights make.
    public func autoencoder() throws -> AutoencoderKL { try AutoencoderKL(config: config, parameters: self) }
}

extension VAECheckpoint: ParameterSource {
    /// The parameter `name` (canonical) as an F32 tensor; F16/BF16 are converted, 1x1-convolution
    /// attention weights read as matrices. The file's pages are released after the copy.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let (loc, e) = locations[name].map({ ($0.0, $0.1) }) else {
            throw VAEError.checkpoint(.safetensors(SafeTensorsError(file: report.file, tensor: name, .noSuchTensor)))
        }
        guard e.shape == shape else { throw ParameterError.shape(name, expected: shape, actual: e.shape) }
        let t = Tensor(uninitialized: shape)
        let bytes = loc.file.rawBytes(loc.info)
        let size = t.count * loc.info.dtype.byteSize
        precondition(size <= bytes.count, "VAECheckpoint: \(e.stored) is shorter than its checked shape")
        DTypeConversion.convert(UnsafeRawBufferPointer(rebasing: bytes[0..<size]), from: loc.info.dtype, to: .f32,
                                into: UnsafeMutableRawBufferPointer(start: t.data, count: t.count * 4))
        loc.file.release(loc.info)
        return t
    }
}
