import Experts
import Foundation
import SafeTensors
import StableDiffusion

/// Writes a bundle (formats/bundle.md) from a fine-tuned UNet and its noise-free decisions: the
/// weights stored once (units no expert keeps left out), one manifest per expert and the routing
/// table, built in a staging directory and renamed into place.
public enum BundleWriter {
    public struct Options: Sendable {
        /// Storage dtype of the weight files (F32, F16 or BF16).
        public var dtype: DType = .f32
        /// Replace an existing bundle (only a bundle is ever replaced).
        public var replace = false
        /// Paths the export reads besides the UNet (a run directory, say): the bundle may not be
        /// written over or around them.
        public var inputs: [String] = []
        public init() {}
    }

    /// What goes into a bundle besides the weights.
    public struct Contents: Sendable {
        /// The fine-tuned UNet (its config is the bundle's architecture).
        public var unet: UNetCheckpoint
        public var decisions: ExpertDecisions
        public var predictionType: NoiseSchedule.PredictionType
        /// A diffusers scheduler config (bundle.json `scheduler`).
        public var scheduler: JSONValue
        /// The source model and the digests of its weight files.
        public var source: BundleManifest.Source
        /// Where MACs are counted.
        public var macLatentHeight: Int, macLatentWidth: Int, macContextLength: Int
        /// The pipeline's tokenizer, text encoder and VAE to carry (bundle format version 3), or nil.
        public var components: PipelineComponents?

        public init(unet: UNetCheckpoint, decisions: ExpertDecisions, predictionType: NoiseSchedule.PredictionType, scheduler: JSONValue,
                    source: BundleManifest.Source, macLatentHeight: Int, macLatentWidth: Int, macContextLength: Int) {
            self.unet = unet
            self.decisions = decisions
            self.predictionType = predictionType
            self.scheduler = scheduler
            self.source = source
            self.macLatentHeight = macLatentHeight
            self.macLatentWidth = macLatentWidth
            self.macContextLength = macContextLength
        }
    }

    /// Applies the output policy (`OutputTarget`: a bundle replaces only a bundle, with `replace`,
    /// and never an input) to `destination` and locks it against other alter processes until the
    /// returned lock is released.
    public static func prepareDestination(_ destination: String, options: Options, unet: UNetCheckpoint? = nil) throws(BundleError) -> PathLock {
        let sources = unet.map { [$0.source.path] + $0.source.weightPaths } ?? []
        let target = OutputTarget(path: destination, kind: .bundle, replace: options.replace, inputs: options.inputs + sources)
        do {
            try target.prepare()
            return try PathLock(beside: destination)
        } catch { throw BundleError(error.file, error.message) }
    }

    static let baseFile = "weights/base.safetensors", unitsFile = "weights/units.safetensors"

