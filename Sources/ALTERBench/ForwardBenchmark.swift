import Foundation
import NN
import StableDiffusion
import TensorCore

/// UNet forward passes timed dense and with a hard skip set, alternating so that drifts in the
/// machine's speed hit both alike (`alter bench forward`).
public enum ForwardBenchmark {
    public struct Row: Encodable, Sendable {
        public var batch: Int
        public var skippedUnits: [String]
        public var macsPerSample: Int
        public var seconds: [Double]
        public var bestSeconds: Double
        public var medianSeconds: Double
        /// 2 x counted MACs over the best time.
        public var gflops: Double

        enum CodingKeys: String, CodingKey, CaseIterable {
            case batch, skippedUnits = "skipped_units", macsPerSample = "macs_per_sample", seconds, bestSeconds = "best_seconds"
            case medianSeconds = "median_seconds", gflops
        }
    }

    public struct Report: Encodable, Sendable {
        public var latent: Int
        public var contextLength: Int
        public var threads: Int
        public var blasCore: String
        public var rows: [Row]
        public var peakResidentMB: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case latent, contextLength = "context_length", threads, blasCore = "blas_core", rows, peakResidentMB = "peak_resident_mb"
        }
    }

    /// Units covering about `fraction` of the unit MACs: the largest first, each taken while the
    /// skipped MACs stay within the target.
    public static func skipSet(_ cost: CostModel, fraction: Double) -> Set<String> {
        var chosen = Set<String>(), macs = 0
        let target = Int(Double(cost.unitTotal.total) * fraction)
        for u in cost.units.sorted(by: { $0.cost.total > $1.cost.total }) where macs + u.cost.total <= target {
            chosen.insert(u.name)
            macs += u.cost.total
        }
        return chosen
    }

    /// Times `runs` forwards per batch size and skip set (after one warm-up each), alternating
    /// between the skip sets. `profile` is called once per setting after the timed runs (for a
    /// kernel profile) with the batch, the skip set and a closure that runs one forward. Throws
    /// when the latent size or context length is out of bounds (`LatentSize`).
    public static func run(unet: UNet, batches: [Int], latent: Int, context: Int, runs: Int, skipSets: [Set<String>],
                           profile: ((Int, Set<String>, () -> Void) -> Void)? = nil) throws(SizeError) -> Report {
        let config = unet.config
        let cost = try CostModel(config: config, latentHeight: latent, latentWidth: latent, contextLength: context)
        var rows: [Row] = []
        for b in batches {
            var rng = SeededGenerator(seed: 7)
            let sample = Tensor(shape: [b, config.inChannels, latent, latent], values: rng.normals(b * config.inChannels * latent * latent))
            let ctx = Tensor(shape: [b, context, config.crossAttentionDim], values: rng.normals(b * context * config.crossAttentionDim))
            let ts = (0..<b).map { Float(999 - 37 * $0) }
            let settings: [UNetForwardOptions] = skipSets.map { var o = UNetForwardOptions(); o.skip = $0; return o }
            for options in settings { _ = unet.forward(sample: sample, timesteps: ts, context: ctx, options: options) }
            var times = Array(repeating: [Double](), count: settings.count)
            for _ in 0..<runs {
                for (i, options) in settings.enumerated() {
                    let t0 = Measurement.now()
                    _ = unet.forward(sample: sample, timesteps: ts, context: ctx, options: options)
                    times[i].append(Measurement.now() - t0)
                }
            }
            for (i, options) in settings.enumerated() {
                profile?(b, options.skip) { _ = unet.forward(sample: sample, timesteps: ts, context: ctx, options: options) }
                let macs = cost.cost(skipping: options.skip).total
                let sorted = times[i].sorted()
                rows.append(Row(batch: b, skippedUnits: options.skip.sorted(), macsPerSample: macs, seconds: times[i], bestSeconds: sorted[0],
                                medianSeconds: Measurement.median(times[i]), gflops: 2 * Double(macs * b) / sorted[0] / 1e9))
            }
        }
        return Report(latent: latent, contextLength: context, threads: Parallel.workers, blasCore: BLASCoreSelection.current, rows: rows,
                      peakResidentMB: Measurement.peakResidentMB())
    }
}
