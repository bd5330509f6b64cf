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
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw .checkpoint(.notFound(path)) }
        var configFile = options.configPath
        let weights: [String]
        var shardIndex: (path: String, map: [String: String])?
        if isDir.boolValue {
            var dir = URL(fileURLWithPath: path)
            if fm.fileExists(atPath: dir.appendingPathComponent(Self.folderName + "/config.json").path) {
                kind = .diffusersPipeline
                dir = dir.appendingPathComponent(Self.folderName)
            } else if fm.fileExists(atPath: dir.appendingPathComponent("config.json").path) {
                kind = .diffusersFolder
            } else {
                throw .checkpoint(.unrecognisedLayout(file: path, "a folder without vae/config.json (diffusers pipeline) or config.json (VAE folder)"))
            }
            configFile = configFile ?? dir.appendingPathComponent("config.json").path
            layout = .diffusers
            do {
                (weights, shardIndex) = try CLIPTextCheckpoint.weightFiles(dir, variant: options.variant, weightsName: Self.weightsName,
                                                                          pickleName: Self.weightsName, component: "VAE")
            } catch { throw .checkpoint(error) }
        } else {
            let lower = path.lowercased()
            if lower.hasSuffix(".ckpt") || lower.hasSuffix(".bin") || lower.hasSuffix(".pt") || lower.hasSuffix(".pth") {
                throw .checkpoint(.unsupportedFormat(file: path, "PyTorch pickle files are not read (they can run code); convert it to .safetensors first"))
            }
            kind = .originalSingleFile
            layout = .original
            weights = [path]
        }
        do { store = try TensorStore(paths: weights) } catch { throw .checkpoint(error) }
        if let shardIndex {
            do { try CLIPTextCheckpoint.checkShards(store, map: shardIndex.map, index: shardIndex.path) } catch { throw .checkpoint(error) }
        }
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
        var locations: [String: (TensorStore.Location, VAEKeyMap.Entry)] = [:]
        var used = Set<String>()
        for e in keyMap.entries {
            guard let loc = store[e.stored] else {
                report.missing.append(e.stored)
                continue
            }
            used.insert(e.stored)
            if !loc.info.dtype.isFloatConvertible {
                report.wrongDType.append(.init(stored: e.stored, dtype: loc.info.dtype))
            } else if loc.info.shape != e.storedShape {
                report.misshapen.append(.init(canonical: e.canonical, stored: e.stored, expected: e.storedShape, actual: loc.info.shape))
            } else {
                report.mapped += 1
                locations[e.canonical] = (loc, e)
            }
        }
        for name in store.names where !used.contains(name) && keyMap.isInNamespace(name) {
            report.unused.append(name)
        }
        self.report = report
        self.locations = locations
        guard report.isAcceptable(allowUnused: false) else { throw .checkpoint(.strictLoad(report)) }
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