    /// Writes `contents` as the bundle directory `destination`. `lock`: the lock of
    /// `prepareDestination` when the caller took it already (else it is taken here).
    /// `progress` receives short messages.
    @discardableResult
    public static func write(_ contents: Contents, to destination: String, options: Options = Options(), lock: PathLock? = nil,
                             progress: (String) -> Void = { _ in }) throws(BundleError) -> BundleManifest {
        guard [.f32, .f16, .bf16].contains(options.dtype) else { throw BundleError(destination, "storage dtype must be F32, F16 or BF16") }
        let unet = contents.unet, d = contents.decisions
        // Every number is checked before anything is written: the routing table has one entry per
        // training timestep of the bundle's scheduler config, the MAC sizes are within bounds.
        let trainTimesteps: Int
        do { trainTimesteps = try SchedulerConfig(diffusersJSON: contents.scheduler.data(), source: "scheduler").trainTimesteps } catch {
            throw BundleError(destination, "scheduler: \(error)")
        }
        do { try d.validate(trainTimesteps: trainTimesteps) } catch { throw BundleError(destination, "decisions: \(error)") }
        guard d.units == unet.config.units().map(\.name) else {
            throw BundleError(destination, "the decisions' units do not match the UNet's architecture")
        }
        let cost: CostModel
        do {
            cost = try CostModel(config: unet.config, latentHeight: contents.macLatentHeight, latentWidth: contents.macLatentWidth,
                                 contextLength: contents.macContextLength)
        } catch { throw BundleError(destination, "MACs: \(error)") }
        if let c = contents.components {
            let misfit = c.fitFailures(unet: unet.config)
            if !misfit.isEmpty { throw BundleError(destination, "the pipeline components do not fit the UNet: " + misfit.joined(separator: "; ")) }
        }
        let held: PathLock
        if let lock { held = lock } else { held = try prepareDestination(destination, options: options, unet: unet) }
        defer { if lock == nil { held.release() } }
        let fm = FileManager.default

        let staging: AtomicDirectory
        do {
            staging = try AtomicDirectory(destination: destination)
            try staging.createSubdirectory("weights")
            try staging.createSubdirectory("experts")
        } catch { throw BundleError(destination, error.description) }
        let partial = staging.path

        // Tensors: outside every unit -> base; of units some expert keeps -> units; others dropped.
        let units = d.units
        let dropped = d.unitsNoExpertKeeps
        func unit(of tensor: String) -> String? { units.first { tensor.hasPrefix($0 + ".") } }
        var base: [UNetConfig.Parameter] = [], unitTensors: [UNetConfig.Parameter] = []
        for p in unet.config.parameters() {
            if let u = unit(of: p.name) {
                if !dropped.contains(u) { unitTensors.append(p) }
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

        var components: BundleManifest.Components?
        if let c = contents.components {
            components = try writeComponents(c, to: staging, dtype: options.dtype, progress: progress)
            try checkWrittenComponents(in: partial, unet: unet.config)
        }

        var expertEntries: [BundleManifest.ExpertEntry] = [], expertMACs: [Int] = []
        for e in 0..<d.experts {
            let skipped = d.skippedUnits(expert: e)
            let expertCost = cost.cost(skipping: Set(skipped))
            expertMACs.append(expertCost.total)
            let keptSet = Set(d.keptUnits(expert: e))
            let tensors = unet.config.parameters().filter { p in unit(of: p.name).map { keptSet.contains($0) } ?? true }.compactMap { entries[$0.name] }
            let served = d.route.indices.filter { d.route[$0] == e }
            let m = ExpertManifest(expert: e, keptUnits: d.keptUnits(expert: e), skippedUnits: skipped, macs: expertCost.total,
                                   macsConvLinear: expertCost.convLinear,
                                   keptFraction: Double(expertCost.total) / Double(cost.total.total), timesteps: RoutingTable.ranges(served),
                                   timestepCount: served.count, tensors: tensors)
            let rel = "experts/expert-\(e).json"
            let data = ManifestCoding.encode(m)
            try writeFile(data, to: partial + "/" + rel)
            expertEntries.append(.init(index: e, manifest: rel, sha256: data.withUnsafeBytes { SHA256.hex($0) }))
        }
        let mean = d.route.reduce(0.0) { $0 + Double(expertMACs[$1]) } / Double(max(d.route.count, 1))
        var manifest = BundleManifest(
            architecture: (try? JSONValue.parse(unet.config.diffusersJSON())) ?? .null,
            predictionType: contents.predictionType.rawValue, scheduler: contents.scheduler,
            source: contents.source, trainTimesteps: d.route.count, routing: d.route, units: units,
            experts: expertEntries, files: files,
            macs: .init(latentHeight: cost.latentHeight, latentWidth: cost.latentWidth, contextLength: cost.contextLength, dense: cost.total.total,
                        denseConvLinear: cost.total.convLinear, experts: expertMACs, meanOverTrainTimesteps: mean,
                        keptFraction: mean / Double(cost.total.total)))
        manifest.components = components
        manifest.formatVersion = components == nil ? BundleManifest.componentsVersion - 1 : BundleManifest.componentsVersion
        try writeFile(ManifestCoding.encode(manifest), to: partial + "/bundle.json")
        do { try staging.commit(replacing: options.replace) } catch { throw BundleError(destination, error.description) }
        return manifest
    }

    /// Writes `f32` (Float32 values) as the next tensor `spec` of `w`, converted to the spec's
    /// dtype; returns its entry with the SHA-256 of the stored bytes (`file`: the weight file).
    static func writeConverted(_ f32: UnsafeRawBufferPointer, as spec: TensorSpec, to w: SafeTensorsWriter,
                               file: String) throws -> ExpertManifest.TensorEntry {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: spec.byteCount, alignment: 16)
        defer { bytes.deallocate() }
        DTypeConversion.convert(f32, from: .f32, to: spec.dtype, into: bytes)
        try w.write(spec.name, bytes: UnsafeRawBufferPointer(bytes))
        return .init(name: spec.name, file: file, dtype: spec.dtype.rawValue, shape: spec.shape, sha256: SHA256.hex(UnsafeRawBufferPointer(bytes)))
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
                    out.append(try values.withUnsafeBytes { try writeConverted($0, as: spec, to: w, file: relative) })
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

    /// The source model `model` (any layout `UNetCheckpoint` reads) with the SHA-256 of every
    /// weight file.
    public static func source(model: String, variant: String?) throws(BundleError) -> BundleManifest.Source {
        let source: CheckpointSource
        do { source = try CheckpointSource.locate(model, variant: variant) } catch {
            throw BundleError(model, "the source model cannot be read for its digest: \(error)")
        }
        var out: [BundleManifest.FileDigest] = []
        for p in source.weightPaths {
            let size = (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0
            do { out.append(.init(path: p, bytes: size, sha256: try SHA256.hex(file: p))) } catch { throw BundleError(p, "\(error)") }
        }
        return BundleManifest.Source(model: model, files: out)
    }

    /// The scheduler config of the pipeline `model` if it has one, else SD2.1's DDIM config with
    /// `predictionType`.
    public static func schedulerConfig(model: String, variant: String?, predictionType: NoiseSchedule.PredictionType) -> JSONValue {
        if let source = try? CheckpointSource.locate(model, variant: variant), let p = source.schedulerConfigPath,
           let data = try? StrictJSON.read(p, limit: 64 << 20), let v = try? JSONValue.parse(data, source: p), case .object = v {
            return v
        }
        return .object([
            "_class_name": .string("DDIMScheduler"), "beta_start": .number(0.00085), "beta_end": .number(0.012),
            "beta_schedule": .string("scaled_linear"), "num_train_timesteps": .number(1000), "steps_offset": .number(1),
            "set_alpha_to_one": .bool(false), "clip_sample": .bool(false), "timestep_spacing": .string("leading"),
            "skip_prk_steps": .bool(true),
            "prediction_type": .string(predictionType.rawValue),
        ])
    }
}
