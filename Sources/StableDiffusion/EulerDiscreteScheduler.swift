import Foundation
import TensorCore

/// Euler's method on the probability-flow ODE in sigma (Karras et al.), as diffusers'
/// `EulerDiscreteScheduler` with its defaults (linear interpolation, no Karras/exponential/beta
/// sigmas, final sigma 0, discrete timesteps, no churn).
///
/// sigma(t) = sqrt((1 - alphaBar_t) / alphaBar_t) for integer t; timesteps are Float32 and in
/// general fractional (`linspace`, diffusers' default for Euler: linspace(0, T - 1, N) reversed),
/// and sigma at a fractional t is interpolated linearly between the neighbouring integers (numpy
/// `interp`), not computed from an interpolated alphaBar. A last sigma of 0 is appended.
/// The model sees x / sqrt(sigma^2 + 1); a step from sigma to sigma' is
/// x' = x + (x - x0) / sigma * (sigma' - sigma), with x0 = x - sigma eps, or for v-prediction
/// x0 = -sigma / sqrt(sigma^2 + 1) v + x / (sigma^2 + 1) (c_out, c_skip).
public struct EulerDiscreteScheduler: Scheduler {
    public let config: SchedulerConfig
    public let inferenceSteps: Int
    public let timesteps: [Float]
    public private(set) var stepIndex = 0
    public let initNoiseSigma: Double

    /// The training noise schedule (Double).
    public let noiseSchedule: NoiseSchedule
    /// sigma at each timestep, then a final 0 (`timesteps.count + 1` values; diffusers' `sigmas`).
    public let sigmas: [Double]

    /// Sets up `steps` inference steps (diffusers' default spacing for Euler: `linspace`).
    /// - Throws: on a step count outside 1...T or a timestep outside [0, T - 1].
    public init(config: SchedulerConfig = .sd21, steps: Int) throws(SchedulerError) {
        try config.checkStepCount(steps)
        let spacing = config.timestepSpacing ?? .linspace
        // diffusers: float32 timesteps (computed in float64, then rounded to float32).
        let values = config.inferenceTimesteps(steps: steps, spacing: spacing, round: false).map { Float($0) }
        try config.checkRange(values.map { Double($0) }, scheduler: "euler", steps: steps, spacing: spacing)
        self.config = config
        inferenceSteps = steps
        timesteps = values
        noiseSchedule = try config.noiseSchedule()
        let table = noiseSchedule.alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
        sigmas = values.map { Self.interpolate(table, at: Double($0)) } + [0]
        let largest = sigmas.max() ?? 0
        initNoiseSigma = spacing == .leading ? (largest * largest + 1).squareRoot() : largest
    }

    /// numpy `interp(x, arange(table.count), table)`: clamped at both ends, otherwise
    /// slope * (x - j) + table[j] with j = floor(x).
    static func interpolate(_ table: [Double], at x: Double) -> Double {
        guard let first = table.first, let last = table.last else { return 0 }
        if !(x > 0) { return first }
        if x >= Double(table.count - 1) { return last }
        let j = Int(x.rounded(.down))
        let slope = table[j + 1] - table[j]
        return slope * (x - Double(j)) + table[j]
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Float) throws(SchedulerError) -> Tensor {
        try checkTimestep(timestep)
        let sigma = sigmas[stepIndex]
        return SchedulerArithmetic.combine(sample, 1 / (sigma * sigma + 1).squareRoot())
    }

    public mutating func step(modelOutput: Tensor, timestep: Float, sample: Tensor) throws(SchedulerError) -> Tensor {
        try checkTimestep(timestep)
        try checkShapes(modelOutput: modelOutput, sample: sample)
        let sigma = sigmas[stepIndex], dt = sigmas[stepIndex + 1] - sigma
        // x' = x + dt * (x - x0) / sigma = cx * x + cm * modelOutput
        let cx: Double, cm: Double
        switch config.predictionType {
        case .epsilon:
            cx = 1
            cm = dt
        case .vPrediction:
            let s2 = sigma * sigma + 1
            cx = 1 + dt * sigma / s2
            cm = dt / s2.squareRoot()
        }
        stepIndex += 1
        return SchedulerArithmetic.combine(sample, cx, modelOutput, cm)
    }
}
