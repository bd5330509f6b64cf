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
        if let map = source.shardMap { try Self.checkShards(store, map: map, index: source.shardIndexPath ?? source.path) }
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
        var locations: [String: TensorStore.Location] = [:]
        var used = Set<String>()
        for e in keyMap.entries {
            guard let loc = store[e.stored] else {
                report.missing.append(e.stored)
                continue
            }
            used.insert(e.stored)
            if !loc.info.dtype.isFloatConvertible {
                report.wrongDType.append(.init(stored: e.stored, dtype: loc.info.dtype))
            } else if loc.info.shape != e.shape {
                report.misshapen.append(.init(canonical: e.canonical, stored: e.stored, expected: e.shape, actual: loc.info.shape))
            } else {
                report.mapped += 1
                locations[e.canonical] = loc
            }
        }
        let namespace: Component = ema ? .ema : .unet
        for name in store.names where !used.contains(name) {
            let inNamespace: Bool
            switch source.layout {
            case .diffusers: inNamespace = true
            case .original:
                inNamespace = OriginalUNetKeys.component(of: name) == namespace
                    && !OriginalUNetKeys.isEMABookkeeping(name)
            }
            if inNamespace { report.unused.append(name) }
        }
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

    private static func checkShards(_ store: TensorStore, map: [String: String], index: String) throws(CheckpointError) {
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
}
