import Foundation
import SafeTensors

/// A key-table entry as strict loading sees it: the canonical (diffusers) name, the name in the
/// file and the shape stored there.
protocol StrictEntry {
    var canonical: String { get }
    var stored: String { get }
    var storedShape: [Int] { get }
}

extension UNetKeyMap.Entry: StrictEntry {
    var storedShape: [Int] { shape }
}

extension CLIPTextKeyMap.Entry: StrictEntry {}
extension VAEKeyMap.Entry: StrictEntry {}

/// Strict loading shared by the UNet, text encoder and VAE checkpoints: one pass of a key table
/// over the file's tensors, and the check of a sharded folder against its index.
enum StrictMatch {
    /// Matches `entries` against `store` into `report`: each stored tensor must exist (else
    /// missing), be a float dtype (else wrong dtype) and have its stored shape (else misshapen);
    /// entries that share a stored tensor (fused projections) report it once. Tensors of the file
    /// no entry uses are reported unused when `reportsUnused` says they belong to the component.
    /// Returns the location and entry of every matched canonical name.
    static func match<E: StrictEntry>(_ entries: [E], in store: TensorStore, report: inout LoadReport,
                                      reportsUnused: (String) -> Bool) -> [String: (TensorStore.Location, E)] {
        var locations: [String: (TensorStore.Location, E)] = [:]
        var used = Set<String>()
        for e in entries {
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
        for name in store.names where !used.contains(name) && reportsUnused(name) { report.unused.append(name) }
        return locations
    }

    /// Checks that the shards of `store` hold exactly the tensors the index `map` assigns them.
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
}

/// Where a pipeline component (text encoder, VAE) is stored: a pipeline folder's
/// `FOLDER/`, the component's own folder (`config.json` + weights, single, variant or sharded), or an
/// original single file; its weight files opened as one store.
struct ComponentFiles {
    enum Place { case pipeline, folder, singleFile }

    let place: Place
    let layout: CheckpointLayout
    /// The config.json to read (the one given, else the folder's; nil for a single file).
    let configFile: String?
    let weights: [String]
    let store: TensorStore

    /// Locates the component at `path`. `folderName`: its folder in a pipeline (`vae`);
    /// `weightsName`: its weight file's base name (`model`, `diffusion_pytorch_model`);
    /// `pickleName`: the base name of pickle weights, refused by name; `component`: for messages.
    init(path: String, folderName: String, weightsName: String, pickleName: String, component: String, variant: String?,
         configPath: String?) throws(CheckpointError) {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw .notFound(path) }
        var configFile = configPath
        var shardIndex: (path: String, map: [String: String])?
        if isDir.boolValue {
            var dir = URL(fileURLWithPath: path)
            if fm.fileExists(atPath: dir.appendingPathComponent(folderName + "/config.json").path) {
                place = .pipeline
                dir = dir.appendingPathComponent(folderName)
            } else if fm.fileExists(atPath: dir.appendingPathComponent("config.json").path) {
                place = .folder
            } else {
                throw .unrecognisedLayout(file: path, "a folder without \(folderName)/config.json (diffusers pipeline) or config.json (\(component) folder)")
            }
            configFile = configFile ?? dir.appendingPathComponent("config.json").path
            layout = .diffusers
            (weights, shardIndex) = try Self.weightFiles(dir, variant: variant, weightsName: weightsName, pickleName: pickleName, component: component)
        } else {
            let lower = path.lowercased()
            if lower.hasSuffix(".ckpt") || lower.hasSuffix(".bin") || lower.hasSuffix(".pt") || lower.hasSuffix(".pth") {
                throw .unsupportedFormat(file: path, "PyTorch pickle files are not read (they can run code); convert it to .safetensors first")
            }
            place = .singleFile
            layout = .original
            weights = [path]
        }
        self.configFile = configFile
        store = try TensorStore(paths: weights)
        if let shardIndex { try StrictMatch.checkShards(store, map: shardIndex.map, index: shardIndex.path) }
    }

    /// The weight files of a component folder: `NAME[.variant].safetensors` or its shard index
    /// (without a variant, the `fp16` variant when it is the only one).
    static func weightFiles(_ dir: URL, variant: String?, weightsName: String, pickleName: String,
                            component: String) throws(CheckpointError) -> ([String], (path: String, map: [String: String])?) {
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
}
