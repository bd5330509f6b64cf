import ALTER
import Foundation
import StableDiffusion
import TensorCore

/// Full ALTER training iterations timed on random latents and contexts (`alter bench train`).
public enum TrainingBenchmark {
    public struct Report: Encodable, Sendable {
        public var latent: Int
        public var contextLength: Int
        public var batch: Int
        public var hypernetStep: Bool
        public var threads: Int
        public var blasCore: String
        public var parameters: Int
        public var stepSeconds: [Double]
        public var peakResidentMB: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case latent, contextLength = "context_length", batch, hypernetStep = "hypernet_step", threads, blasCore = "blas_core"
            case parameters = "parameter_count", stepSeconds = "step_seconds", peakResidentMB = "peak_resident_mb"
        }
    }

    /// Times `steps` iterations of `student` against `teacher` (separate instances of one model)
    /// with `experts` experts, the hypernetwork step on or off; `progress` sees each step's metrics.
    public static func run(student: UNet, teacher: UNet, model: String, latent: Int, context: Int, batch: Int, steps: Int, experts: Int,
                           hypernet: Bool, progress: (StepMetrics) -> Void = { _ in }) throws -> Report {
        let cfg = student.config
        var rng = SeededGenerator(seed: 5)
        let n = max(batch, 2)
        let latents = Tensor(shape: [n, cfg.inChannels, latent, latent], values: rng.normals(n * cfg.inChannels * latent * latent))
        let ctx = Tensor(shape: [n, context, cfg.crossAttentionDim], values: rng.normals(n * context * cfg.crossAttentionDim))
        var config = CompressionConfig(model: model, data: "random", steps: steps, hypernetSteps: hypernet ? steps : 0)
        config.settings.experts = experts
        config.batch = batch
        let trainer = try ALTERTrainer(config: config, student: student, teacher: teacher, data: try TrainingData(latents: latents, context: ctx))
        var seconds: [Double] = []
        for _ in 0..<steps {
            let m = try trainer.trainStep()
            seconds.append(m.seconds)
            progress(m)
        }
        return Report(latent: latent, contextLength: context, batch: batch, hypernetStep: hypernet, threads: Parallel.workers,
                      blasCore: BLASCoreSelection.current, parameters: student.parameters.reduce(0) { $0 + $1.value.count },
                      stepSeconds: seconds, peakResidentMB: Measurement.peakResidentMB())
    }
}
