import ALTER
import Experts
import Foundation
import StableDiffusion
import TensorCore

/// The routing study behind `alter bench routing`: learned, interval and static routing trained
/// with identical settings on the same data, compared by the held-out output-distillation loss of
/// the routed, pruned student against the dense teacher at the same MAC target and step budget.
public struct RoutingStudy {
    /// Everything a study varies; the defaults are the CLI's.
    public struct Settings: Sendable {
        public var routings: [ALTERSettings.Routing] = [.learned, .intervals, .static]
        public var seeds: [UInt64] = [1, 2, 3]
        public var experts = 4
        public var keep = 0.65
        public var steps = 300
        /// nil: `CompressionConfig.defaultHypernetSteps(steps)`.
        public var hypernetSteps: Int?
        public var batch = 2
        public var learningRateUNet = 1e-4
        public var learningRateHypernet = 1e-2
        /// nil: `CompressionConfig.defaultWarmupSteps(steps)`.
        public var warmupSteps: Int?
        public var ratioWeight = 5.0
        public var balanceWeight = 1.0
        public var featureKDWeight = 1.0
        public var denoiseWeight = 1e-4
        /// The last `holdout` samples are held out of training (nil: a quarter, at least one).
        public var holdout: Int?
        /// Held-out evaluation draws and their seed (the same for every run).
        public var evalSamples = 64
        public var evalSeed: UInt64 = 99
        /// Denoising pre-training of the model before the runs (0: none).
        public var pretrainSteps = 0
        public var pretrainLearningRate = 1e-3
        public var pretrainBatch = 8
        public init() {}
    }

    /// One training run's result.
    public struct Run: Encodable, Sendable {
        public var routing: String
        public var seed: UInt64
        public var keptMACFraction: Double
        public var heldOutOutputKD: Double
        public var expertShares: [Double]
        public var finalTrainingLoss: Double
        public var seconds: Double

        enum CodingKeys: String, CodingKey, CaseIterable {
            case routing, seed, keptMACFraction = "kept_mac_fraction", heldOutOutputKD = "held_out_output_kd"
            case expertShares = "expert_shares", finalTrainingLoss = "final_training_loss", seconds
        }
    }

    /// Mean and spread per routing mode.
    public struct Summary: Encodable, Sendable {
        public var routing: String
        public var meanKeptMACFraction: Double
        public var meanHeldOutOutputKD: Double
        public var sdHeldOutOutputKD: Double

        enum CodingKeys: String, CodingKey, CaseIterable {
            case routing, meanKeptMACFraction = "mean_kept_mac_fraction", meanHeldOutOutputKD = "mean_held_out_output_kd"
            case sdHeldOutOutputKD = "sd_held_out_output_kd"
        }
    }

