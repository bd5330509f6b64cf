import TensorCore

/// PNDM with `skip_prk_steps` (PLMS: linear multistep on the model outputs), as diffusers'
/// `PNDMScheduler.set_timesteps` and `step_plms`.
///
/// For N steps with base timesteps b_0 > b_1 > ... > b_{N-1} (diffusers' spacing rule) the model
/// is called N + 1 times, at b_0, b_1, b_1, b_2, ..., b_{N-1}: the second timestep is repeated.
/// With d = T / N (integer division):
/// * call 0 (b_0): e = output_0; the latent becomes the step b_0 -> b_0 - d from x_{b_0};
/// * call 1 (b_1, the repeat): a second-order correction that redoes the same step from the same
///   starting latent x_{b_0} with e = (output_1 + output_0) / 2, *computed at timestep b_1 + d*
///   (which is b_0 for leading spacing); output_1 is not kept in the history;
/// * call k >= 2 (b_{k-1}): step b_{k-1} -> b_{k-1} - d with the Adams-Bashforth combination of
///   the kept outputs e_1 (newest) ...: (3 e_1 - e_2) / 2, (23 e_1 - 16 e_2 + 5 e_3) / 12, then
///   (55 e_1 - 59 e_2 + 37 e_3 - 9 e_4) / 24.
///
/// Each step is x_p = sqrt(a_p / a_t) x - (a_p - a_t) e / (a_t sqrt(1 - a_p) + sqrt(a_t (1 - a_t) a_p)),
/// with alphaBar_p = alphaBar_0 (or 1 with `set_alpha_to_one`) when p < 0. For v-prediction the
/// combined output is read as v and converted once, e = sqrt(a_t) v + sqrt(1 - a_t) x, with the
/// step's own t and starting latent x.
public struct PNDMScheduler: Scheduler {
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
    /// The kept model outputs, oldest first (diffusers' `ets`; at most 4).
    private var history: [Tensor] = []
    /// The latent the first step started from (diffusers' `cur_sample`), until the correction.
    private var firstSample: Tensor?

    /// Sets up `steps` inference steps (diffusers' default spacing for PNDM: `leading`).
    /// - Throws: on a step count outside 1...T, a timestep outside 0..<T, or `skip_prk_steps` false.
    public init(config: SchedulerConfig = .sd21, steps: Int) throws(SchedulerError) {
        guard config.skipPrkSteps else {
            throw .unsupported("PNDM with skip_prk_steps false (only the PLMS steps, skip_prk_steps true, are implemented)")
        }
        try config.checkStepCount(steps)
        let spacing = config.timestepSpacing ?? .leading
        // diffusers' `_timesteps` are ascending; plms_timesteps = [_t[:-1], _t[-2], _t[-1]] reversed.
        let base = Array(config.inferenceTimesteps(steps: steps, spacing: spacing, round: true).reversed())
        var plms = Array(base.dropLast())
        if base.count >= 2 { plms.append(base[base.count - 2]) }
        if let last = base.last { plms.append(last) }
        plms.reverse()
        try config.checkRange(plms, scheduler: "pndm", steps: steps, spacing: spacing)
        // The correction step (call 1) works at timestep plms[1] + T/N.
        if plms.count >= 2 {
            try config.checkRange([plms[1] + Double(config.trainTimesteps / steps)], scheduler: "pndm", steps: steps, spacing: spacing)
        }
        self.config = config
        inferenceSteps = steps
        integerTimesteps = plms.map { Int($0) }
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
        for e in history where e.shape != sample.shape {
            throw .shapeMismatch("model output of an earlier step", expected: sample.shape, got: e.shape)
        }
        let counter = stepIndex
        let stride = config.trainTimesteps / inferenceSteps
        var t = integerTimesteps[counter]
        var prev = t - stride
        if counter != 1 {
            history = Array(history.suffix(3))
            history.append(modelOutput)
        } else {
            prev = t
            t += stride
        }
        var start = sample
        // e = sum_k weights[k] * outputs[k]
        let outputs: [Tensor], weights: [Double]
        let h = history
        switch h.count {
        case 1 where counter == 0:
            (outputs, weights) = ([modelOutput], [1])
            firstSample = sample
        case 1:
            (outputs, weights) = ([modelOutput, h[0]], [0.5, 0.5])
            start = firstSample ?? sample
            firstSample = nil
        case 2:
            (outputs, weights) = ([h[1], h[0]], [3.0 / 2, -1.0 / 2])
        case 3:
            (outputs, weights) = ([h[2], h[1], h[0]], [23.0 / 12, -16.0 / 12, 5.0 / 12])
        default:
            (outputs, weights) = ([h[3], h[2], h[1], h[0]], [55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24])
        }
        let result = previousSample(start, t: t, prev: prev, outputs: outputs, weights: weights)
        stepIndex += 1
        return result
    }

    /// diffusers' `_get_prev_sample` with the combined model output sum_k weights[k] * outputs[k].
    private func previousSample(_ x: Tensor, t: Int, prev: Int, outputs: [Tensor], weights: [Double]) -> Tensor {
        let a = noiseSchedule.alphasCumprod[t]
        let ap = prev >= 0 ? noiseSchedule.alphasCumprod[prev] : finalAlphaCumprod
        let b = 1 - a, bp = 1 - ap
        let sampleCoefficient = (ap / a).squareRoot()
        let denominator = a * bp.squareRoot() + (a * b * ap).squareRoot()
        let outputCoefficient = -(ap - a) / denominator
        let isV = config.predictionType == .vPrediction
        let (va, vb) = (a.squareRoot(), b.squareRoot())
        let y = Tensor(uninitialized: x.shape)
        let xp = x.data, yp = y.data
        let ptrs = outputs.map(\.data)
        withExtendedLifetime(outputs) {
            for i in 0..<x.count {
                var e = 0.0
                for k in 0..<ptrs.count { e += weights[k] * Double(ptrs[k][i]) }
                let xi = Double(xp[i])
                if isV { e = va * e + vb * xi }
                yp[i] = Float(sampleCoefficient * xi + outputCoefficient * e)
            }
        }
        return y
    }
}
