import ALTER
import ArgumentParser
import ExpertBundle
import Foundation
import NN
import StableDiffusion
import TensorCore

struct BenchSample: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Time dense sampling against routed expert sampling (alter sample's loop), with MAC ratios beside the times.",
        discussion: """
            Two parts (--parts):

            example: a bundle of the example (examples/sd21-tiny*, run from the package root): a short ALTER \
            run (--example-steps, --experts, --keep) is trained into a temporary directory and exported, and \
            the run's final UNet is the dense model. With --bundle PATH, that bundle instead, with --dense \
            MODEL as the dense model (default: random weights of the bundle's architecture: the time of a \
            forward does not depend on the weights).

            full: a full-size SD2.1 UNet (865,910,724 parameters) at deterministic random init, with synthetic \
            experts (RoutedSampler.syntheticDecisions): --experts experts over equal timestep intervals whose kept \
            fractions of the dense MACs rise linearly from keep - spread to keep + spread (mean over the training \
            timesteps about --keep), each skipping seeded random units; the routed run uses that UNet with each \
            expert's skip set, which is what a bundle expert computes. Needs about 5 GB; a UNet call at batch 2 \
            takes about 10 s on 2 cores, so the whole part takes about 12 minutes (--dense-calls shortens it).

            full-experts: the same full-size UNet and synthetic experts; each expert's UNet call (batch 2, at a \
            timestep it serves) is timed right beside a dense call, --rounds times (the order within a pair \
            alternates by round), and the median ratio is set against the expert's MAC share: pairs a few \
            seconds apart are robust to drifts in the machine's speed. About 3 minutes per round on 2 cores.

            example and full sample one prompt with classifier-free guidance (UNet batch 2; random context and uncond) \
            at the same latent size: dense --dense-schedule (default ddim:50) against routed --routed-schedule \
            (default pndm:20, 21 UNet calls). After a warm-up call per expert (weight transforms are cached per \
            layer), both runs are timed in full with their UNet calls interleaved evenly over the same span of \
            time (dense call i at (i + 0.5) / 50 of the way, routed call j at (j + 0.5) / 21), so that drifts in \
            the machine's speed hit both alike; each call's time covers its own step only. The example part \
            does this --repeats times (totals: medians); the full part once. With --dense-calls N (full part), \
            N dense calls are timed (interleaved likewise) and the dense total is stated as calls x their \
            median. Reported: total \
            seconds of each, the measured speedup, the MAC ratio (routed MACs / dense MACs over the whole runs) \
            and the speedup it predicts, and per expert: its median call time over the dense median against its \
            MAC share of a dense call.
            """)

    @Option(help: "Comma-separated parts: example, full, full-experts.")
    var parts = "example,full"

    @Option(help: "example: a bundle to time instead of training and exporting one.")
    var bundle: String?

    @Option(help: "example with --bundle: the dense model (a checkpoint; --config applies).")
    var dense: String?

    @Option(help: "example: training steps of the short run (30% with the hypernetwork).")
    var exampleSteps = 300

    @Option(help: "Experts (example run and synthetic full-size experts).")
    var experts = 4

    @Option(help: "Target kept fraction of the dense MACs (example run and synthetic experts).")
    var keep = 0.65

    @Option(help: "full: kept fractions of the synthetic experts spread over keep +- spread.")
    var spread = 0.1

    @Option(help: "full: latent size (height = width).")
    var latent = 64

    @Option(help: "full: context tokens.")
    var context = 77

    @Option(help: "The dense run.")
    var denseSchedule = "ddim:50"

    @Option(help: "The routed run.")
    var routedSchedule = "pndm:20"

    @Option(help: "full: time only this many dense calls and state the dense total as calls x their median (0: the whole run).")
    var denseCalls = 0

    @Option(help: "example: interleaved dense and routed runs this many times (totals: their medians). full: always 1.")
    var repeats = 5

    @Option(help: "full-experts: rounds of (dense call, expert call) pairs per expert.")
    var rounds = 3

    @Option(help: "Guidance scale.")
    var guidance: Float = 7.5

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var modelOptions: ModelOptions

    static let exampleModel = "examples/sd21-tiny.safetensors"
    static let exampleConfig = "examples/sd21-tiny.config.json"
    static let exampleData = "examples/sd21-tiny-data.safetensors"

    struct Run: Encodable {
        var schedule: String
        var calls: Int
        /// Calls timed over all repeats (fewer than calls x repeats for an extrapolated dense run).
        var timedCalls: Int
        /// The total of the run (the median over repeats; extrapolated: calls x median call).
        var totalSeconds: Double
        /// Each repeat's total (of the calls timed).
        var runTotals: [Double]
        var medianCallSeconds: Double
        var extrapolated: Bool
        var macs: Int
        var callSeconds: [Double]
        /// Process CPU time (user + system, both threads) of each timed call.
        var callCPUSeconds: [Double]
        /// Like totalSeconds, in CPU time.
        var totalCPUSeconds: Double
        var experts: [Int?]
    }

    struct ExpertRow: Encodable {
        var expert: Int
        var calls: Int
        var skippedUnits: Int
        /// MACs of one call of this expert / one dense call.
        var macShare: Double
        /// Median seconds of its calls / median seconds of a dense call.
        var timeShare: Double
        /// timeShare / macShare - 1.
        var deviation: Double
        /// Median CPU seconds of its calls / median CPU seconds of a dense call.
        var cpuShare: Double
    }

    struct Part: Encodable {
        var name: String
        var model: String
        var latent: [Int]
        var contextTokens: Int
        var unetBatch: Int
        var experts: Int
        var repeats: Int
        var keptFractionOverTrainTimesteps: Double
        var dense: Run
        var routed: Run
        var speedup: Double
        /// dense / routed total CPU time.
        var cpuSpeedup: Double
        var macRatio: Double
        var speedupPredictedByMACs: Double
        var perExpert: [ExpertRow]
        var loadAverage: [Double]
    }

    struct Report: Encodable {
        var threads: Int
        var blasCore: String
        var parts: [Part]
        var expertPairs: PairsReport?
        var peakResidentMB: Int
    }

    struct PairRow: Encodable {
        var expert: Int
        var timestep: Int
        var skippedUnits: Int
        var macShare: Double
        /// Expert call time / the paired dense call's time, per round.
        var timeRatios: [Double]
        var cpuRatios: [Double]
        var medianTimeRatio: Double
        var medianCPURatio: Double
    }

    struct PairsReport: Encodable {
        var latent: Int
        var contextTokens: Int
        var rounds: Int
        var denseSeconds: [Double]
        var rows: [PairRow]
        var loadAverage: [Double]
    }

    func log(_ s: String) { if !json { printError(s) } }

    func run() throws {
        let names = parts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, names.allSatisfy({ ["example", "full", "full-experts"].contains($0) }) else {
            throw ValidationError("--parts: example, full, full-experts")
        }
        let denseKind: SchedulerKind, routedKind: SchedulerKind
        do {
            denseKind = try SchedulerKind(parsing: denseSchedule)
            routedKind = try SchedulerKind(parsing: routedSchedule)
        } catch { throw ValidationError("\(error)") }
        var reports: [Part] = [], pairs: PairsReport?
        do {
            for name in names {
                if name == "full-experts" {
                    let p = try fullExperts()
                    pairs = p
                    if !json { print(Self.describe(p)) }
                    continue
                }
                let part = name == "example" ? try example(denseKind, routedKind) : try full(denseKind, routedKind)
                reports.append(part)
                if !json { print(Self.describe(part)) }
            }
        } catch let e as ValidationError { throw e } catch let e as CommandFailure { throw e } catch { throw CommandFailure("\(error)") }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let report = Report(threads: Parallel.workers, blasCore: BLASCoreSelection.current, parts: reports, expertPairs: pairs,
                            peakResidentMB: Int(usage.ru_maxrss) / 1024)
        if json { try writeJSON(report) } else {
            print("\(report.threads) threads; OpenBLAS kernels: \(report.blasCore); peak resident memory: \(grouped(report.peakResidentMB)) MB")
        }
    }

    // MARK: parts

    func example(_ denseKind: SchedulerKind, _ routedKind: SchedulerKind) throws -> Part {
        let b: ExpertBundle, denseUNet: UNet, label: String
        var scratch: String?
        defer { if let scratch { try? FileManager.default.removeItem(atPath: scratch) } }
        if let bundle {
            b = try ExpertBundle(path: bundle)
            if let dense {
                denseUNet = try UNet(checkpoint: UNetCheckpoint(path: dense, options: modelOptions.loadOptions))
                label = "\(bundle) (dense: \(dense))"
            } else {
                denseUNet = try UNet(config: b.config, parameters: RandomParameters(seed: 21))
                label = "\(bundle) (dense: random weights of its architecture)"
            }
        } else {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-bench-sample-\(getpid())").path
            scratch = dir
            try? FileManager.default.removeItem(atPath: dir)
            let model = Self.exampleModel, data = Self.exampleData
            var config = CompressionConfig(model: model, data: data, steps: exampleSteps, hypernetSteps: exampleSteps * 3 / 10)
            config.configPath = Self.exampleConfig
            config.settings.experts = experts
            config.settings.keep = keep
            config.settings.learningRateUNet = 1e-4
            config.settings.learningRateHypernet = 1e-2
            config.settings.warmupSteps = min(250, max(exampleSteps / 10, 1))
            config.batch = 2
            config.seed = 1
            var o = LoadOptions()
            o.configPath = config.configPath
            let ckpt = try UNetCheckpoint(path: model, options: o)
            let trainer = try ALTERTrainer(config: config, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                           data: try TrainingData(contentsOf: URL(fileURLWithPath: data)))
            let run = RunDirectory(path: dir + "/run")
            try run.create(config: config)
            log("example: training \(exampleSteps) steps (\(experts) experts, keep \(keep)) in \(dir)")
            let t0 = Date()
            guard try trainer.run(in: run) == .finished else { throw CommandFailure("the example run did not finish") }
            try BundleExporter.export(run: run, to: dir + "/example.alter")
            log(String(format: "example: trained and exported in %.1f s", Date().timeIntervalSince(t0)))
            b = try ExpertBundle(path: dir + "/example.alter")
            denseUNet = try UNet(checkpoint: UNetCheckpoint(path: run.finalPath + "/unet"))
            label = "example bundle from a \(exampleSteps)-step run (dense: the run's final UNet)"
        }
        let routed = try RoutedSampler(bundle: b)
        let denseSampler = RoutedSampler(unet: denseUNet, schedulerConfig: routed.schedulerConfig)
        let m = b.manifest.macs
        return try compare(name: "example", model: label, dense: denseSampler, routed: routed, height: m.latentHeight, width: m.latentWidth,
                           tokens: m.contextLength, experts: b.experts.count, keptFraction: m.keptFraction,
                           denseKind: denseKind, routedKind: routedKind, denseCalls: 0, repeats: max(repeats, 1))
    }

    func full(_ denseKind: SchedulerKind, _ routedKind: SchedulerKind) throws -> Part {
        log("full: building a full-size SD2.1 UNet at random init")
        let unet = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
        let cost = CostModel(config: unet.config, latentHeight: latent, latentWidth: latent, contextLength: context)
        let decisions = RoutedSampler.syntheticDecisions(cost: cost, experts: experts, keep: keep, spread: spread)
        let config = SchedulerConfig.sd21
        let routed = try RoutedSampler(unet: unet, decisions: decisions, schedulerConfig: config)
        let denseSampler = RoutedSampler(unet: unet, schedulerConfig: config)
        return try compare(name: "full", model: "SD2.1 UNet, random init (seed 21), \(experts) synthetic experts (keep \(keep) +- \(spread))",
                           dense: denseSampler, routed: routed, height: latent, width: latent, tokens: context, experts: experts,
                           keptFraction: UnitBudget(cost: cost).keptFraction(decisions), denseKind: denseKind, routedKind: routedKind,
                           denseCalls: denseCalls, repeats: 1)
    }

    /// Each synthetic full-size expert's UNet call (batch 2) timed right beside a dense call, in
    /// `rounds` rounds (the order within a pair alternates by round): the ratio of each pair is
    /// robust to drifts in machine speed slower than a pair.
    func fullExperts() throws -> PairsReport {
        log("full-experts: building a full-size SD2.1 UNet at random init")
        let unet = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
        let cfg = unet.config
        let cost = CostModel(config: cfg, latentHeight: latent, latentWidth: latent, contextLength: context)
        let decisions = RoutedSampler.syntheticDecisions(cost: cost, experts: experts, keep: keep, spread: spread)
        let budget = UnitBudget(cost: cost)
        var rng = SeededGenerator(seed: 77)
        let sample = Tensor(shape: [2, cfg.inChannels, latent, latent], values: rng.normals(2 * cfg.inChannels * latent * latent))
        let ctx = Tensor(shape: [2, context, cfg.crossAttentionDim], values: rng.normals(2 * context * cfg.crossAttentionDim))
        let loadStart = Self.loadAverage()
        func call(_ skip: Set<String>, _ t: Float) -> (wall: Double, cpu: Double) {
            var o = UNetForwardOptions()
            o.skip = skip
            let c0 = Self.cpuSeconds(), w0 = DispatchTime.now().uptimeNanoseconds
            _ = unet.forward(sample: sample, timesteps: [t, t], context: ctx, options: o)
            return (Double(DispatchTime.now().uptimeNanoseconds - w0) / 1e9, Self.cpuSeconds() - c0)
        }
        log("full-experts: warm-up")
        _ = call([], 500)
        let skips = decisions.kept.map { k in Set(decisions.units.indices.filter { !k[$0] }.map { decisions.units[$0] }) }
        let timesteps = (0..<experts).map { e in Self.median(decisions.route.indices.filter { decisions.route[$0] == e }.map(Double.init)) }.map { Int($0) }
        var ratios = Array(repeating: [(Double, Double)](), count: experts), dense: [Double] = []
        for r in 0..<rounds {
            for e in 0..<experts {
                let t = Float(timesteps[e])
                let (d, x) = r % 2 == 0 ? (call([], t), call(skips[e], t)) : { let x = call(skips[e], t); return (call([], t), x) }()
                dense.append(d.wall)
                ratios[e].append((x.wall / d.wall, x.cpu / d.cpu))
                log(String(format: "full-experts: round %d expert %d (t=%d): dense %.2f s (CPU %.2f s), expert %.2f s (CPU %.2f s): ratio %.3f, MAC share %.3f",
                           r + 1, e, timesteps[e], d.wall, d.cpu, x.wall, x.cpu, x.wall / d.wall, budget.keptFraction(expert: decisions.kept[e])))
            }
        }
        let rows = (0..<experts).map { e in
            PairRow(expert: e, timestep: timesteps[e], skippedUnits: skips[e].count, macShare: budget.keptFraction(expert: decisions.kept[e]),
                    timeRatios: ratios[e].map(\.0), cpuRatios: ratios[e].map(\.1),
                    medianTimeRatio: Self.median(ratios[e].map(\.0)), medianCPURatio: Self.median(ratios[e].map(\.1)))
        }
        return PairsReport(latent: latent, contextTokens: context, rounds: rounds, denseSeconds: dense, rows: rows,
                           loadAverage: loadStart + Self.loadAverage())
    }

    static func describe(_ p: PairsReport) -> String {
        var lines = ["== full-experts: each synthetic expert's UNet call (batch 2) paired with a dense call, \(p.rounds) rounds; \(p.latent)x\(p.latent) latent, \(p.contextTokens) tokens"]
        lines.append("   dense calls: " + p.denseSeconds.map { String(format: "%.2f", $0) }.joined(separator: " ") + " s")
        lines.append("   expert  t    skipped  MAC share  time ratio (median; per round)        time/MAC - 1  CPU ratio  CPU/MAC - 1")
        for r in p.rows {
            lines.append(String(format: "   %6d  %3d  %7d  %9.3f  %6.3f (%@)  %+11.1f%%  %9.3f  %+10.1f%%", r.expert, r.timestep, r.skippedUnits, r.macShare,
                                r.medianTimeRatio, r.timeRatios.map { String(format: "%.3f", $0) }.joined(separator: " "),
                                (r.medianTimeRatio / r.macShare - 1) * 100, r.medianCPURatio, (r.medianCPURatio / r.macShare - 1) * 100))
        }
        lines.append("   1-minute load average before / after: " + p.loadAverage.map { String(format: "%.2f", $0) }.joined(separator: " / "))
        return lines.joined(separator: "\n")
    }

    // MARK: measuring

    func compare(name: String, model: String, dense: RoutedSampler, routed: RoutedSampler, height: Int, width: Int, tokens: Int, experts: Int,
                 keptFraction: Double, denseKind: SchedulerKind, routedKind: SchedulerKind, denseCalls: Int, repeats: Int) throws -> Part {
        let d = dense.unet.config.crossAttentionDim
        var rng = SeededGenerator(seed: 77)
        let ctx = Tensor(shape: [1, tokens, d], values: rng.normals(tokens * d))
        let uncond = Tensor(shape: [tokens, d], values: rng.normals(tokens * d))
        func options(_ kind: SchedulerKind) -> RoutedSampler.Options {
            var o = RoutedSampler.Options(scheduler: kind)
            o.guidance = guidance
            o.seed = 1
            o.latentHeight = height
            o.latentWidth = width
            return o
        }
        let loadStart = Self.loadAverage()

        // Warm-up: one call of the dense model and one per expert (weight transforms are cached per layer).
        log("\(name): warm-up")
        let sample = RoutedSampler.noise(seed: 3, shape: [2, dense.unet.config.inChannels, height, width])
        let ctx2 = Sampler.concatBatch(ctx, ctx)
        _ = dense.unet.forward(sample: sample, timesteps: [500, 500], context: ctx2)
        var seen = Set<Int>()
        for t in stride(from: 0, to: 1000, by: 1) {
            let r = try routed.route(forSamplerTimestep: Float(t))
            guard let e = r.expert, seen.insert(e).inserted else { continue }
            if routed.unet !== dense.unet {
                var o = UNetForwardOptions()
                o.skip = r.skip
                _ = routed.unet.forward(sample: sample, timesteps: [Float(t), Float(t)], context: ctx2, options: o)
            }
        }

        // Dense (in full, or `denseCalls` calls extrapolated) and routed (in full), their calls interleaved
        // evenly over the same span of time (so that drifts in machine speed hit both alike), `repeats` times.
        let partial = denseCalls > 0 && denseCalls < denseKind.modelCalls
        let timedKind = partial ? try SchedulerKind(denseKind.method, steps: denseCalls) : denseKind
        var denseResults: [Sampler.Result] = [], routedResults: [Sampler.Result] = []
        var denseCPU: [[Double]] = [], routedCPU: [[Double]] = []
        for r in 0..<repeats {
            var sessions = [try dense.session(context: ctx, uncond: uncond, options: options(timedKind)),
                            try routed.session(context: ctx, uncond: uncond, options: options(routedKind))]
            let labels = ["dense", "routed"]
            log("\(name): dense \(timedKind)\(partial ? " (timing \(denseCalls) of \(denseKind.modelCalls) calls)" : "") and routed \(routedKind), "
                + "calls interleaved\(repeats > 1 ? " (\(r + 1)/\(repeats))" : "")")
            // Call i of run k at position (i + 0.5) / calls_k; ties: dense first.
            var slots: [(run: Int, position: Double)] = []
            for k in 0..<2 {
                let n = Double(sessions[k].callCount)
                for i in 0..<sessions[k].callCount { slots.append((k, (Double(i) + 0.5) / n)) }
            }
            slots.sort { a, b in a.position != b.position ? a.position < b.position : a.run < b.run }
            let order = slots.map(\.run)
            var cpu: [[Double]] = [[], []]
            for k in order {
                let before = Self.cpuSeconds()
                let call = try sessions[k].step()
                cpu[k].append(Self.cpuSeconds() - before)
                if name == "full" {
                    log(String(format: "%@: %@ call %d/%d (t=%g%@): %.2f s wall, %.2f s CPU", name, labels[k], call.index + 1, sessions[k].callCount,
                               call.timestep, call.expert.map { ", expert \($0)" } ?? "", call.seconds, cpu[k][cpu[k].count - 1]))
                }
            }
            denseResults.append(sessions[0].result)
            routedResults.append(sessions[1].result)
            denseCPU.append(cpu[0])
            routedCPU.append(cpu[1])
        }
        let denseSeconds = denseResults.flatMap { $0.calls.map(\.seconds) }
        let denseMedian = Self.median(denseSeconds)
        let denseMACs = denseResults[0].denseMACsPerSample * 2 * denseKind.modelCalls
        let denseTotal = partial ? denseMedian * Double(denseKind.modelCalls) : Self.median(denseResults.map(\.seconds))
        let denseRun = Run(schedule: denseKind.description, calls: denseKind.modelCalls, timedCalls: denseSeconds.count,
                           totalSeconds: denseTotal, runTotals: denseResults.map(\.seconds),
                           medianCallSeconds: denseMedian, extrapolated: partial, macs: denseMACs, callSeconds: denseSeconds,
                           callCPUSeconds: denseCPU.flatMap { $0 },
                           totalCPUSeconds: partial ? Self.median(denseCPU.flatMap { $0 }) * Double(denseKind.modelCalls) : Self.median(denseCPU.map { $0.reduce(0, +) }),
                           experts: denseResults[0].experts)
        let routedResult = routedResults[0]
        let routedCalls = routedResults.flatMap(\.calls)
        let routedRun = Run(schedule: routedKind.description, calls: routedResult.calls.count, timedCalls: routedCalls.count,
                            totalSeconds: Self.median(routedResults.map(\.seconds)), runTotals: routedResults.map(\.seconds),
                            medianCallSeconds: Self.median(routedCalls.map(\.seconds)), extrapolated: false,
                            macs: routedResult.macs, callSeconds: routedCalls.map(\.seconds), callCPUSeconds: routedCPU.flatMap { $0 },
                            totalCPUSeconds: Self.median(routedCPU.map { $0.reduce(0, +) }), experts: routedResult.experts)

        var rows: [ExpertRow] = []
        let routedCPUFlat = routedCPU.flatMap { $0 }
        let denseCPUMedian = Self.median(denseCPU.flatMap { $0 })
        let byExpert = Dictionary(grouping: routedCalls.indices.filter { routedCalls[$0].expert != nil }, by: { routedCalls[$0].expert! })
        for e in byExpert.keys.sorted() {
            let calls = byExpert[e]!.map { routedCalls[$0] }
            let cpuShare = Self.median(byExpert[e]!.map { routedCPUFlat[$0] }) / denseCPUMedian
            let macShare = Double(calls[0].macsPerSample) / Double(routedResult.denseMACsPerSample)
            let timeShare = Self.median(calls.map(\.seconds)) / denseMedian
            rows.append(ExpertRow(expert: e, calls: calls.count, skippedUnits: calls[0].skippedUnits, macShare: macShare, timeShare: timeShare,
                                  deviation: timeShare / macShare - 1, cpuShare: cpuShare))
        }
        let macRatio = Double(routedRun.macs) / Double(denseMACs)
        return Part(name: name, model: model, latent: [height, width], contextTokens: tokens, unetBatch: 2, experts: experts, repeats: repeats,
                    keptFractionOverTrainTimesteps: keptFraction, dense: denseRun, routed: routedRun,
                    speedup: denseRun.totalSeconds / routedRun.totalSeconds, cpuSpeedup: denseRun.totalCPUSeconds / routedRun.totalCPUSeconds, macRatio: macRatio, speedupPredictedByMACs: 1 / macRatio,
                    perExpert: rows, loadAverage: loadStart + Self.loadAverage())
    }

    static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// User + system CPU seconds of this process so far.
    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    /// The 1-minute load average (getloadavg).
    static func loadAverage() -> [Double] {
        var l = [Double](repeating: 0, count: 1)
        return getloadavg(&l, 1) == 1 ? l : []
    }

    static func describe(_ p: Part) -> String {
        func secs(_ x: Double) -> String { x >= 1 ? String(format: "%.1f s", x) : String(format: "%.1f ms", x * 1000) }
        var lines = ["== \(p.name): \(p.model)"]
        lines.append(String(format: "   %dx%d latent, %d tokens, UNet batch %d (guidance); %d experts, kept %.3f of dense MACs over the training timesteps",
                            p.latent[0], p.latent[1], p.contextTokens, p.unetBatch, p.experts, p.keptFractionOverTrainTimesteps))
        let dense = p.dense.extrapolated
            ? "\(p.dense.calls) x median of \(p.dense.timedCalls) timed calls"
            : p.repeats > 1 ? "measured in full, median of \(p.repeats) runs" : "measured in full"
        let routed = p.repeats > 1 ? "measured in full, median of \(p.repeats) runs" : "measured in full"
        lines.append("   dense and routed UNet calls interleaved over the same span of time")
        lines.append("   dense  \(p.dense.schedule): \(p.dense.calls) calls, \(secs(p.dense.totalSeconds)) (\(dense); median call \(secs(p.dense.medianCallSeconds)))")
        lines.append("   routed \(p.routed.schedule): \(p.routed.calls) calls, \(secs(p.routed.totalSeconds)) (\(routed); median call \(secs(p.routed.medianCallSeconds))); experts "
                     + p.routed.experts.map { $0.map(String.init) ?? "-" }.joined(separator: ","))
        lines.append(String(format: "   speedup %.2fx measured; MAC ratio %.4f (routed / dense MACs), %.2fx predicted by MACs; measured / predicted %.3f",
                            p.speedup, p.macRatio, p.speedupPredictedByMACs, p.speedup / p.speedupPredictedByMACs))
        lines.append(String(format: "   CPU time (user + system): dense %@, routed %@, speedup %.2fx",
                            secs(p.dense.totalCPUSeconds), secs(p.routed.totalCPUSeconds), p.cpuSpeedup))
        lines.append("   expert  calls  skipped  MAC share  time share  time/MAC - 1  CPU share  CPU/MAC - 1")
        for r in p.perExpert {
            lines.append(String(format: "   %6d  %5d  %7d  %9.3f  %10.3f  %+11.1f%%  %9.3f  %+10.1f%%", r.expert, r.calls, r.skippedUnits, r.macShare,
                                r.timeShare, r.deviation * 100, r.cpuShare, (r.cpuShare / r.macShare - 1) * 100))
        }
        lines.append("   1-minute load average before / after: " + p.loadAverage.map { String(format: "%.2f", $0) }.joined(separator: " / "))
        return lines.joined(separator: "\n")
    }
}