    /// The whole study (`alter bench routing --json`).
    public struct Report: Encodable, Sendable {
        public var model: String
        public var data: String
        public var pretrainSteps: Int
        public var pretrainFinalLoss: Double?
        public var parameters: Int
        public var trainingSamples: Int
        public var heldOutSamples: Int
        public var experts: Int
        public var keep: Double
        public var steps: Int
        public var hypernetSteps: Int
        public var batch: Int
        public var evalSamples: Int
        public var evalSeed: UInt64
        public var threads: Int
        public var runs: [Run]
        public var summary: [Summary]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case model, data, pretrainSteps = "pretrain_steps", pretrainFinalLoss = "pretrain_final_loss", parameters = "parameter_count"
            case trainingSamples = "training_sample_count", heldOutSamples = "held_out_sample_count", experts = "expert_count", keep, steps
            case hypernetSteps = "hypernet_steps", batch, evalSamples = "eval_sample_count", evalSeed = "eval_seed", threads, runs, summary
        }
    }

    /// What the study reports while it runs.
    public enum Event {
        case pretraining(step: Int, meanLoss: Double, window: Int)
        case step(ALTERTrainer, StepMetrics)
        case finished(Run)
    }

    public let settings: Settings
    /// Builds a fresh copy of the model (the teacher and every run's student).
    public private(set) var makeModel: () throws -> UNet
    public private(set) var modelLabel: String
    public let dataLabel: String
    public let training: TrainingData
    public let heldOut: TrainingData

    /// A study of the model `makeModel` builds on `data` split into training and held-out samples.
    public init(settings: Settings, makeModel: @escaping () throws -> UNet, modelLabel: String, data: TrainingData,
                dataLabel: String) throws(RoutingStudyError) {
        self.settings = settings
        self.makeModel = makeModel
        self.modelLabel = modelLabel
        self.dataLabel = dataLabel
        let held = settings.holdout ?? max(1, data.count / 4)
        guard held >= 1, held < data.count else {
            throw .invalid(field: "holdout", "must be between 1 and \(data.count - 1) (the data holds \(data.count) samples), got \(held)")
        }
        guard !settings.routings.isEmpty else { throw .invalid(field: "routings", "is empty") }
        guard !settings.seeds.isEmpty else { throw .invalid(field: "seeds", "is empty") }
        guard settings.evalSamples >= 1 else { throw .invalid(field: "eval_samples", "must be at least 1, got \(settings.evalSamples)") }
        do { (training, heldOut) = try data.split(heldOut: held) } catch { throw .invalid(field: "holdout", error.description) }
    }

    /// The hypernetwork steps of every run.
    public var hypernetSteps: Int { settings.hypernetSteps ?? CompressionConfig.defaultHypernetSteps(settings.steps) }

    /// The configuration of the run with `routing` and `seed`.
    public func config(_ routing: ALTERSettings.Routing, seed: UInt64) -> CompressionConfig {
        let s = settings
        var c = CompressionConfig(model: modelLabel, data: dataLabel, steps: s.steps, hypernetSteps: hypernetSteps,
                                  warmupSteps: s.warmupSteps)
        c.settings.experts = s.experts
        c.settings.keep = s.keep
        c.settings.routing = routing
        c.settings.learningRateUNet = s.learningRateUNet
        c.settings.learningRateHypernet = s.learningRateHypernet
        c.settings.ratioWeight = s.ratioWeight
        c.settings.balanceWeight = s.balanceWeight
        c.settings.featureKDWeight = s.featureKDWeight
        c.settings.denoiseWeight = s.denoiseWeight
        c.batch = s.batch
        c.seed = seed
        return c
    }

    /// Pre-trains the model as a plain denoiser on the training samples (when `pretrainSteps` > 0);
    /// later runs start from the result. Returns each step's loss.
    public mutating func pretrain(events: (Event) -> Void = { _ in }) throws -> [Double] {
        let steps = settings.pretrainSteps
        guard steps > 0 else { return [] }
        let base = try makeModel()
        var pre = DenoisingPretraining(steps: steps)
        pre.batch = settings.pretrainBatch
        pre.learningRate = settings.pretrainLearningRate
        pre.warmupSteps = min(50, steps / 10)
        var window: [Double] = []
        let losses = pre.train(base, on: training) { step, loss in
            window.append(loss)
            if step % max(1, steps / 10) == 0 {
                events(.pretraining(step: step, meanLoss: window.reduce(0, +) / Double(window.count), window: window.count))
                window = []
            }
        }
        makeModel = { try base.copy() }
        modelLabel += " pre-trained as a denoiser for \(steps) steps"
        return losses
    }

    /// How much skipping each unit alone changes the model's output at `timesteps`, on the held-out samples.
    public func sensitivity(timesteps: [Int] = [50, 350, 650, 950]) throws -> UnitSensitivity {
        UnitSensitivity(unet: try makeModel(), data: heldOut, timesteps: timesteps)
    }

    /// Trains every routing mode once per seed and evaluates each on the held-out samples.
    public func run(pretrainLosses: [Double] = [], events: (Event) -> Void = { _ in }) throws -> Report {
        var runs: [Run] = [], parameters = 0
        for seed in settings.seeds {
            for mode in settings.routings {
                let student = try makeModel(), teacher = try makeModel()
                parameters = student.parameters.reduce(0) { $0 + $1.value.count }
                let trainer = try ALTERTrainer(config: config(mode, seed: seed), student: student, teacher: teacher, data: training)
                let t0 = Measurement.now()
                var last: StepMetrics?
                for _ in 0..<settings.steps {
                    let m = try trainer.trainStep()
                    last = m
                    events(.step(trainer, m))
                }
                let decisions = trainer.finalDecisions
                let run = Run(routing: mode.rawValue, seed: seed, keptMACFraction: trainer.budget.keptFraction(decisions),
                              heldOutOutputKD: trainer.evaluate(on: heldOut, decisions: decisions, count: settings.evalSamples,
                                                                seed: settings.evalSeed),
                              expertShares: decisions.expertShares, finalTrainingLoss: last?.loss ?? .nan,
                              seconds: Measurement.now() - t0)
                runs.append(run)
                events(.finished(run))
            }
        }
        let summary = settings.routings.map { mode -> Summary in
            let rs = runs.filter { $0.routing == mode.rawValue }
            let kd = Measurement.meanAndDeviation(rs.map(\.heldOutOutputKD))
            return Summary(routing: mode.rawValue, meanKeptMACFraction: Measurement.meanAndDeviation(rs.map(\.keptMACFraction)).mean,
                           meanHeldOutOutputKD: kd.mean, sdHeldOutOutputKD: kd.sd)
        }
        let tail = pretrainLosses.suffix(max(1, settings.pretrainSteps / 10))
        return Report(model: modelLabel, data: dataLabel, pretrainSteps: settings.pretrainSteps,
                      pretrainFinalLoss: tail.isEmpty ? nil : tail.reduce(0, +) / Double(tail.count), parameters: parameters,
                      trainingSamples: training.count, heldOutSamples: heldOut.count, experts: settings.experts, keep: settings.keep,
                      steps: settings.steps, hypernetSteps: hypernetSteps, batch: settings.batch, evalSamples: settings.evalSamples,
                      evalSeed: settings.evalSeed, threads: Parallel.workers, runs: runs, summary: summary)
    }

    /// Runs whose kept-MAC fraction misses the target by more than `tolerance`.
    public static func offTarget(_ report: Report, tolerance: Double = 0.03) -> [Run] {
        report.runs.filter { abs($0.keptMACFraction - report.keep) > tolerance }
    }
}

/// A routing study that cannot run; `field` names the setting.
public enum RoutingStudyError: Error, CustomStringConvertible {
    case invalid(field: String, String)

    public var description: String {
        switch self {
        case .invalid(let f, let why): return "\(f) \(why)"
        }
    }
}

extension UNetConfig {
    /// An SD2.1-structured config with other block channels (multiples of 8), 8 norm groups,
    /// attention heads of size 8 and cross-attention width `contextDim`: the random-init models of
    /// the benchmarks.
    public static func sd21Structured(channels: [Int], contextDim: Int, sampleSize: Int) throws -> UNetConfig {
        var cfg = UNetConfig.sd21
        guard channels.count == cfg.levels, channels.allSatisfy({ $0 > 0 && $0 % 8 == 0 }) else {
            throw RoutingStudyError.invalid(field: "channels", "needs \(cfg.levels) positive multiples of 8, got \(channels)")
        }
        cfg.blockOutChannels = channels
        cfg.normNumGroups = 8
        cfg.attentionHeads = channels.map { $0 / 8 }
        cfg.crossAttentionDim = contextDim
        cfg.sampleSize = sampleSize
        try cfg.validate(source: "channels \(channels)")
        return cfg
    }
}
