import Foundation
import SafeTensors

/// A summary of a checkpoint read from its headers only (no tensor data is touched).
public struct CheckpointInspection: Sendable, Encodable {
    public struct FileEntry: Sendable, Encodable {
        public var path: String
        public var bytes: Int
        public var tensors: Int
        public var metadata: [String: String]?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case path, bytes, tensors = "tensor_count", metadata
        }
    }
    public struct ComponentEntry: Sendable, Encodable {
        public var component: String
        public var tensors: Int
        public var parameters: Int
        public var bytes: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case component, tensors = "tensor_count", parameters = "parameter_count", bytes
        }
    }
    public struct TensorEntry: Sendable, Encodable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var component: String

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, dtype, shape, component
        }
    }
    public struct UNetEntry: Sendable, Encodable {
        public var configOrigin: String
        public var assumptions: [String]
        public var blockOutChannels: [Int]
        public var layersPerBlock: Int
        public var crossAttentionDim: Int
        public var attentionHeads: [Int]
        public var useLinearProjection: Bool
        public var upcastAttention: Bool
        public var sampleSize: Int
        public var parameters: Int
        public var mapped: Int
        public var missing: Int
        public var unused: Int
        public var misshapen: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case configOrigin = "config_origin", assumptions, blockOutChannels = "block_out_channels"
            case layersPerBlock = "layers_per_block", crossAttentionDim = "cross_attention_dim"
            case attentionHeads = "attention_heads", useLinearProjection = "use_linear_projection"
            case upcastAttention = "upcast_attention", sampleSize = "sample_size", parameters = "parameter_count", mapped = "mapped_count"
            case missing = "missing_count", unused = "unused_count", misshapen = "misshapen_count"
        }
    }

    public var path: String
    public var kind: String
    public var layout: String
    public var files: [FileEntry]
    public var tensorCount: Int
    public var bytes: Int
    public var dtypes: [String: Int]
    public var components: [ComponentEntry]
    public var family: String
    public var predictionType: String
    public var hasEMA: Bool
    public var pipelineComponents: [String]?
    public var unet: UNetEntry?
    /// Why the UNet could not be loaded, if it could not.
    public var unetError: String?
    public var tensors: [TensorEntry]?

    /// Inspects `path`. Problems with the UNet are reported in `unetError`, not thrown;
    /// a file that is not a valid safetensors file, or an unrecognised layout, throws.
    public init(path: String, options: LoadOptions = LoadOptions(), listTensors: Bool = false) throws(CheckpointError) {
        let source = try CheckpointSource.locate(path, variant: options.variant)
        let store = try TensorStore(paths: source.weightPaths)
        self.path = path
        kind = source.kind.rawValue
        layout = source.layout.rawValue
        files = store.files.map {
            FileEntry(path: $0.path, bytes: $0.fileSize, tensors: $0.tensors.count, metadata: $0.metadata)
        }
        tensorCount = store.names.count
        bytes = store.files.reduce(0) { $0 + $1.fileSize }
        var dtypes: [String: Int] = [:]
        var byComponent: [Component: ComponentEntry] = [:]
        var list: [TensorEntry] = []
        for name in store.names {
            guard let info = store[name]?.info else { continue }
            dtypes[info.dtype.rawValue, default: 0] += 1
            let c: Component = source.layout == .original ? OriginalUNetKeys.component(of: name) : .unet
            var e = byComponent[c] ?? ComponentEntry(component: c.rawValue, tensors: 0, parameters: 0, bytes: 0)
            e.tensors += 1
            e.parameters += info.elementCount
            e.bytes += info.byteCount
            byComponent[c] = e
            if listTensors { list.append(TensorEntry(name: name, dtype: info.dtype.rawValue, shape: info.shape, component: c.rawValue)) }
        }
        self.dtypes = dtypes
        components = Component.allCases.compactMap { byComponent[$0] }
        tensors = listTensors ? list : nil
        hasEMA = source.layout == .original && OriginalUNetKeys.hasEMA(store.names)
        pipelineComponents = source.kind == .diffusersPipeline ? source.pipelineComponents : nil

        var family = "unknown"
        do {
            let ckpt = try UNetCheckpoint(source: source, options: options, store: store)
            let c = ckpt.config
            unet = UNetEntry(
                configOrigin: ckpt.configOrigin, assumptions: ckpt.assumptions,
                blockOutChannels: c.blockOutChannels, layersPerBlock: c.layersPerBlock,
                crossAttentionDim: c.crossAttentionDim, attentionHeads: c.attentionHeads,
                useLinearProjection: c.useLinearProjection, upcastAttention: c.upcastAttention,
                sampleSize: c.sampleSize, parameters: c.parameterCount, mapped: ckpt.report.mapped,
                missing: ckpt.report.missing.count, unused: ckpt.report.unused.count,
                misshapen: ckpt.report.misshapen.count + ckpt.report.wrongDType.count)
            family = Self.family(c)
        } catch {
            unetError = error.description
        }
        self.family = family
        predictionType = Self.predictionType(source: source, family: family)
    }

    static func family(_ c: UNetConfig) -> String {
        let sd2 = c.blockOutChannels == [320, 640, 1280, 1280] && c.layersPerBlock == 2
        switch c.crossAttentionDim {
        case 1024 where c.useLinearProjection: return sd2 ? "SD2.x" : "SD2.x-shaped (context 1024, linear projections)"
        case 768 where !c.useLinearProjection: return sd2 ? "SD1.x" : "SD1.x-shaped (context 768, conv projections)"
        default:
            return c.useLinearProjection
                ? "SD2.x-shaped (context \(c.crossAttentionDim), linear projections)"
                : "SD1.x-shaped (context \(c.crossAttentionDim), conv projections)"
        }
    }

    static func predictionType(source: CheckpointSource, family: String) -> String {
        if let p = source.schedulerConfigPath, let data = try? StrictJSON.read(p, limit: 64 << 20),
           let o = (try? StrictJSON.jsonObject(data, source: p)) as? [String: Any],
           let t = o["prediction_type"] as? String {
            return "\(t) (from scheduler_config.json)"
        }
        if family.hasPrefix("SD2") {
            return "not stored: v_prediction for SD2.x 768-v models, epsilon for 512 base models (give the prediction type)"
        }
        if family.hasPrefix("SD1") { return "epsilon (SD1.x)" }
        return "not stored"
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case path, kind, layout, files, tensorCount = "tensor_count", bytes, dtypes, components, family
        case predictionType = "prediction_type", hasEMA = "has_ema", pipelineComponents = "pipeline_components", unet
        case unetError = "unet_error", tensors
    }
}
