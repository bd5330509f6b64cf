import ALTER
import Foundation
import SafeTensors
import StableDiffusion

/// Writes a bundle from a finished ALTER run (formats/bundle.md): the run's fine-tuned UNet
/// (`final/unet`) stored once, its noise-free decisions as expert manifests and a routing table.
public enum BundleExporter {
    public struct Options: Sendable {
        /// Storage dtype of the weight files (F32, F16 or BF16).
        public var dtype: DType = .f32
        /// Replace an existing bundle.
        public var force = false
        /// Where MACs are counted: (height, width, context length); default the run's training data.
        public var macSize: (height: Int, width: Int, context: Int)?
        public init() {}
    }

    static let baseFile = "weights/base.safetensors", unitsFile = "weights/units.safetensors"

    /// Exports `run` to the bundle directory `destination`. `progress` receives short messages.
    @discardableResult
    public static func export(run: RunDirectory, to destination: String, options: Options = Options(),
                              progress: (String) -> Void = { _ in }) throws(BundleError) -> BundleManifest {
        guard [.f32, .f16, .bf16].contains(options.dtype) else { throw BundleError(destination, "storage dtype must be F32, F16 or BF16") }
        let config: CompressionConfig, final: FinalDecisions
        do {
            config = try run.readConfig()
            final = try run.readDecisions()
        } catch { throw BundleError(run.path, error.description) }
        let fm = FileManager.default
        if fm.fileExists(atPath: destination) && !options.force {
            throw BundleError(destination, "exists; pass --force to replace it")
        }
        let unet: UNetCheckpoint
        do { unet = try UNetCheckpoint(path: run.finalPath + "/unet") } catch { throw BundleError(run.finalPath + "/unet", "\(error)") }
        let d = final.decisions
        guard d.units == unet.config.units().map(\.name) else {
            throw BundleError(run.decisionsPath, "units do not match the architecture of \(run.finalPath)/unet")
        }

        progress("hashing the source model \(config.model)")
        let sourceFiles = try sourceDigests(config)

        let dir = (destination as NSString).deletingLastPathComponent
        let name = (destination as NSString).lastPathComponent
        let partial = (dir.isEmpty ? "." : dir) + "/.\(name).partial-\(getpid())"
        try? fm.removeItem(atPath: partial)
        do { try fm.createDirectory(atPath: partial + "/weights", withIntermediateDirectories: true) } catch {
            throw BundleError(partial, "cannot create: \(error.localizedDescription)")
        }
        do { try fm.createDirectory(atPath: partial + "/experts", withIntermediateDirectories: true) } catch {
            throw BundleError(partial, "cannot create: \(error.localizedDescription)")
        }
        TemporaryPaths.shared.add(partial)
        var committed = false
        defer { if !committed { try? fm.removeItem(atPath: partial); _ = TemporaryPaths.shared.remove(partial) } }

        // Tensors: outside every unit -> base; of units some expert keeps -> units; others dropped.
        let units = d.units
        let storedUnits = Set(units.indices.filter { l in d.kept.contains { $0[l] } }.map { units[$0] })
        func unit(of tensor: String) -> String? { units.first { tensor.hasPrefix($0 + ".") } }
        var base: [UNetConfig.Parameter] = [], unitTensors: [UNetConfig.Parameter] = []
        for p in unet.config.parameters() {
            if let u = unit(of: p.name) {
                if storedUnits.contains(u) { unitTensors.append(p) }
            } else { base.append(p) }
        }
        var entries: [String: ExpertManifest.TensorEntry] = [:]
        for (file, params) in [(baseFile, base), (unitsFile, unitTensors)] {
            progress("writing \(file) (\(params.count) tensors, \(options.dtype.rawValue))")
            for e in try writeWeights(params, from: unet, to: partial + "/" + file, relative: file, dtype: options.dtype) { entries[e.name] = e }
        }
        var files: [BundleManifest.FileDigest] = []
        for file in [baseFile, unitsFile] {
            let full = partial + "/" + file
            let size = (try? fm.attributesOfItem(atPath: full)[.size] as? Int) ?? 0
            do { files.append(.init(path: file, bytes: size, sha256: try SHA256.hex(file: full))) } catch { throw BundleError(full, "\(error)") }
        }

        // MACs at the run's latent size (or the one asked for).
        let size = options.macSize ?? (final.latentHeight, final.latentWidth, final.contextLength)
        let cost = CostModel(config: unet.config, latentHeight: size.height, latentWidth: size.width, contextLength: size.context)
        let unitCost = Dictionary(uniqueKeysWithValues: cost.units.map { ($0.name, $0.cost) })
        var expertEntries: [BundleManifest.ExpertEntry] = [], expertMACs: [Int] = []
        for (e, kept) in d.kept.enumerated() {
            let skipped = units.indices.filter { !kept[$0] }.map { units[$0] }
            let skippedCost = skipped.reduce(CostModel.Cost()) { $0 + (unitCost[$1] ?? CostModel.Cost()) }
            let macs = cost.total.total - skippedCost.total
            expertMACs.append(macs)
            let keptSet = Set(units.indices.filter { kept[$0] }.map { units[$0] })
            let tensors = unet.config.parameters().filter { p in unit(of: p.name).map { keptSet.contains($0) } ?? true }.compactMap { entries[$0.name] }
            let served = d.route.indices.filter { d.route[$0] == e }
            let m = ExpertManifest(expert: e, keptUnits: units.filter { keptSet.contains($0) }, skippedUnits: skipped, macs: macs,
                                   macsConvLinear: cost.total.convLinear - skippedCost.convLinear,
                                   keptFraction: Double(macs) / Double(cost.total.total), timesteps: ExpertManifest.ranges(served),
                                   timestepCount: served.count, tensors: tensors)
            let rel = "experts/expert-\(e).json"
            let data = ManifestCoding.encode(m)
            try writeFile(data, to: partial + "/" + rel)
            expertEntries.append(.init(index: e, manifest: rel, sha256: data.withUnsafeBytes { SHA256.hex($0) }))
        }
        let mean = d.route.reduce(0.0) { $0 + Double(expertMACs[$1]) } / Double(max(d.route.count, 1))
        let manifest = BundleManifest(
            architecture: (try? JSONValue.parse(unet.config.diffusersJSON())) ?? .null,
            predictionType: config.predictionType.rawValue, scheduler: schedulerConfig(config),
            source: .init(model: config.model, files: sourceFiles), trainTimesteps: d.route.count, routing: d.route, units: units,
            experts: expertEntries, files: files,
            macs: .init(latentHeight: size.height, latentWidth: size.width, contextLength: size.context, dense: cost.total.total,
                        denseConvLinear: cost.total.convLinear, experts: expertMACs, meanOverTrainTimesteps: mean,
                        keptFraction: mean / Double(cost.total.total)))
        try writeFile(ManifestCoding.encode(manifest), to: partial + "/bundle.json")
        syncDirectory(of: partial + "/bundle.json")

        // Into place: the old bundle (with --force) is moved aside first and removed after.
        let aside = (dir.isEmpty ? "." : dir) + "/.\(name).old-\(getpid())"
        if fm.fileExists(atPath: destination) {
            guard rename(destination, aside) == 0 else { throw BundleError(destination, "cannot move the old bundle aside: \(String(cString: strerror(errno)))") }
        }
        guard rename(partial, destination) == 0 else {
            let reason = String(cString: strerror(errno))
            if fm.fileExists(atPath: aside) { _ = rename(aside, destination) }
            throw BundleError(destination, "cannot rename the new bundle into place: \(reason)")
        }
        committed = true
        _ = TemporaryPaths.shared.remove(partial)
        syncDirectory(of: destination)
        try? fm.removeItem(atPath: aside)
        return manifest
    }

