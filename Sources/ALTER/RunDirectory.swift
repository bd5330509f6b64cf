import Experts
import Foundation
import NN
import SafeTensors
import StableDiffusion
import TensorCore

/// The directory of an ALTER run:
///
/// - `config.json`: the resolved `CompressionConfig`;
/// - `metrics.jsonl`: one `StepMetrics` line per completed step;
/// - `checkpoint/`: `state.json`, `unet.safetensors` (student weights), `unet-adamw.safetensors`,
///   `hypernet.safetensors` (weights and AdamW moments); replaced as a whole (written beside,
///   then renamed), so a crash leaves the previous checkpoint;
/// - `final/`: `unet/` (a diffusers UNet folder of the fine-tuned weights) and `decisions.json`
///   (the noise-free mask table: kept units per expert, expert per timestep, kept MACs).
public struct RunDirectory: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    public var configPath: String { path + "/config.json" }
    public var metricsPath: String { path + "/metrics.jsonl" }
    public var checkpointPath: String { path + "/checkpoint" }
    public var finalPath: String { path + "/final" }
    public var decisionsPath: String { finalPath + "/decisions.json" }

    /// Creates the directory for a new run and writes its configuration. Refuses a directory
    /// that exists and is not empty.
    public func create(config: CompressionConfig) throws(CompressionError) {
        try config.validate()
        let fm = FileManager.default
        switch try? RegularFile.status(path)?.kind {
        case nil: break
        case .directory?:
            let contents = (try? fm.contentsOfDirectory(atPath: path)) ?? []
            guard contents.isEmpty else {
                throw .runDirectory("\(path) already holds a run (resume it, or choose another run directory)")
            }
        case let kind?: throw .runDirectory("\(path) exists and is \(kind.rawValue), not a directory")
        }
        let existed = fm.fileExists(atPath: path)
        do { try fm.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw .runDirectory("cannot create \(path): \(error.localizedDescription)")
        }
        do { try writeJSON(config, to: configPath) } catch {
            if !existed { try? fm.removeItem(atPath: path) }
            throw error
        }
    }

    /// The lock file that keeps two processes from training the same run at once.
    public var lockPath: String { path + "/.alter-lock" }

    /// Locks the run against other alter processes until the lock is released (or the process ends).
    public func lock() throws(CompressionError) -> PathLock {
        do { return try PathLock(lockFile: lockPath, describing: path) } catch { throw .runDirectory(error.description) }
    }

    /// Whether the run has a checkpoint to resume from (a complete `checkpoint/`, or the previous
    /// one left aside by a crash during its replacement).
    public var hasCheckpoint: Bool {
        let fm = FileManager.default
        return fm.fileExists(atPath: checkpointPath + "/state.json") || fm.fileExists(atPath: path + "/checkpoint.old/state.json")
    }

    /// The configuration of an existing run.
    public func readConfig() throws(CompressionError) -> CompressionConfig {
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw .runDirectory("\(configPath) not found: \(path) is not an alter run directory")
        }
        let data: Data
        do { data = try RunFileVersion.read(configPath) } catch { throw .runDirectory("\(configPath) is not a valid run configuration: \(error.message)") }
        do { return try RunFileVersion.decoder(for: data).decode(CompressionConfig.self, from: data) } catch {
            throw .runDirectory("\(configPath) is not a valid run configuration: \(error)")
        }
    }

    /// Appends one metrics line (flushed, so the file is readable while the run goes on).
    public func append(_ m: StepMetrics) throws(CompressionError) {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        guard var line = try? enc.encode(m) else { throw .runDirectory("cannot encode metrics of step \(m.step)") }
        line.append(0x0A)
        let fm = FileManager.default
        if !fm.fileExists(atPath: metricsPath) { _ = fm.createFile(atPath: metricsPath, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: metricsPath) else { throw .runDirectory("cannot open \(metricsPath)") }
        defer { try? h.close() }
        do {
            try h.seekToEnd()
            try h.write(contentsOf: line)
        } catch { throw .runDirectory("cannot write \(metricsPath): \(error.localizedDescription)") }
    }

    /// Drops metrics lines of steps after `step` (those of an interrupted run past its last checkpoint).
    public func truncateMetrics(after step: Int) throws(CompressionError) {
        guard let data = try? RegularFile.read(metricsPath) else { return }
        let lines = data.split(separator: 0x0A, omittingEmptySubsequences: true)
        var kept = Data()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for line in lines {
            // Version 1 lines are rewritten with version 2 keys.
            guard (try? StrictJSON.validate(Data(line), source: metricsPath)) != nil else { continue }
            let m = (try? JSONDecoder().decode(StepMetrics.self, from: Data(line)))
                ?? (try? RunFileVersion.version1Decoder().decode(StepMetrics.self, from: Data(line)))
            guard let m, m.step <= step, let encoded = try? encoder.encode(m) else { continue }
            kept.append(encoded)
            kept.append(0x0A)
        }
        try writeAtomically(kept, to: metricsPath)
    }

    // MARK: checkpoints

    /// Writes the trainer's complete state as the run's checkpoint.
    public func writeCheckpoint(_ trainer: ALTERTrainer) throws(CompressionError) {
        let dir = try staging(checkpointPath, partial: path + "/checkpoint.partial", aside: path + "/checkpoint.old")
        try writeTensors(trainer.student.parameters.map { ($0.name, $0.value) }, to: dir.path + "/unet.safetensors")
        try writeTensors(Self.optimizerTensors(trainer.unetOptimizer), to: dir.path + "/unet-adamw.safetensors")
        try writeTensors(trainer.hypernet.parameters.map { ($0.name, $0.value) } + Self.optimizerTensors(trainer.hypernetOptimizer),
                         to: dir.path + "/hypernet.safetensors")
        try writeJSON(trainer.state, to: dir.path + "/state.json")
        try publish(dir)
    }

    /// A staging directory for `target` (a crash leaves a complete `target` or a complete `aside`).
    func staging(_ target: String, partial: String, aside: String) throws(CompressionError) -> AtomicDirectory {
        do { return try AtomicDirectory(destination: target, staging: partial, aside: aside) } catch { throw .runDirectory(error.description) }
    }

    func publish(_ dir: AtomicDirectory) throws(CompressionError) {
        do { try dir.commit(replacing: true) } catch { throw .runDirectory(error.description) }
    }

    /// Restores the trainer from the run's checkpoint (or the previous one, if a crash interrupted
    /// the replacement). Returns the step it holds.
    public func restoreCheckpoint(into trainer: ALTERTrainer) throws(CompressionError) -> Int {
        let fm = FileManager.default
        var dir = checkpointPath
        if !fm.fileExists(atPath: dir + "/state.json") {
            dir = path + "/checkpoint.old"
            guard fm.fileExists(atPath: dir + "/state.json") else { throw .runDirectory("\(path) has no checkpoint to resume from") }
        }
        guard let stateData = try? RunFileVersion.read(dir + "/state.json"),
              let state = try? RunFileVersion.decoder(for: stateData).decode(TrainerState.self, from: stateData) else {
            throw .runDirectory("\(dir)/state.json is missing or not a valid trainer state")
        }
        try readTensors(into: trainer.student.parameters.map { ($0.name, $0.value) }, from: dir + "/unet.safetensors")
        let unetState = Self.optimizerTensors(trainer.unetOptimizer, fresh: true)
        try readTensors(into: unetState, from: dir + "/unet-adamw.safetensors")
        let hyperState = Self.optimizerTensors(trainer.hypernetOptimizer, fresh: true)
        try readTensors(into: trainer.hypernet.parameters.map { ($0.name, $0.value) } + hyperState, from: dir + "/hypernet.safetensors")
        for p in trainer.student.parameters + trainer.hypernet.parameters { p.markUpdated() }
        let half = { (s: [(String, Tensor)]) in (Array(s.prefix(s.count / 2)).map(\.1), Array(s.suffix(s.count / 2)).map(\.1)) }
        let (um, uv) = half(unetState), (hm, hv) = half(hyperState)
        trainer.unetOptimizer.restore(step: state.unetOptimizerStep, m: um, v: uv)
        trainer.hypernetOptimizer.restore(step: state.hypernetOptimizerStep, m: hm, v: hv)
        do { try trainer.restore(state) } catch let e { throw .runDirectory("\(dir)/state.json: \(e.description)") }
        return state.step
    }

    /// Writes `final/`: the fine-tuned UNet as a diffusers folder and the noise-free decisions.
    public func writeFinal(_ trainer: ALTERTrainer) throws(CompressionError) {
        let dir = try staging(finalPath, partial: path + "/final.partial", aside: path + "/final.old")
        do { try dir.createSubdirectory("unet") } catch { throw .runDirectory(error.description) }
        try writeAtomically(trainer.student.config.diffusersJSON(), to: dir.path + "/unet/config.json")
        try writeTensors(trainer.student.parameters.map { ($0.name, $0.value) },
                         to: dir.path + "/unet/diffusion_pytorch_model.safetensors")
        try writeJSON(FinalDecisions(trainer), to: dir.path + "/decisions.json")
        try publish(dir)
    }

    /// The decisions of a finished run.
    public func readDecisions() throws(CompressionError) -> FinalDecisions {
        guard let data = try? RunFileVersion.read(decisionsPath),
              let d = try? JSONDecoder().decode(FinalDecisions.self, from: data) else {
            throw .runDirectory("\(decisionsPath) is missing or invalid (has the run finished?)")
        }
        do { try d.validate() } catch { throw .runDirectory("\(decisionsPath): \(error)") }
        return d
    }

    // MARK: files

    static func optimizerTensors(_ o: AdamW, fresh: Bool = false) -> [(String, Tensor)] {
        let ms = o.parameters.indices.map { ("adamw.m." + o.parameters[$0].name, fresh ? Tensor(zeros: o.parameters[$0].shape) : o.m[$0]) }
        let vs = o.parameters.indices.map { ("adamw.v." + o.parameters[$0].name, fresh ? Tensor(zeros: o.parameters[$0].shape) : o.v[$0]) }
        return ms + vs
    }

    func writeTensors(_ tensors: [(String, Tensor)], to file: String) throws(CompressionError) {
        do {
            let w = try SafeTensorsWriter(path: file, tensors: tensors.map { TensorSpec(name: $0.0, dtype: .f32, shape: $0.1.shape) })
            let byName = Dictionary(tensors, uniquingKeysWith: { a, _ in a })
            do {
                for spec in w.order {
                    let t = byName[spec.name]!
                    try w.write(spec.name, bytes: UnsafeRawBufferPointer(start: t.data, count: t.count * 4))
                }
                try w.finish()
            } catch {
                w.abort()
                throw error
            }
        } catch let e { throw .runDirectory("\(e)") }
    }

    func readTensors(into tensors: [(String, Tensor)], from file: String) throws(CompressionError) {
        do {
            let f = try SafeTensorsFile(path: file)
            let expected = Set(tensors.map(\.0))
            if let extra = f.names.first(where: { !expected.contains($0) }) {
                throw CompressionError.runDirectory("\(file): unexpected tensor '\(extra)' (the checkpoint is from another model or run)")
            }
            for (name, t) in tensors {
                let info = try f.require(name)
                guard info.dtype == .f32, info.shape == t.shape else {
                    throw CompressionError.runDirectory("\(file): tensor '\(name)' is \(info.dtype) \(info.shape), expected F32 \(t.shape)")
                }
                let src = f.rawBytes(info)
                UnsafeMutableRawPointer(t.data).copyMemory(from: src.baseAddress!, byteCount: info.byteCount)
            }
        } catch let e as CompressionError {
            throw e
        } catch let e as SafeTensorsError {
            throw .runDirectory(e.description)
        } catch {
            throw .runDirectory("\(file): \(error)")
        }
    }

    public func writeJSON(_ value: some Encodable, to file: String) throws(CompressionError) {
        guard let data = try? JSONEncoder.alterOutput().encode(value) else { throw .runDirectory("cannot encode \(file)") }
        try writeAtomically(data, to: file)
    }

    func writeAtomically(_ data: Data, to file: String) throws(CompressionError) {
        do { try AtomicFile.write(data, to: file) } catch { throw .runDirectory(error.description) }
    }
}

