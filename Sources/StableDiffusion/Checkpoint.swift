import Foundation
import SafeTensors

/// What a path holds, as `alter` recognises it.
public enum CheckpointKind: String, Sendable, Codable {
    /// A diffusers `UNet2DConditionModel` folder (`config.json` + weights).
    case diffusersUNet = "diffusers UNet folder"
    /// A diffusers pipeline folder; its `unet/` is used.
    case diffusersPipeline = "diffusers pipeline folder"
    /// An original single-file checkpoint (`model.diffusion_model.*` beside VAE and text encoder).
    case originalSingleFile = "original single-file checkpoint"
    /// A bare safetensors file of diffusers-named UNet tensors, without `config.json`.
    case diffusersWeightsFile = "diffusers UNet weights file"
}

/// A located checkpoint: its kind, files, and the UNet config if one was given or can be read.
public struct CheckpointSource: Sendable {
    /// The path the user gave.
    public var path: String
    public var kind: CheckpointKind
    /// Where the UNet's tensors are stored, and under which names.
    public var layout: CheckpointLayout
    /// The UNet's `config.json`, when there is one.
    public var configPath: String?
    /// The safetensors files holding the UNet (several when sharded).
    public var weightPaths: [String]
    /// For pipelines: `scheduler/scheduler_config.json`, if present.
    public var schedulerConfigPath: String?
    /// For pipelines: the components `model_index.json` declares (`[library, class]`; not those given as `[null, null]`).
    public var pipelineComponents: [String] = []
    /// For sharded weights: the shard index's tensor name -> shard path.
    public var shardMap: [String: String]?
    /// For sharded weights: the `*.safetensors.index.json` file.
    public var shardIndexPath: String?

    static let weightsName = "diffusion_pytorch_model"

    /// Recognises what `path` is. `variant` picks e.g. the `fp16` weights of a diffusers folder.
    public static func locate(_ path: String, variant: String? = nil) throws(CheckpointError) -> CheckpointSource {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw .notFound(path) }
        if isDir.boolValue {
            let dir = URL(fileURLWithPath: path)
            if fm.fileExists(atPath: dir.appendingPathComponent("config.json").path) {
                return try locateUNetFolder(dir, variant: variant, userPath: path)
            }
            let unet = dir.appendingPathComponent("unet")
            if fm.fileExists(atPath: unet.appendingPathComponent("config.json").path) {
                var s = try locateUNetFolder(unet, variant: variant, userPath: path)
                s.kind = .diffusersPipeline
                let scheduler = dir.appendingPathComponent("scheduler/scheduler_config.json").path
                if fm.fileExists(atPath: scheduler) { s.schedulerConfigPath = scheduler }
                let index = dir.appendingPathComponent("model_index.json").path
                if let data = try? StrictJSON.read(index, limit: 64 << 20),
                   let o = (try? StrictJSON.jsonObject(data, source: index)) as? [String: Any] {
                    // A component is [library, class]; [null, null] declares it absent.
                    s.pipelineComponents = o.keys.filter { k in
                        guard !k.hasPrefix("_"), let entry = o[k] as? [Any] else { return false }
                        return !entry.isEmpty && entry.allSatisfy { $0 is String }
                    }.sorted()
                }
                return s
            }
            throw .unrecognisedLayout(file: path, "a folder without config.json (diffusers UNet) or unet/config.json (diffusers pipeline)")
        }
        let lower = path.lowercased()
        if lower.hasSuffix(".ckpt") || lower.hasSuffix(".bin") || lower.hasSuffix(".pt") || lower.hasSuffix(".pth") {
            throw .unsupportedFormat(file: path, "PyTorch pickle files are not read (they can run code); convert it to .safetensors first")
        }
        let store = try TensorStore(paths: [path])
        if OriginalUNetKeys.isOriginalLayout(store.names) {
            return CheckpointSource(path: path, kind: .originalSingleFile, layout: .original, weightPaths: [path])
        }
        if store.names.contains("conv_in.weight") && store.names.contains(where: { $0.hasPrefix("down_blocks.") }) {
            return CheckpointSource(path: path, kind: .diffusersWeightsFile, layout: .diffusers, weightPaths: [path])
        }
        throw .unrecognisedLayout(file: path, "no UNet tensors: neither model.diffusion_model.* (original layout) nor conv_in/down_blocks.* (diffusers layout)")
    }

    private static func locateUNetFolder(_ dir: URL, variant: String?, userPath: String) throws(CheckpointError) -> CheckpointSource {
        let fm = FileManager.default
        let suffix = variant.map { ".\($0)" } ?? ""
        let single = dir.appendingPathComponent("\(weightsName)\(suffix).safetensors").path
        let index = dir.appendingPathComponent("\(weightsName)\(suffix).safetensors.index.json").path
        let config = dir.appendingPathComponent("config.json").path
        var paths: [String]
        var shardMap: [String: String]?
        var shardIndex: String?
        let fp16Single = dir.appendingPathComponent("\(weightsName).fp16.safetensors").path
        let fp16Index = dir.appendingPathComponent("\(weightsName).fp16.safetensors.index.json").path
        if fm.fileExists(atPath: single) {
            paths = [single]
        } else if fm.fileExists(atPath: index) {
            (paths, shardMap) = try shardPaths(index: index, dir: dir)
            shardIndex = index
        } else if variant == nil, fm.fileExists(atPath: fp16Single) {
            paths = [fp16Single]
        } else if variant == nil, fm.fileExists(atPath: fp16Index) {
            (paths, shardMap) = try shardPaths(index: fp16Index, dir: dir)
            shardIndex = fp16Index
        } else {
            let bin = dir.appendingPathComponent("\(weightsName)\(suffix).bin").path
            if fm.fileExists(atPath: bin) {
                throw .unsupportedFormat(file: bin, "PyTorch pickle weights are not read (they can run code); save the UNet with safe_serialization=True")
            }
            throw .notFound(single)
        }
        var s = CheckpointSource(path: userPath, kind: .diffusersUNet, layout: .diffusers, configPath: config, weightPaths: paths)
        s.shardMap = shardMap
        s.shardIndexPath = shardIndex
        return s
    }

    /// The shard files listed by a diffusers `*.safetensors.index.json`.
    static func shardPaths(index: String, dir: URL) throws(CheckpointError) -> (paths: [String], map: [String: String]) {
        let data: Data
        do { data = try RegularFile.read(index, limit: 256 << 20) } catch { throw .io(file: index, "cannot read: \(error.reason)") }
        let any: Any
        do { any = try StrictJSON.jsonObject(data, source: index) } catch { throw .shardIndex(file: index, error.message) }
        guard let o = any as? [String: Any],
              let map = o["weight_map"] as? [String: Any] else {
            throw .shardIndex(file: index, "expected a JSON object with a \"weight_map\" object")
        }
        var files: [String: String] = [:]
        for (name, v) in map {
            guard let f = v as? String else { throw .shardIndex(file: index, "entry '\(name)' is not a file name") }
            guard !f.contains("/"), !f.hasPrefix(".") else { throw .shardIndex(file: index, "shard '\(f)' for '\(name)' is not a file in the folder") }
            files[name] = dir.appendingPathComponent(f).path
        }
        let paths = Array(Set(files.values)).sorted()
        guard !paths.isEmpty else { throw .shardIndex(file: index, "weight_map is empty") }
        for p in paths where !FileManager.default.fileExists(atPath: p) { throw .shardIndex(file: index, "shard \(p) does not exist") }
        return (paths, files)
    }
}
