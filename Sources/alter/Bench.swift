import ALTERBench
import ArgumentParser
import Foundation
import NN
import StableDiffusion
import TensorCore

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure alter's speed and memory (build with `swift build -c release`).",
        subcommands: [BenchForward.self, BenchTrain.self, BenchKernels.self, BenchSample.self, BenchRouting.self,
                       BenchComponents.self])
}

struct BenchForward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Time UNet forward passes: seconds, GFLOP/s (2 x counted MACs), peak resident memory.",
        discussion: """
            Without --model, a full-size SD2.1 UNet (865,910,724 parameters) at deterministic random init. \
            With --skip-fraction, each batch size is also timed with a hard skip set (the largest units first, \
            each taken while the skipped MACs stay within that fraction of the unit MACs); dense and skip runs \
            alternate so that drifts in the machine's speed hit both alike.
            """)

    @Option(help: "A checkpoint to time instead of random SD2.1 weights.")
    var model: String?

    @Option(help: "Comma-separated batch sizes.")
    var batch = CommaList<Int>([1, 2])

    @Option(help: "Latent size (height = width).")
    var latent = 64

    @Option(help: "Context tokens.")
    var context = 77

    @Option(help: "Timed runs per batch size (after one warm-up).")
    var runs = 3

    @Option(help: "Also time a hard-skip forward with units covering about this fraction of unit MACs skipped (0 = off).")
    var skipFraction = 0.5

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "After the timed runs, run one more forward per setting and print time per kernel.")
    var profile = false

    @OptionGroup var modelOptions: ModelOptions

    func validate() throws {
        guard batch.values.allSatisfy({ $0 > 0 }), runs > 0, latent > 0, context > 0 else {
            throw ValidationError("--batch, --runs, --latent and --context must be positive")
        }
        guard skipFraction >= 0, skipFraction <= 1 else { throw ValidationError("--skip-fraction must be in [0, 1]") }
        try ArgumentBounds.latent(latent, flag: "--latent")
        try ArgumentBounds.context(context, flag: "--context")
    }

    func run() throws {
        let unet: UNet
        do {
            if let model {
                unet = try UNet(checkpoint: UNetCheckpoint(path: model, options: modelOptions.loadOptions))
            } else {
                unet = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
            }
        } catch { throw CommandFailure("\(error)") }
        let cost = try CostModel(config: unet.config, latentHeight: latent, latentWidth: latent, contextLength: context)
        var skipSets: [Set<String>] = [[]]
        if skipFraction > 0 { skipSets.append(ForwardBenchmark.skipSet(cost, fraction: skipFraction)) }
        let printProfile: (Int, Set<String>, () -> Void) -> Void = { b, skip, forward in
            Profiler.shared.reset()
            Profiler.shared.enabled = true
            let t0 = Date()
            forward()
            let wall = Date().timeIntervalSince(t0)
            Profiler.shared.enabled = false
            print(String(format: "  profile (batch %d%@, %.3f s with profiling):", b, skip.isEmpty ? "" : ", skip \(skip.count) units", wall))
            for e in Profiler.shared.report() {
                print(String(format: "    %-14@ %8.3f s %6d calls %8.1f GFLOP/s", e.name, e.seconds, e.calls, e.gflops))
            }
        }
        let report = try ForwardBenchmark.run(unet: unet, batches: batch.values, latent: latent, context: context, runs: runs, skipSets: skipSets,
                                          profile: profile && !json ? printProfile : nil)
        if json { return try writeJSON(report) }
        for row in report.rows {
            print(String(format: "batch %d%@: best %.3f s, median %.3f s, %.1f GFLOP/s (%.1f GMACs/sample)", row.batch,
                         row.skippedUnits.isEmpty ? "" : " skip \(row.skippedUnits.count) units", row.bestSeconds, row.medianSeconds, row.gflops,
                         Double(row.macsPerSample) / 1e9))
        }
        if skipSets.count == 2 {
            for b in batch.values {
                let rows = report.rows.filter { $0.batch == b }
                guard rows.count == 2 else { continue }
                let ratios = zip(rows[1].seconds, rows[0].seconds).map { $0 / $1 }.sorted()
                print(String(format: "batch %d skip/dense time, run by run: %@ (median %.2f; MAC ratio %.2f)", b,
                             ratios.map { String(format: "%.2f", $0) }.joined(separator: " "), Measurement.median(ratios),
                             Double(rows[1].macsPerSample) / Double(cost.total.total)))
            }
            print("skipped units: \(skipSets[1].sorted().joined(separator: ","))")
        }
        print("peak resident memory: \(report.peakResidentMB) MB; \(report.threads) threads; OpenBLAS kernels: \(report.blasCore)")
    }
}
