import ArgumentParser
import Foundation
import NN
import StableDiffusion
import TensorCore

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure alter's speed and memory (build with `swift build -c release`).",
        subcommands: [BenchForward.self, BenchTrain.self, BenchKernels.self, BenchSample.self, BenchRouting.self])
}

struct BenchForward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Time UNet forward passes: seconds, GFLOP/s (2 x counted MACs), peak resident memory.",
        discussion: "Without --model, a full-size SD2.1 UNet (865,910,724 parameters) at deterministic random init.")

    @Option(help: "A checkpoint to time instead of random SD2.1 weights.")
    var model: String?

    @Option(help: "Comma-separated batch sizes.")
    var batch = "1,2"

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

    struct Row: Encodable {
        var batch: Int
        var skipped: [String]
        var macsPerSample: Int
        var seconds: [Double]
        var best: Double
        var median: Double
        var gflops: Double
    }

    struct Report: Encodable {
        var latent: Int
        var context: Int
        var threads: Int
        var blasCore: String
        var rows: [Row]
        var peakResidentMB: Int
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
        let config = unet.config
        let batches = batch.split(separator: ",").compactMap { Int($0) }
        guard !batches.isEmpty, batches.allSatisfy({ $0 > 0 }), runs > 0 else { throw ValidationError("bad --batch or --runs") }
        let cost = CostModel(config: config, latentHeight: latent, latentWidth: latent, contextLength: context)
        var skipSets: [Set<String>] = [[]]
        if skipFraction > 0 {
            // Largest units first, each taken while the skipped MACs stay within the target.
            var chosen = Set<String>(), macs = 0
            let target = Int(Double(cost.unitTotal.total) * skipFraction)
            for u in cost.units.sorted(by: { $0.cost.total > $1.cost.total }) where macs + u.cost.total <= target {
                chosen.insert(u.name)
                macs += u.cost.total
            }
            skipSets.append(chosen)
        }
        var rows: [Row] = []
        for b in batches {
            let sample = RandomParameters(seed: 7).tensorOrDie("sample", [b, config.inChannels, latent, latent])
            let ctx = RandomParameters(seed: 8).tensorOrDie("context", [b, context, config.crossAttentionDim])
            let ts = (0..<b).map { Float(999 - 37 * $0) }
            let settings: [UNetForwardOptions] = skipSets.map { var o = UNetForwardOptions(); o.skip = $0; return o }
            // Runs alternate between the settings, so that drifts in machine speed hit both alike.
            for options in settings { _ = unet.forward(sample: sample, timesteps: ts, context: ctx, options: options) }
            var times = Array(repeating: [Double](), count: settings.count)
            for _ in 0..<runs {
                for (i, options) in settings.enumerated() {
                    let t0 = Date()
                    _ = unet.forward(sample: sample, timesteps: ts, context: ctx, options: options)
                    times[i].append(Date().timeIntervalSince(t0))
                }
            }
            for (i, options) in settings.enumerated() {
                let skip = options.skip
                let macs = cost.total.total - cost.units.filter { skip.contains($0.name) }.reduce(0) { $0 + $1.cost.total }
                if profile && !json {
                    Profiler.shared.reset()
                    Profiler.shared.enabled = true
                    let t0 = Date()
                    _ = unet.forward(sample: sample, timesteps: ts, context: ctx, options: options)
                    let wall = Date().timeIntervalSince(t0)
                    Profiler.shared.enabled = false
                    print(String(format: "  profile (batch %d, %.3f s with profiling):", b, wall))
                    for e in Profiler.shared.report() {
                        print(String(format: "    %-14@ %8.3f s %6d calls %8.1f GFLOP/s", e.name, e.seconds, e.calls, e.gflops))
                    }
                }
                let sorted = times[i].sorted()
                let row = Row(batch: b, skipped: skip.sorted(), macsPerSample: macs, seconds: times[i], best: sorted[0],
                              median: sorted[sorted.count / 2], gflops: 2 * Double(macs * b) / sorted[0] / 1e9)
                rows.append(row)
                if !json {
                    print(String(format: "batch %d%@: best %.3f s, median %.3f s, %.1f GFLOP/s (%.1f GMACs/sample)",
                                 b, skip.isEmpty ? "" : " skip \(skip.count) units", row.best, row.median, row.gflops, Double(macs) / 1e9))
                }
            }
            if settings.count == 2 && !json {
                let ratios = zip(times[1], times[0]).map { $0 / $1 }.sorted()
                print(String(format: "  skip/dense time, run by run: %@ (median %.2f; MAC ratio %.2f)",
                             ratios.map { String(format: "%.2f", $0) }.joined(separator: " "), ratios[ratios.count / 2],
                             Double(rows[rows.count - 1].macsPerSample) / Double(cost.total.total)))
            }
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peak = Int(usage.ru_maxrss) / 1024
        if json {
            try writeJSON(Report(latent: latent, context: context, threads: Parallel.workers, blasCore: BLASCoreSelection.current,
                                 rows: rows, peakResidentMB: peak))
        } else {
            if skipSets.count > 1 { print("skipped units: \(skipSets[1].sorted().joined(separator: ","))") }
            print("peak resident memory: \(peak) MB; \(Parallel.workers) threads; OpenBLAS kernels: \(BLASCoreSelection.current)")
        }
    }
}

extension RandomParameters {
    func tensorOrDie(_ name: String, _ shape: [Int]) -> Tensor {
        // Random tensors of any shape cannot fail.
        (try? tensor(name, shape: shape)) ?? Tensor(zeros: shape)
    }
}
