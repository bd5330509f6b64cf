import ALTERBench
import ArgumentParser
import Foundation
import TensorCore

extension ComponentBenchmark.Part: ExpressibleByArgument {}

struct BenchComponents: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "components",
        abstract: "Time the SD2.1 text encoder and VAE: seconds per call, peak resident memory.",
        discussion: """
            Full-size SD2.1 models at deterministic random init (seed 21): the text encoder (23 layers, width \
            1024) on one 77-token prompt (text), VAE decode of a 64x64 and a 96x96 latent (decode64, decode96: \
            512x512 and 768x768 images) and VAE encode of a 512x512 image to the latent mean (encode512). \
            Each part: one warm-up call, then --runs timed calls. Peak memory is the process's; run one part \
            per process for each part's own peak (scripts/bench_components_vs_torch.py does).
            """)

    @Option(help: "Comma-separated parts: text, decode64, decode96, encode512.")
    var parts = CommaList<ComponentBenchmark.Part>(ComponentBenchmark.Part.allCases)

    @Option(help: "Timed calls per part (after one warm-up).")
    var runs = 3

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "After the timed calls, make one more call per part and print time per kernel.")
    var profile = false

    func validate() throws {
        guard runs > 0 else { throw ValidationError("--runs must be positive") }
    }

    func run() throws {
        let printProfile: (ComponentBenchmark.Part, () -> Void) -> Void = { part, call in
            Profiler.shared.reset()
            Profiler.shared.enabled = true
            let t0 = Date()
            call()
            let wall = Date().timeIntervalSince(t0)
            Profiler.shared.enabled = false
            print(String(format: "  profile (%@, %.3f s with profiling):", part.rawValue, wall))
            for e in Profiler.shared.report() {
                print(String(format: "    %-34@ %8.3f s %6d calls %8.1f GFLOP/s", e.name, e.seconds, e.calls, e.gflops))
            }
        }
        let report: ComponentBenchmark.Report
        do {
            report = try ComponentBenchmark.run(parts: parts.values, runs: runs, profile: profile && !json ? printProfile : nil)
        } catch { throw CommandFailure("\(error)") }
        if json { return try writeJSON(report) }
        for row in report.rows {
            print(String(format: "%-9@ %@ -> %@: best %.3f s, median %.3f s (warm-up %.3f s; runs %@); peak so far %d MB",
                         row.part, "\(row.inputShape)", "\(row.outputShape)", row.bestSeconds, row.medianSeconds, row.warmupSeconds,
                         row.seconds.map { String(format: "%.3f", $0) }.joined(separator: " "), row.peakResidentMB))
        }
        print("peak resident memory: \(report.peakResidentMB) MB; \(report.threads) threads; OpenBLAS kernels: \(report.blasCore)")
    }
}
