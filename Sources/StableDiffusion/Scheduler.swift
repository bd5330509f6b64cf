import TensorCore

/// A diffusion sampler with diffusers' semantics, set up for a fixed number of inference steps.
///
/// A scheduler is a value holding its position in the run; a sampling loop drives it so:
///
/// ```swift
/// var scheduler = try SchedulerKind(parsing: "pndm:20").makeScheduler(config: config)
/// var latent = scheduler.initialLatent(noise: noise)
/// for t in scheduler.timesteps {                      // one entry per model call
///     let input = try scheduler.scaleModelInput(latent, timestep: t)
///     let output = unet.forward(sample: input, timesteps: [t], context: context).sample
///     latent = try scheduler.step(modelOutput: output, timestep: t, sample: latent)
/// }
/// ```
///
/// Copy a fresh scheduler (or make a new one) for every run. Scalar coefficients are computed in
/// Double from a Double noise schedule and every element is combined in Double, then rounded
/// once to Float; diffusers does the same in float32 (see `Tests/Fixtures/README.md`).
public protocol Scheduler: Sendable {
    /// The settings it was built from.
    var config: SchedulerConfig { get }
    /// The number of inference steps it was set up with.
    var inferenceSteps: Int { get }
    /// The timestep of every model call, in order (diffusers' `scheduler.timesteps`): integers
    /// for DDIM and PNDM, Float32 values for Euler. PNDM has `inferenceSteps + 1` of them.
    var timesteps: [Float] { get }
    /// The index in `timesteps` of the next `step` (0 before the first; `timesteps.count` at the end).
    var stepIndex: Int { get }
    /// The standard deviation of the initial latent: the initial latent is noise * initNoiseSigma
    /// (1 for DDIM and PNDM; Euler: the largest sigma, or sqrt(sigma^2 + 1) for `leading` spacing).
    var initNoiseSigma: Double { get }
    /// The model's input at the current step for `sample` (Euler: sample / sqrt(sigma^2 + 1); the
    /// others return `sample`). `timestep` must be `timesteps[stepIndex]`.
    func scaleModelInput(_ sample: Tensor, timestep: Float) throws(SchedulerError) -> Tensor
    /// Advances one step: the latent of the next timestep from the model's output at the current
    /// one. `timestep` must be `timesteps[stepIndex]`; `modelOutput` must have `sample`'s shape.
    mutating func step(modelOutput: Tensor, timestep: Float, sample: Tensor) throws(SchedulerError) -> Tensor
}

extension Scheduler {
    /// The prediction type the model outputs are read as.
    public var predictionType: NoiseSchedule.PredictionType { config.predictionType }

    /// The number of model calls of a whole run (`timesteps.count`).
    public var modelCalls: Int { timesteps.count }

    /// Whether every step has been made.
    public var isFinished: Bool { stepIndex >= timesteps.count }

    /// The initial latent for `noise` (standard normal): noise * initNoiseSigma.
    public func initialLatent(noise: Tensor) -> Tensor {
        SchedulerArithmetic.combine(noise, initNoiseSigma)
    }

    /// Throws unless a step is left and `timestep` is the next one.
    func checkTimestep(_ timestep: Float) throws(SchedulerError) {
        guard stepIndex < timesteps.count else { throw .finished(modelCalls: timesteps.count) }
        let expected = timesteps[stepIndex]
        guard timestep == expected else { throw .unexpectedTimestep(index: stepIndex, expected: expected, got: timestep) }
    }

    /// Throws unless `modelOutput` has `sample`'s shape.
    func checkShapes(modelOutput: Tensor, sample: Tensor) throws(SchedulerError) {
        guard modelOutput.shape == sample.shape else {
            throw .shapeMismatch("model output", expected: sample.shape, got: modelOutput.shape)
        }
    }
}
