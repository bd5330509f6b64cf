import Foundation
import TensorCore

/// The training noise schedule of a diffusion model (diffusers' `DDPMScheduler` semantics).
public struct NoiseSchedule: Sendable, Equatable {
    /// What the UNet predicts.
    public enum PredictionType: String, Sendable, Codable, CaseIterable {
        case epsilon
        case vPrediction = "v_prediction"
    }

    /// beta_t for t = 0..<trainSteps.
    public let betas: [Double]
    /// prod_{s<=t} (1 - beta_s).
    public let alphasCumprod: [Double]

    /// `scaled_linear`: betas = linspace(sqrt(start), sqrt(end), steps)^2 (SD2.1: 0.00085, 0.012, 1000).
    public static func scaledLinear(start: Double = 0.00085, end: Double = 0.012, steps: Int = 1000) -> NoiseSchedule {
        precondition(steps >= 2, "NoiseSchedule: fewer than 2 steps")
        let a = start.squareRoot(), b = end.squareRoot()
        let betas = (0..<steps).map { i -> Double in
            let v = a + (b - a) * Double(i) / Double(steps - 1)
            return v * v
        }
        return NoiseSchedule(betas: betas)
    }

    public init(betas: [Double]) {
        self.betas = betas
        var acc = 1.0
        alphasCumprod = betas.map { acc *= 1 - $0; return acc }
    }

    /// Number of training timesteps.
    public var trainSteps: Int { betas.count }

    /// sqrt(alphaBar_t) and sqrt(1 - alphaBar_t) as Float.
    public func coefficients(_ t: Int) -> (signal: Float, noise: Float) {
        let a = alphasCumprod[t]
        return (Float(a.squareRoot()), Float((1 - a).squareRoot()))
    }
}

extension NoiseSchedule {
    /// x_t = sqrt(alphaBar_t) x0 + sqrt(1 - alphaBar_t) noise, per sample (diffusers' `add_noise`).
    /// x0, noise: [N, ...]; timesteps: N values.
    public func addNoise(_ x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        combine(x0, noise, timesteps) { c, x, e in c.signal * x + c.noise * e }
    }

    /// v = sqrt(alphaBar_t) noise - sqrt(1 - alphaBar_t) x0, per sample (diffusers' `get_velocity`).
    public func velocity(_ x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        combine(x0, noise, timesteps) { c, x, e in c.signal * e - c.noise * x }
    }

    /// The denoising target of a prediction type.
    public func target(_ type: PredictionType, x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        type == .epsilon ? noise : velocity(x0, noise: noise, timesteps: timesteps)
    }

    private func combine(_ x0: Tensor, _ noise: Tensor, _ timesteps: [Int], _ f: ((signal: Float, noise: Float), Float, Float) -> Float) -> Tensor {
        precondition(x0.shape == noise.shape && x0.shape.first == timesteps.count, "NoiseSchedule: shapes \(x0.shape), \(noise.shape), \(timesteps.count) timesteps")
        let y = Tensor(uninitialized: x0.shape)
        let per = x0.count / max(timesteps.count, 1)
        for (i, t) in timesteps.enumerated() {
            let c = coefficients(t)
            for j in (i * per)..<((i + 1) * per) { y.data[j] = f(c, x0.data[j], noise.data[j]) }
        }
        return y
    }
}
