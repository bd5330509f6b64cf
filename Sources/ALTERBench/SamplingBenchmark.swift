import ALTER
import Experts
import ExpertBundle
import Foundation
import NN
import RunExport
import StableDiffusion
import TensorCore

/// Dense sampling against routed expert sampling, timed side by side (`alter bench sample`): the
/// UNet calls of both runs are interleaved evenly over the same span of time, so drifts in the
/// machine's speed hit both alike; and each expert's single call paired with a dense call.
public enum SamplingBenchmark {
    /// One timed sampling run.
    public struct Run: Encodable, Sendable {
        public var schedule: String
        public var calls: Int
        /// Calls timed over all repeats (fewer than calls x repeats for an extrapolated dense run).
        public var timedCalls: Int
        /// The total of the run (the median over repeats; extrapolated: calls x median call).
        public var totalSeconds: Double
        /// Each repeat's total (of the calls timed).
        public var runTotals: [Double]
        public var medianCallSeconds: Double
        public var extrapolated: Bool
        /// MACs of the whole run (all calls, UNet batch included).
        public var macs: Int
        public var callSeconds: [Double]
        /// Process CPU time (user + system, all threads) of each timed call.
        public var callCPUSeconds: [Double]
        /// Like totalSeconds, in CPU time.
        public var totalCPUSeconds: Double
        public var experts: [Int?]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case schedule, calls = "call_count", timedCalls = "timed_call_count", totalSeconds = "total_seconds", runTotals = "run_totals"
            case medianCallSeconds = "median_call_seconds", extrapolated, macs, callSeconds = "call_seconds"
            case callCPUSeconds = "call_cpu_seconds", totalCPUSeconds = "total_cpu_seconds", experts
        }
    }

    /// One expert's calls in a routed run against the dense calls.
    public struct ExpertRow: Encodable, Sendable {
        public var expert: Int
        public var calls: Int
        public var skippedUnitCount: Int
        /// MACs of one call of this expert / one dense call.
        public var keptMACFraction: Double
        /// Median seconds of its calls / median seconds of a dense call.
        public var timeShare: Double
        /// timeShare / keptMACFraction - 1.
        public var deviation: Double
        /// Median CPU seconds of its calls / median CPU seconds of a dense call.
        public var cpuShare: Double

        enum CodingKeys: String, CodingKey, CaseIterable {
            case expert, calls = "call_count", skippedUnitCount = "skipped_unit_count", keptMACFraction = "kept_mac_fraction"
            case timeShare = "time_share", deviation, cpuShare = "cpu_share"
        }
    }

    /// A dense run against a routed run.
    public struct Comparison: Encodable, Sendable {
        public var name: String
        public var model: String
        public var latent: [Int]
        public var contextLength: Int
        public var unetBatch: Int
        public var experts: Int
        public var repeats: Int
        /// Kept fraction of the dense MACs averaged over the training timesteps.
        public var keptMACFraction: Double
        public var dense: Run
        public var routed: Run
        public var speedup: Double
        /// dense / routed total CPU time.
        public var cpuSpeedup: Double
        /// Routed MACs / dense MACs over the whole runs.
        public var runKeptMACFraction: Double
        public var speedupPredictedByMACs: Double
        public var perExpert: [ExpertRow]
        public var loadAverage: [Double]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, model, latent, contextLength = "context_length", unetBatch = "unet_batch", experts = "expert_count", repeats
            case keptMACFraction = "kept_mac_fraction", dense, routed, speedup, cpuSpeedup = "cpu_speedup"
            case runKeptMACFraction = "run_kept_mac_fraction", speedupPredictedByMACs = "speedup_predicted_by_macs"
            case perExpert = "per_expert", loadAverage = "load_average"
        }
    }

    /// One expert's call timed beside a dense call, per round.
    public struct PairRow: Encodable, Sendable {
        public var expert: Int
        public var timestep: Int
        public var skippedUnitCount: Int
        public var keptMACFraction: Double
        /// Expert call time / the paired dense call's time, per round.
        public var timeRatios: [Double]
        public var cpuRatios: [Double]
        public var medianTimeRatio: Double
        public var medianCPURatio: Double

        enum CodingKeys: String, CodingKey, CaseIterable {
            case expert, timestep, skippedUnitCount = "skipped_unit_count", keptMACFraction = "kept_mac_fraction"
            case timeRatios = "time_ratios", cpuRatios = "cpu_ratios", medianTimeRatio = "median_time_ratio"
            case medianCPURatio = "median_cpu_ratio"
        }
    }

    /// Every expert's paired calls.
    public struct Pairs: Encodable, Sendable {
        public var latent: Int
        public var contextLength: Int
        public var rounds: Int
        public var denseSeconds: [Double]
        public var rows: [PairRow]
        public var loadAverage: [Double]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case latent, contextLength = "context_length", rounds, denseSeconds = "dense_seconds", rows, loadAverage = "load_average"
        }
    }

    /// The settings of a comparison.
    public struct Settings: Sendable {
        public var denseSchedule: SchedulerKind
        public var routedSchedule: SchedulerKind
        public var guidance: Float = 7.5
        /// Time only this many dense calls and extrapolate (0: the whole run).
        public var denseCalls = 0
        /// Interleaved dense and routed runs (totals: their medians).
        public var repeats = 1
        public init(denseSchedule: SchedulerKind, routedSchedule: SchedulerKind) {
            self.denseSchedule = denseSchedule
            self.routedSchedule = routedSchedule
        }
    }

    /// Trains a short ALTER run of the example (examples/sd21-tiny*) into `directory` and exports
    /// it as `directory/example.alter`; returns the bundle and the run's final UNet.
    public static func trainExampleBundle(in directory: String, root: String = ".", steps: Int, experts: Int, keep: Double,
                                          seed: UInt64 = 1) throws -> (bundle: ExpertBundle, dense: UNet) {
        let model = root + "/" + ExampleFiles.model, data = root + "/" + ExampleFiles.data
        var config = CompressionConfig(model: model, data: data, steps: steps)
        config.configPath = root + "/" + ExampleFiles.config
        config.settings.experts = experts
        config.settings.keep = keep
        config.settings.learningRateUNet = 1e-4
        config.settings.learningRateHypernet = 1e-2
        config.batch = 2
        config.seed = seed
        var o = LoadOptions()
        o.configPath = config.configPath
        let ckpt = try UNetCheckpoint(path: model, options: o)
        let trainer = try ALTERTrainer(config: config, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                       data: try TrainingData(contentsOf: URL(fileURLWithPath: data)))
        let run = RunDirectory(path: directory + "/run")
        try run.create(config: config)
        guard try trainer.run(in: run) == .finished else { throw RoutingStudyError.invalid(field: "steps", "the example run did not finish") }
        try RunExporter.export(run: run, to: directory + "/example.alter")
        return (try ExpertBundle(path: directory + "/example.alter"), try UNet(checkpoint: UNetCheckpoint(path: run.finalPath + "/unet")))
    }

    /// Times `dense` against `routed` (guided sampling of one prompt, UNet batch 2; random context
    /// and uncond) at a `height` x `width` latent with `tokens` context tokens. After a warm-up call
    /// of the dense model and one per expert, the calls of both runs are interleaved: dense call i at
    /// (i + 0.5) / calls of the way, routed call j at (j + 0.5) / calls (ties: dense first).
    public static func compare(name: String, model: String, dense: RoutedSampler, routed: RoutedSampler, height: Int, width: Int,
                               tokens: Int, experts: Int, keptMACFraction: Double, settings: Settings, logCalls: Bool = false,
                               log: (String) -> Void = { _ in }) throws -> Comparison {
        let d = dense.unet.config.crossAttentionDim
        var rng = SeededGenerator(seed: 77)
        let ctx = Tensor(shape: [1, tokens, d], values: rng.normals(tokens * d))
        let uncond = Tensor(shape: [tokens, d], values: rng.normals(tokens * d))
        func options(_ kind: SchedulerKind) -> RoutedSampler.Options {
            var o = RoutedSampler.Options(scheduler: kind)
            o.guidance = settings.guidance
            o.seed = 1
            o.latentHeight = height
            o.latentWidth = width
            return o
        }
        let loadStart = Measurement.loadAverage()

        // Warm-up: one call of the dense model and one per expert (weight transforms are cached per layer).
        log("\(name): warm-up")
        let sample = RoutedSampler.noise(seed: 3, shape: [2, dense.unet.config.inChannels, height, width])
        let ctx2 = Sampler.concatBatch(ctx, ctx)
        _ = dense.unet.forward(sample: sample, timesteps: [500, 500], context: ctx2)
        var seen = Set<Int>()
        for t in 0..<1000 {
            let r = try routed.route(forSamplerTimestep: Float(t))
            guard let e = r.expert, seen.insert(e).inserted else { continue }
            if routed.unet !== dense.unet {
                var o = UNetForwardOptions()
                o.skip = r.skip
                _ = routed.unet.forward(sample: sample, timesteps: [Float(t), Float(t)], context: ctx2, options: o)
            }
        }

        let denseKind = settings.denseSchedule, routedKind = settings.routedSchedule
        let partial = settings.denseCalls > 0 && settings.denseCalls < denseKind.modelCalls
        let timedKind = partial ? try SchedulerKind(denseKind.method, steps: settings.denseCalls) : denseKind
        var denseResults: [Sampler.Result] = [], routedResults: [Sampler.Result] = []
        var denseCPU: [[Double]] = [], routedCPU: [[Double]] = []
        let repeats = max(settings.repeats, 1)
        for r in 0..<repeats {
            var sessions = [try dense.session(context: ctx, uncond: uncond, options: options(timedKind)),
                            try routed.session(context: ctx, uncond: uncond, options: options(routedKind))]
            let labels = ["dense", "routed"]
            log("\(name): dense \(timedKind)\(partial ? " (timing \(settings.denseCalls) of \(denseKind.modelCalls) calls)" : "") and routed \(routedKind), "
                + "calls interleaved\(repeats > 1 ? " (\(r + 1)/\(repeats))" : "")")
            var cpu: [[Double]] = [[], []]
            for k in interleavedOrder(sessions.map(\.callCount)) {
                let before = Measurement.cpuSeconds()
                let call = try sessions[k].step()
                cpu[k].append(Measurement.cpuSeconds() - before)
                if logCalls {
                    log(String(format: "%@: %@ call %d/%d (t=%g%@): %.2f s wall, %.2f s CPU", name, labels[k], call.index + 1, sessions[k].callCount,
                           call.timestep, call.expert.map { ", expert \($0)" } ?? "", call.seconds, cpu[k][cpu[k].count - 1]))
                }
            }
            denseResults.append(sessions[0].result)
            routedResults.append(sessions[1].result)
            denseCPU.append(cpu[0])
            routedCPU.append(cpu[1])
        }
        let median = Measurement.median
        let denseSeconds = denseResults.flatMap { $0.calls.map(\.seconds) }
        let denseMedian = median(denseSeconds)
        let denseMACs = denseResults[0].denseMACsPerSample * 2 * denseKind.modelCalls
        let denseRun = Run(schedule: denseKind.description, calls: denseKind.modelCalls, timedCalls: denseSeconds.count,
                           totalSeconds: partial ? denseMedian * Double(denseKind.modelCalls) : median(denseResults.map(\.seconds)),
                           runTotals: denseResults.map(\.seconds), medianCallSeconds: denseMedian, extrapolated: partial, macs: denseMACs,
                           callSeconds: denseSeconds, callCPUSeconds: denseCPU.flatMap { $0 },
                           totalCPUSeconds: partial ? median(denseCPU.flatMap { $0 }) * Double(denseKind.modelCalls)
                               : median(denseCPU.map { $0.reduce(0, +) }),
                           experts: denseResults[0].experts)
        let routedResult = routedResults[0]
        let routedCalls = routedResults.flatMap(\.calls)
        let routedRun = Run(schedule: routedKind.description, calls: routedResult.calls.count, timedCalls: routedCalls.count,
                            totalSeconds: median(routedResults.map(\.seconds)), runTotals: routedResults.map(\.seconds),
                            medianCallSeconds: median(routedCalls.map(\.seconds)), extrapolated: false,
                            macs: routedResult.macs, callSeconds: routedCalls.map(\.seconds), callCPUSeconds: routedCPU.flatMap { $0 },
                            totalCPUSeconds: median(routedCPU.map { $0.reduce(0, +) }), experts: routedResult.experts)

        var rows: [ExpertRow] = []
        let routedCPUFlat = routedCPU.flatMap { $0 }
        let denseCPUMedian = median(denseCPU.flatMap { $0 })
        var byExpert: [Int: [Int]] = [:]
        for (i, c) in routedCalls.enumerated() { if let e = c.expert { byExpert[e, default: []].append(i) } }
        for e in byExpert.keys.sorted() {
            let indices = byExpert[e] ?? []
            let calls = indices.map { routedCalls[$0] }
            let macShare = Double(calls[0].macsPerSample) / Double(routedResult.denseMACsPerSample)
            let timeShare = median(calls.map(\.seconds)) / denseMedian
            rows.append(ExpertRow(expert: e, calls: calls.count, skippedUnitCount: calls[0].skippedUnits, keptMACFraction: macShare,
                                  timeShare: timeShare, deviation: timeShare / macShare - 1,
                                  cpuShare: median(indices.map { routedCPUFlat[$0] }) / denseCPUMedian))
        }
        let macRatio = Double(routedRun.macs) / Double(denseMACs)
        return Comparison(name: name, model: model, latent: [height, width], contextLength: tokens, unetBatch: 2, experts: experts,
                          repeats: repeats, keptMACFraction: keptMACFraction, dense: denseRun, routed: routedRun,
                          speedup: denseRun.totalSeconds / routedRun.totalSeconds, cpuSpeedup: denseRun.totalCPUSeconds / routedRun.totalCPUSeconds,
                          runKeptMACFraction: macRatio, speedupPredictedByMACs: 1 / macRatio, perExpert: rows,
                          loadAverage: loadStart + Measurement.loadAverage())
    }

    /// The order in which to make the calls of runs with `callCounts` calls so that they are spread
    /// evenly over the same span of time: call i of run k sits at (i + 0.5) / callCounts[k]; ties go
    /// to the lower run index. Returns the run index of each call in turn.
    public static func interleavedOrder(_ callCounts: [Int]) -> [Int] {
        var slots: [(run: Int, position: Double)] = []
        for (k, n) in callCounts.enumerated() {
            for i in 0..<n { slots.append((k, (Double(i) + 0.5) / Double(n))) }
        }
        slots.sort { a, b in a.position != b.position ? a.position < b.position : a.run < b.run }
        return slots.map(\.run)
    }

    /// Each expert of `decisions` (at a timestep it serves: the median one) timed right beside a
    /// dense call of `unet` at UNet batch 2, in `rounds` rounds (the order within a pair alternates
    /// by round): the ratio of each pair is robust to drifts in machine speed slower than a pair.
    /// Throws when the latent size or context length is out of bounds (`LatentSize`).
    public static func pairs(unet: UNet, decisions: ExpertDecisions, latent: Int, tokens: Int, rounds: Int,
                             log: (String) -> Void = { _ in }) throws(SizeError) -> Pairs {
        let cfg = unet.config
        let cost = try CostModel(config: cfg, latentHeight: latent, latentWidth: latent, contextLength: tokens)
        let budget = UnitBudget(cost: cost)
        var rng = SeededGenerator(seed: 77)
        let sample = Tensor(shape: [2, cfg.inChannels, latent, latent], values: rng.normals(2 * cfg.inChannels * latent * latent))
        let ctx = Tensor(shape: [2, tokens, cfg.crossAttentionDim], values: rng.normals(2 * tokens * cfg.crossAttentionDim))
        let loadStart = Measurement.loadAverage()
        func call(_ skip: Set<String>, _ t: Float) -> (wall: Double, cpu: Double) {
            var o = UNetForwardOptions()
            o.skip = skip
            let c0 = Measurement.cpuSeconds(), w0 = Measurement.now()
            _ = unet.forward(sample: sample, timesteps: [t, t], context: ctx, options: o)
            return (Measurement.now() - w0, Measurement.cpuSeconds() - c0)
        }
        log("pairs: warm-up")
        _ = call([], 500)
        let skips = decisions.skipSets
        let timesteps = (0..<decisions.experts).map { e in
            Int(Measurement.median(decisions.route.indices.filter { decisions.route[$0] == e }.map(Double.init)))
        }
        var ratios = Array(repeating: [(Double, Double)](), count: decisions.experts), dense: [Double] = []
        for r in 0..<rounds {
            for e in 0..<decisions.experts {
                let t = Float(timesteps[e])
                let (d, x) = r % 2 == 0 ? (call([], t), call(skips[e], t)) : { let x = call(skips[e], t); return (call([], t), x) }()
                dense.append(d.wall)
                ratios[e].append((x.wall / d.wall, x.cpu / d.cpu))
                log(String(format: "pairs: round %d expert %d (t=%d): dense %.2f s (CPU %.2f s), expert %.2f s (CPU %.2f s): ratio %.3f, kept MAC fraction %.3f",
                           r + 1, e, timesteps[e], d.wall, d.cpu, x.wall, x.cpu, x.wall / d.wall, budget.keptFraction(expert: decisions.kept[e])))
            }
        }
        let rows = (0..<decisions.experts).map { e in
            PairRow(expert: e, timestep: timesteps[e], skippedUnitCount: skips[e].count,
                    keptMACFraction: budget.keptFraction(expert: decisions.kept[e]),
                    timeRatios: ratios[e].map(\.0), cpuRatios: ratios[e].map(\.1),
                    medianTimeRatio: Measurement.median(ratios[e].map(\.0)), medianCPURatio: Measurement.median(ratios[e].map(\.1)))
        }
        return Pairs(latent: latent, contextLength: tokens, rounds: rounds, denseSeconds: dense, rows: rows,
                     loadAverage: loadStart + Measurement.loadAverage())
    }
}

/// The example files shipped in `examples/`, relative to the package root.
public enum ExampleFiles {
    public static let model = "examples/sd21-tiny.safetensors"
    public static let config = "examples/sd21-tiny.config.json"
    public static let data = "examples/sd21-tiny-data.safetensors"
    public static let inputs = "examples/sd21-tiny-inputs.safetensors"
}
