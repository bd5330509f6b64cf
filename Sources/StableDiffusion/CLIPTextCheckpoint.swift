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
        let files: ComponentFiles
        do {
            files = try ComponentFiles(path: path, folderName: Self.folderName, weightsName: Self.weightsName, pickleName: "pytorch_model",
                                       component: "text encoder", variant: options.variant, configPath: options.configPath)
        } catch { throw .checkpoint(error) }
        switch files.place {
        case .pipeline: kind = .diffusersPipeline
        case .folder: kind = .transformersFolder
        case .singleFile: kind = .originalSingleFile
        }
        layout = files.layout
        store = files.store
        let configFile = files.configFile, weights = files.weights
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
        locations = StrictMatch.match(keyMap.entries, in: store, report: &report) { keyMap.isInNamespace($0) && !keyMap.isAllowedUnused($0) }
        self.report = report
        guard report.isAcceptable(allowUnused: false) else { throw .checkpoint(.strictLoad(report)) }
    }

    /// Where the parameter `canonical` is stored, with its key-table entry (a fused projection's
    /// `part`).
    func stored(_ canonical: String) -> (location: TensorStore.Location, entry: CLIPTextKeyMap.Entry)? {
        locations[canonical].map { ($0.0, $0.1) }
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
