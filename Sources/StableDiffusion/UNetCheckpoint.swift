import Foundation
import SafeTensors

/// Options for reading a UNet from a checkpoint.
public struct LoadOptions: Sendable {
    /// Use the EMA copies of an original checkpoint that has them.
    public var ema = false
    /// Accept unused UNet tensors (they are still reported).
    public var allowUnused = false
    /// diffusers weight variant (e.g. `fp16`) in a diffusers folder.
    public var variant: String?
    /// A diffusers `config.json` that overrides the one found or inferred.
    public var configPath: String?
    /// Overrides for what an original checkpoint's tensors cannot tell.
    public var upcastAttention: Bool?
    public var sampleSize: Int?
    public init() {}
}

/// A UNet located in a checkpoint, its config resolved and every parameter matched to a stored tensor.
public final class UNetCheckpoint: @unchecked Sendable {
    public let source: CheckpointSource
    public let config: UNetConfig
    /// How the config was obtained.
    public let configOrigin: String
    /// The config.json the architecture was read from (nil: inferred from the tensors).
    public let configFile: String?
    /// What inference assumed (empty when a config.json was read).
    public let assumptions: [String]
    public let store: TensorStore
    public let keyMap: UNetKeyMap
    public let report: LoadReport
    private let locations: [String: TensorStore.Location]

    /// Opens `path`, resolves the UNet config and matches tensors strictly.
    public convenience init(path: String, options: LoadOptions = LoadOptions()) throws(CheckpointError) {
        let source = try CheckpointSource.locate(path, variant: options.variant)
        try self.init(source: source, options: options)
    }

    /// Matches the UNet of `source`; `store` reuses headers the caller has already opened.
    public init(source: CheckpointSource, options: LoadOptions, store openStore: TensorStore? = nil) throws(CheckpointError) {
        self.source = source
        let store: TensorStore
        if let openStore { store = openStore } else { store = try TensorStore(paths: source.weightPaths) }
        if let map = source.shardMap { try StrictMatch.checkShards(store, map: map, index: source.shardIndexPath ?? source.path) }
        self.store = store
        var config: UNetConfig
        var origin: String
        var assumptions: [String] = []
        if let p = options.configPath ?? source.configPath {
            let data: Data
            do { data = try RegularFile.read(p, limit: 64 << 20) } catch { throw .io(file: p, "cannot read: \(error.reason)") }
            config = try UNetConfig(diffusersJSON: data, source: p)
            origin = p
        } else {
            (config, assumptions) = try UNetConfig.infer(from: store, layout: source.layout, file: source.path)
            origin = "inferred from tensors"
            if options.upcastAttention != nil { assumptions.removeAll { $0.hasPrefix("upcast_attention") } }
            if options.sampleSize != nil { assumptions.removeAll { $0.hasPrefix("sample_size") } }
        }
        if let u = options.upcastAttention { config.upcastAttention = u }
        if let s = options.sampleSize { config.sampleSize = s }
        self.config = config
        configOrigin = origin
        configFile = options.configPath ?? source.configPath
        self.assumptions = assumptions
        let ema = options.ema
        if ema && !(source.layout == .original && OriginalUNetKeys.hasEMA(store.names)) {
            throw .unrecognisedLayout(file: source.path, "load option ema asks for EMA weights but the checkpoint has no model_ema.* UNet copies")
        }
        keyMap = UNetKeyMap(config: config, layout: source.layout, ema: ema)
        var report = LoadReport(file: source.path, layout: source.layout)
        let namespace: Component = ema ? .ema : .unet
        let layout = source.layout
        let matched = StrictMatch.match(keyMap.entries, in: store, report: &report) { name in
            switch layout {
            case .diffusers: return true
            case .original: return OriginalUNetKeys.component(of: name) == namespace && !OriginalUNetKeys.isEMABookkeeping(name)
            }
        }
        let locations = matched.mapValues(\.0)
        self.report = report
        self.locations = locations
        guard report.isAcceptable(allowUnused: options.allowUnused) else { throw .strictLoad(report) }
    }

    /// Where the parameter `canonical` is stored.
    public func location(_ canonical: String) -> TensorStore.Location? { locations[canonical] }

    /// The parameter `canonical` as Float values.
    public func floats(_ canonical: String) throws(CheckpointError) -> [Float] {
        guard let loc = locations[canonical] else {
            throw .safetensors(SafeTensorsError(file: source.path, tensor: canonical, .noSuchTensor))
        }
        do { return try loc.file.floats(loc.info.name) } catch { throw .safetensors(error) }
    }
}
