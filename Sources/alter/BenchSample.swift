import ALTER
import ALTERBench
import ArgumentParser
import ExpertBundle
import Experts
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

    enum PartName: String, ExpressibleByArgument, CaseIterable {
        case example, full, fullExperts = "full-experts"
    }

    @Option(help: "Comma-separated parts: example, full, full-experts.")
    var parts = CommaList<PartName>([.example, .full])

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
    var denseSchedule = SchedulerKind.ddim50

    @Option(help: "The routed run.")
    var routedSchedule = SchedulerKind.pndm20

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

    func log(_ s: String) { if !json { printError(s) } }

    struct Report: Encodable {
        var threads: Int
        var blasCore: String
        var comparisons: [SamplingBenchmark.Comparison]
        var expertPairs: SamplingBenchmark.Pairs?
        var peakResidentMB: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case threads, blasCore = "blas_core", comparisons, expertPairs = "expert_pairs", peakResidentMB = "peak_resident_mb"
        }
    }

    func validate() throws {
        guard experts >= 1, keep > 0, keep <= 1, latent > 0, context > 0, repeats >= 1, rounds >= 1, denseCalls >= 0 else {
            throw ValidationError("--experts, --latent, --context, --repeats and --rounds must be positive, --keep in (0, 1], --dense-calls >= 0")
        }
        try ArgumentBounds.latent(latent, flag: "--latent")
        try ArgumentBounds.context(context, flag: "--context")
        try ArgumentBounds.check(experts, in: Bounds.experts, flag: "--experts")
    }

    func run() throws {
        var settings = SamplingBenchmark.Settings(denseSchedule: denseSchedule, routedSchedule: routedSchedule)
        settings.guidance = guidance
        var comparisons: [SamplingBenchmark.Comparison] = [], pairs: SamplingBenchmark.Pairs?
        do {
            for part in parts.values {
                switch part {
                case .example:
                    settings.repeats = repeats
                    settings.denseCalls = 0
                    let c = try example(settings)
                    comparisons.append(c)
                    if !json { print(Self.describe(c)) }
                case .full:
                    settings.repeats = 1
                    settings.denseCalls = denseCalls
                    let c = try full(settings)
                    comparisons.append(c)
                    if !json { print(Self.describe(c)) }
                case .fullExperts:
                    log("full-experts: building a full-size SD2.1 UNet at random init")
                    let unet = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
                    let cost = try CostModel(config: unet.config, latentHeight: latent, latentWidth: latent, contextLength: context)
                    let decisions = ExpertDecisions.synthetic(cost: cost, experts: experts, keep: keep, spread: spread)
                    let p = try SamplingBenchmark.pairs(unet: unet, decisions: decisions, latent: latent, tokens: context, rounds: rounds, log: log)
                    pairs = p
                    if !json { print(Self.describe(p)) }
                }
            }
        } catch let e as ValidationError { throw e } catch let e as CommandFailure { throw e } catch { throw CommandFailure("\(error)") }
        let report = Report(threads: Parallel.workers, blasCore: BLASCoreSelection.current, comparisons: comparisons, expertPairs: pairs,
                            peakResidentMB: Measurement.peakResidentMB())
        if json { try writeJSON(report) } else {
            print("\(report.threads) threads; OpenBLAS kernels: \(report.blasCore); peak resident memory: \(grouped(report.peakResidentMB)) MB")
        }
    }

    // MARK: parts

    func example(_ settings: SamplingBenchmark.Settings) throws -> SamplingBenchmark.Comparison {
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
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            log("example: training \(exampleSteps) steps (\(experts) experts, keep \(keep)) in \(dir)")
            let t0 = Date()
            (b, denseUNet) = try SamplingBenchmark.trainExampleBundle(in: dir, steps: exampleSteps, experts: experts, keep: keep)
            log(String(format: "example: trained and exported in %.1f s", Date().timeIntervalSince(t0)))
            label = "example bundle from a \(exampleSteps)-step run (dense: the run's final UNet)"
        }
        let routed = try RoutedSampler(bundle: b)
        let denseSampler = RoutedSampler(unet: denseUNet, schedulerConfig: routed.schedulerConfig)
        let m = b.manifest.macs
        return try SamplingBenchmark.compare(name: "example", model: label, dense: denseSampler, routed: routed, height: m.latentHeight,
                                             width: m.latentWidth, tokens: m.contextLength, experts: b.experts.count,
                                             keptMACFraction: m.keptFraction, settings: settings, log: log)
    }

    func full(_ settings: SamplingBenchmark.Settings) throws -> SamplingBenchmark.Comparison {
        log("full: building a full-size SD2.1 UNet at random init")
        let unet = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
        let cost = try CostModel(config: unet.config, latentHeight: latent, latentWidth: latent, contextLength: context)
        let decisions = ExpertDecisions.synthetic(cost: cost, experts: experts, keep: keep, spread: spread)
        let config = SchedulerConfig.sd21
        let routed = try RoutedSampler(unet: unet, decisions: decisions, schedulerConfig: config)
        let denseSampler = RoutedSampler(unet: unet, schedulerConfig: config)
        return try SamplingBenchmark.compare(
            name: "full", model: "SD2.1 UNet, random init (seed 21), \(experts) synthetic experts (keep \(keep) +- \(spread))",
            dense: denseSampler, routed: routed, height: latent, width: latent, tokens: context, experts: experts,
            keptMACFraction: UnitBudget(cost: cost).keptFraction(decisions), settings: settings, logCalls: true, log: log)
    }

    static func describe(_ p: SamplingBenchmark.Pairs) -> String {
        var lines = ["== full-experts: each synthetic expert's UNet call (batch 2) paired with a dense call, \(p.rounds) rounds; \(p.latent)x\(p.latent) latent, \(p.contextLength) tokens"]
        lines.append("   dense calls: " + p.denseSeconds.map { String(format: "%.2f", $0) }.joined(separator: " ") + " s")
        lines.append("   expert  t    skipped  MAC share  time ratio (median; per round)        time/MAC - 1  CPU ratio  CPU/MAC - 1")
        for r in p.rows {
            lines.append(String(format: "   %6d  %3d  %7d  %9.3f  %6.3f (%@)  %+11.1f%%  %9.3f  %+10.1f%%", r.expert, r.timestep, r.skippedUnitCount,
                                r.keptMACFraction, r.medianTimeRatio, r.timeRatios.map { String(format: "%.3f", $0) }.joined(separator: " "),
                                (r.medianTimeRatio / r.keptMACFraction - 1) * 100, r.medianCPURatio, (r.medianCPURatio / r.keptMACFraction - 1) * 100))
        }
        lines.append("   1-minute load average before / after: " + p.loadAverage.map { String(format: "%.2f", $0) }.joined(separator: " / "))
        return lines.joined(separator: "\n")
    }

    static func describe(_ p: SamplingBenchmark.Comparison) -> String {
        func secs(_ x: Double) -> String { x >= 1 ? String(format: "%.1f s", x) : String(format: "%.1f ms", x * 1000) }
        var lines = ["== \(p.name): \(p.model)"]
        lines.append(String(format: "   %dx%d latent, %d tokens, UNet batch %d (guidance); %d experts, kept %.3f of dense MACs over the training timesteps",
                            p.latent[0], p.latent[1], p.contextLength, p.unetBatch, p.experts, p.keptMACFraction))
        let dense = p.dense.extrapolated
            ? "\(p.dense.calls) x median of \(p.dense.timedCalls) timed calls"
            : p.repeats > 1 ? "measured in full, median of \(p.repeats) runs" : "measured in full"
        let routed = p.repeats > 1 ? "measured in full, median of \(p.repeats) runs" : "measured in full"
        lines.append("   dense and routed UNet calls interleaved over the same span of time")
        lines.append("   dense  \(p.dense.schedule): \(p.dense.calls) calls, \(secs(p.dense.totalSeconds)) (\(dense); median call \(secs(p.dense.medianCallSeconds)))")
        lines.append("   routed \(p.routed.schedule): \(p.routed.calls) calls, \(secs(p.routed.totalSeconds)) (\(routed); median call \(secs(p.routed.medianCallSeconds))); experts "
                     + p.routed.experts.map { $0.map(String.init) ?? "-" }.joined(separator: ","))
        lines.append(String(format: "   speedup %.2fx measured; MAC ratio %.4f (routed / dense MACs), %.2fx predicted by MACs; measured / predicted %.3f",
                            p.speedup, p.runKeptMACFraction, p.speedupPredictedByMACs, p.speedup / p.speedupPredictedByMACs))
        lines.append(String(format: "   CPU time (user + system): dense %@, routed %@, speedup %.2fx",
                            secs(p.dense.totalCPUSeconds), secs(p.routed.totalCPUSeconds), p.cpuSpeedup))
        lines.append("   expert  calls  skipped  MAC share  time share  time/MAC - 1  CPU share  CPU/MAC - 1")
        for r in p.perExpert {
            lines.append(String(format: "   %6d  %5d  %7d  %9.3f  %10.3f  %+11.1f%%  %9.3f  %+10.1f%%", r.expert, r.calls, r.skippedUnitCount, r.keptMACFraction,
                                r.timeShare, r.deviation * 100, r.cpuShare, (r.cpuShare / r.keptMACFraction - 1) * 100))
        }
        lines.append("   1-minute load average before / after: " + p.loadAverage.map { String(format: "%.2f", $0) }.joined(separator: " / "))
        return lines.joined(separator: "\n")
    }
}
