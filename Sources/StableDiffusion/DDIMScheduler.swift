import TensorCore

/// Deterministic DDIM (eta = 0), as diffusers' `DDIMScheduler.set_timesteps` and `step`.
///
/// At timestep t with previous timestep p = t - T / N (integer division, whatever the spacing,
/// as diffusers does) and alphaBar_p = alphaBar_0, or 1 with `set_alpha_to_one`, when p < 0:
/// x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), and x_p = sqrt(a_p) x0 + sqrt(1 - a_p) eps,
/// where for v-prediction x0 = sqrt(a_t) x - sqrt(1 - a_t) v and eps = sqrt(a_t) v + sqrt(1 - a_t) x.
public struct DDIMScheduler: Scheduler {
    public let config: SchedulerConfig
    public let inferenceSteps: Int
    public let timesteps: [Float]
    public private(set) var stepIndex = 0
    public var initNoiseSigma: Double { 1 }

    /// The training noise schedule (Double).
    public let noiseSchedule: NoiseSchedule
    /// The integer timesteps (the same values as `timesteps`).
    public let integerTimesteps: [Int]
    private let finalAlphaCumprod: Double

    /// Sets up `steps` inference steps (diffusers' default spacing for DDIM: `leading`).
    /// - Throws: on a step count outside 1...T, a timestep outside 0..<T, or `clip_sample` true.
    public init(config: SchedulerConfig = .sd21, steps: Int) throws(SchedulerError) {
        guard !config.clipSample else { throw .unsupported("DDIM with clip_sample true (only clip_sample false is implemented)") }
        try config.checkStepCount(steps)
        let spacing = config.timestepSpacing ?? .leading
        let values = config.inferenceTimesteps(steps: steps, spacing: spacing, round: true)
        try config.checkRange(values, scheduler: "ddim", steps: steps, spacing: spacing)
        self.config = config
        inferenceSteps = steps
        integerTimesteps = values.map { Int($0) }
        timesteps = integerTimesteps.map { Float($0) }
        noiseSchedule = try config.noiseSchedule()
        finalAlphaCumprod = config.setAlphaToOne ? 1 : noiseSchedule.alphasCumprod[0]
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Float) throws(SchedulerError) -> Tensor {
        try checkTimestep(timestep)
        return sample
    }

    public mutating func step(modelOutput: Tensor, timestep: Float, sample: Tensor) throws(SchedulerError) -> Tensor {
        try checkTimestep(timestep)
        try checkShapes(modelOutput: modelOutput, sample: sample)
        let t = integerTimesteps[stepIndex]
        let prev = t - config.trainTimesteps / inferenceSteps
        let a = noiseSchedule.alphasCumprod[t]
        let ap = prev >= 0 ? noiseSchedule.alphasCumprod[prev] : finalAlphaCumprod
        let (sa, sb, sap, sbp) = (a.squareRoot(), (1 - a).squareRoot(), ap.squareRoot(), (1 - ap).squareRoot())
        // x_p = cx * x + cm * modelOutput
        let cx: Double, cm: Double
        switch config.predictionType {
        case .epsilon:
            cx = sap / sa
            cm = sbp - sap * sb / sa
        case .vPrediction:
            cx = sap * sa + sbp * sb
            cm = sbp * sa - sap * sb
        }
        stepIndex += 1
        return SchedulerArithmetic.combine(sample, cx, modelOutput, cm)
    }
}
