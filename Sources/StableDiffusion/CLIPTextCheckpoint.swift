import Foundation
import NN
import SafeTensors
import TensorCore

/// Options for reading a text encoder from a checkpoint.
public struct CLIPTextLoadOptions: Sendable {
    /// transformers weight variant (e.g. `fp16`: `model.fp16.safetensors`) in a diffusers folder.
    public var variant: String?
    /// A transformers `config.json` that overrides the one found or inferred.
    public var configPath: String?
    /// Attention heads: for an original checkpoint, whose tensors do not tell them (default: width
    /// / 64); with a config.json, they override its `num_attention_heads`.
    public var heads: Int?
    public init() {}
}

/// What a path holds, as the text encoder loader recognises it.
public enum CLIPTextCheckpointKind: String, Sendable, Codable {
    /// A diffusers pipeline folder; its `text_encoder/` is used.
    case diffusersPipeline = "diffusers pipeline folder"
    /// A transformers `CLIPTextModel` folder (a pipeline's `text_encoder/`: `config.json` + weights).
    case transformersFolder = "transformers CLIPTextModel folder"
    /// An original SD2.x single-file checkpoint (OpenCLIP text encoder under `cond_stage_model.model.`).
    case originalSingleFile = "original single-file checkpoint"
}

/// A text encoder located in a checkpoint, its config resolved and every parameter matched to a
/// stored tensor strictly: a missing, misshapen or non-float tensor, or a stored text encoder tensor
/// that no parameter uses and that the layout's allow-list does not name, is an error.
public final class CLIPTextCheckpoint: @unchecked Sendable {
    /// The path the user gave.
    public let path: String
    public let kind: CLIPTextCheckpointKind
    public let layout: CheckpointLayout
    public let config: CLIPTextConfig
    /// The config.json the architecture was read from (nil: inferred from the tensors).
    public let configFile: String?
    /// What inference assumed (empty when a config.json was read).
    public let assumptions: [String]
    public let store: TensorStore
    public let keyMap: CLIPTextKeyMap
    public let report: LoadReport
    private let locations: [String: (TensorStore.Location, CLIPTextKeyMap.Entry)]

    static let weightsName = "model"
    static let folderName = "text_encoder"