/// `final/decisions.json`: the exported mask table and its measured MACs.
public struct FinalDecisions: Codable, Sendable, Equatable {
    public var decisions: ExpertDecisions
    /// Kept fraction of total UNet MACs over all training timesteps.
    public var keptFraction: Double
    /// Kept fraction of each expert.
    public var expertKeptFractions: [Double]
    public var expertShares: [Double]
    /// The latent size and context length the MACs are counted at, and the dense total.
    public var latentHeight: Int, latentWidth: Int, contextLength: Int
    public var denseMACs: Int
    /// How the decisions were projected onto `--keep` when the masks froze (absent in runs
    /// finished by versions without the projection).
    public var budgetProjection: BudgetProjection?
    /// Contiguous segments of the routing table (maximal runs of consecutive timesteps served by
    /// one expert) per expert and in all (absent in runs finished by versions without them).
    public var expertRoutingSegments: [Int]?
    public var routingSegments: Int?

    init(_ t: ALTERTrainer) {
        decisions = t.finalDecisions
        budgetProjection = t.finalBudgetProjection
        expertRoutingSegments = RoutingTable.segments(decisions.route, experts: decisions.experts)
        routingSegments = expertRoutingSegments?.reduce(0, +)
        keptFraction = t.budget.keptFraction(decisions)
        expertKeptFractions = decisions.kept.map { t.budget.keptFraction(expert: $0) }
        expertShares = decisions.expertShares
        latentHeight = t.data.latentHeight
        latentWidth = t.data.latentWidth
        contextLength = t.data.contextLength
        denseMACs = t.budget.totalMACs
    }

    enum CodingKeys: String, CodingKey {
        case decisions, keptFraction = "kept_mac_fraction", expertKeptFractions = "expert_kept_mac_fractions"
        case expertShares = "expert_shares", latentHeight = "latent_height", latentWidth = "latent_width"
        case contextLength = "context_length", denseMACs = "dense_macs", budgetProjection = "budget_projection"
        case expertRoutingSegments = "expert_routing_segment_counts", routingSegments = "routing_segment_count"
    }
}
