import Foundation

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