    /// Opens `path` (pipeline folder, text encoder folder or original single file), resolves the
    /// config and matches the tensors strictly.
    public init(path: String, options: CLIPTextLoadOptions = CLIPTextLoadOptions()) throws(CLIPTextEncoderError) {
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
                kind = .transformersFolder
            } else {
                throw .checkpoint(.unrecognisedLayout(file: path, "a folder without text_encoder/config.json (diffusers pipeline) or config.json (text encoder folder)"))
            }
            configFile = configFile ?? dir.appendingPathComponent("config.json").path
            layout = .diffusers
            do { (weights, shardIndex) = try Self.weightFiles(dir, variant: options.variant) } catch { throw .checkpoint(error) }
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
        if let shardIndex { do { try Self.checkShards(store, map: shardIndex.map, index: shardIndex.path) } catch { throw .checkpoint(error) } }
        if layout == .original && !OriginalCLIPTextKeys.isPresent(store.names) {
            throw .checkpoint(.unrecognisedLayout(file: path, OriginalCLIPTextKeys.absenceReason(store.names)))
        }
        var config: CLIPTextConfig
        var assumptions: [String] = []
        if let p = configFile {
            let data: Data
            do { data = try RegularFile.read(p, limit: 64 << 20) } catch { throw .checkpoint(.io(file: p, "cannot read: \(error.reason)")) }
            config = try CLIPTextConfig(transformersJSON: data, source: p)
        } else {
            (config, assumptions) = try OriginalCLIPTextKeys.infer(store, file: path, heads: options.heads)
        }
        if let h = options.heads, configFile != nil {
            config.numAttentionHeads = h
            try config.validate(source: configFile ?? path)
        }
        self.config = config
        self.configFile = configFile
        self.assumptions = assumptions
        let keyMap = CLIPTextKeyMap(config: config, layout: layout)
        self.keyMap = keyMap
        var report = LoadReport(file: weights.count == 1 ? weights[0] : path, layout: layout, component: .textEncoder)
        var locations: [String: (TensorStore.Location, CLIPTextKeyMap.Entry)] = [:]
        var used = Set<String>()
        for e in keyMap.entries {
            guard let loc = store[e.stored] else {
                if !report.missing.contains(e.stored) { report.missing.append(e.stored) }
                continue
            }
            let first = used.insert(e.stored).inserted
            if !loc.info.dtype.isFloatConvertible {
                if first { report.wrongDType.append(.init(stored: e.stored, dtype: loc.info.dtype)) }
            } else if loc.info.shape != e.storedShape {
                if first { report.misshapen.append(.init(canonical: e.canonical, stored: e.stored, expected: e.storedShape, actual: loc.info.shape)) }
            } else {
                report.mapped += 1
                locations[e.canonical] = (loc, e)
            }
        }
        for name in store.names where !used.contains(name) && keyMap.isInNamespace(name) && !keyMap.isAllowedUnused(name) {
            report.unused.append(name)
        }
        self.report = report
        self.locations = locations
        guard report.isAcceptable(allowUnused: false) else { throw .checkpoint(.strictLoad(report)) }
    }

    /// The weight files of a text encoder folder: `model[.variant].safetensors` or its shard index
    /// (without a variant, the `fp16` variant when it is the only one).
    static func weightFiles(_ dir: URL, variant: String?, weightsName: String = weightsName, pickleName: String = "pytorch_model",
                            component: String = "text encoder") throws(CheckpointError) -> ([String], (path: String, map: [String: String])?) {
        let fm = FileManager.default
        var candidates = [variant.map { ".\($0)" } ?? ""]
        if variant == nil { candidates.append(".fp16") }
        for suffix in candidates {
            let single = dir.appendingPathComponent("\(weightsName)\(suffix).safetensors").path
            if fm.fileExists(atPath: single) { return ([single], nil) }
            let index = single + ".index.json"
            if fm.fileExists(atPath: index) {
                let (paths, map) = try CheckpointSource.shardPaths(index: index, dir: dir)
                return (paths, (index, map))
            }
        }
        let suffix = candidates[0]
        let bin = dir.appendingPathComponent("\(pickleName)\(suffix).bin").path
        if fm.fileExists(atPath: bin) {
            throw .unsupportedFormat(file: bin, "PyTorch pickle weights are not read (they can run code); save the \(component) with safe_serialization=True")
        }
        throw .notFound(dir.appendingPathComponent("\(weightsName)\(suffix).safetensors").path)
    }

    static func checkShards(_ store: TensorStore, map: [String: String], index: String) throws(CheckpointError) {
        for name in store.names {
            guard let expected = map[name] else { throw .shardIndex(file: index, "tensor '\(name)' is in a shard but not in the index") }
            if let actual = store[name]?.file.path, actual != expected {
                throw .shardIndex(file: index, "tensor '\(name)' is in \(actual), the index says \(expected)")
            }
        }
        for name in map.keys where store[name] == nil {
            throw .shardIndex(file: index, "tensor '\(name)' listed in the index is in no shard")
        }
    }

    /// The text encoder these weights make.
    public func encoder() throws -> CLIPTextEncoder { try CLIPTextEncoder(config: config, parameters: self) }
}

extension CLIPTextCheckpoint: ParameterSource {
    /// The parameter `name` (canonical) as an F32 tensor; F16/BF16 are converted, fused q/k/v
    /// projections split. The file's pages are released after the (last) copy.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let (loc, e) = locations[name].map({ ($0.0, $0.1) }) else {
            throw CLIPTextEncoderError.checkpoint(.safetensors(SafeTensorsError(file: report.file, tensor: name, .noSuchTensor)))
        }
        guard e.shape == shape else { throw ParameterError.shape(name, expected: shape, actual: e.shape) }
        let t = Tensor(uninitialized: shape)
        let bytes = loc.file.rawBytes(loc.info)
        let size = t.count * loc.info.dtype.byteSize
        let start = (e.part ?? 0) * size
        precondition(start + size <= bytes.count, "CLIPTextCheckpoint: \(e.stored) is shorter than its checked shape")
        DTypeConversion.convert(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + size)]), from: loc.info.dtype, to: .f32,
                                into: UnsafeMutableRawBufferPointer(start: t.data, count: t.count * 4))
        if e.part == nil || e.part == 2 { loc.file.release(loc.info) }
        return t
    }
}