    static func writeWeights(_ params: [UNetConfig.Parameter], from unet: UNetCheckpoint, to path: String, relative: String,
                             dtype: DType) throws(BundleError) -> [ExpertManifest.TensorEntry] {
        var out: [ExpertManifest.TensorEntry] = []
        do {
            let w = try SafeTensorsWriter(path: path, tensors: params.map { TensorSpec(name: $0.name, dtype: dtype, shape: $0.shape) },
                                          metadata: ["format": "alter.bundle.weights"])
            do {
                let shapes = Dictionary(uniqueKeysWithValues: params.map { ($0.name, $0.shape) })
                for spec in w.order {
                    let values = try unet.floats(spec.name)
                    precondition(values.count == spec.elementCount && shapes[spec.name] == spec.shape, "export: \(spec.name)")
                    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: spec.byteCount, alignment: 16)
                    defer { bytes.deallocate() }
                    values.withUnsafeBytes { DTypeConversion.convert($0, from: .f32, to: dtype, into: bytes) }
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

    static func writeFile(_ data: Data, to path: String) throws(BundleError) {
        do { try AtomicFile.write(data, to: path) } catch { throw BundleError(path, error.description) }
    }

    /// SHA-256 of every weight file of the run's source model.
    static func sourceDigests(_ config: CompressionConfig) throws(BundleError) -> [BundleManifest.FileDigest] {
        let source: CheckpointSource
        do { source = try CheckpointSource.locate(config.model, variant: config.variant) } catch {
            throw BundleError(config.model, "the run's source model cannot be read for its digest: \(error)")
        }
        var out: [BundleManifest.FileDigest] = []
        for p in source.weightPaths {
            let size = (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0
            do { out.append(.init(path: p, bytes: size, sha256: try SHA256.hex(file: p))) } catch { throw BundleError(p, "\(error)") }
        }
        return out
    }

    /// The source pipeline's scheduler config if it has one, else SD2.1's DDIM config with the
    /// run's prediction type.
    static func schedulerConfig(_ config: CompressionConfig) -> JSONValue {
        if let source = try? CheckpointSource.locate(config.model, variant: config.variant), let p = source.schedulerConfigPath,
           let data = FileManager.default.contents(atPath: p), let v = try? JSONValue.parse(data), case .object = v {
            return v
        }
        return .object([
            "_class_name": .string("DDIMScheduler"), "beta_start": .number(0.00085), "beta_end": .number(0.012),
            "beta_schedule": .string("scaled_linear"), "num_train_timesteps": .number(1000), "steps_offset": .number(1),
            "set_alpha_to_one": .bool(false), "clip_sample": .bool(false), "timestep_spacing": .string("leading"),
            "skip_prk_steps": .bool(true),
            "prediction_type": .string(config.predictionType.rawValue),
        ])
    }
}
