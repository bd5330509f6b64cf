import ALTER
import StableDiffusion
import TensorCore

/// How much each prunable unit matters at each timestep: the output MSE of the model with that one
/// unit skipped against the dense model, on the same noisy samples. Temporal routing can only help
/// when these differ between timesteps (ALTER's premise); for a randomly initialised UNet they
/// hardly do.
public struct UnitSensitivity: Sendable {
    /// Unit names in execution order.
    public let units: [String]
    public let timesteps: [Int]
    /// mse[i][l]: output MSE at `timesteps[i]` with unit l skipped.
    public let mse: [[Double]]
    /// Mean square of the dense output at each timestep (the scale the MSEs compare with).
    public let outputMeanSquare: [Double]

    /// Measures `unet` on the first `samples` samples of `data` (cycling when there are fewer),
    /// noised at each of `timesteps` with one Gaussian draw from a generator seeded by `seed`.
    public init(unet: UNet, data: TrainingData, timesteps: [Int], samples: Int = 8, seed: UInt64 = 5) {
        precondition(samples >= 1 && !timesteps.isEmpty, "UnitSensitivity: need samples and timesteps")
        let schedule = NoiseSchedule.scaledLinear()
        units = unet.config.units().map(\.name)
        self.timesteps = timesteps
        var rng = SeededGenerator(seed: seed)
        let (x0, context) = data.batch(indices: (0..<samples).map { $0 % data.count })
        let noise = rng.normals(x0.count)
        var mse: [[Double]] = [], meanSquare: [Double] = []
        for t in timesteps {
            let (a, s) = schedule.coefficients(t)
            let noisy = Tensor(shape: x0.shape, values: (0..<x0.count).map { a * x0.data[$0] + s * noise[$0] })
            let ts = [Float](repeating: Float(t), count: samples)
            let dense = unet.forward(sample: noisy, timesteps: ts, context: context).sample
            meanSquare.append((0..<dense.count).reduce(0.0) { $0 + Double(dense.data[$1] * dense.data[$1]) } / Double(dense.count))
            mse.append(units.map { unit in
                var options = UNetForwardOptions()
                options.skip = [unit]
                let y = unet.forward(sample: noisy, timesteps: ts, context: context, options: options).sample
                return (0..<y.count).reduce(0.0) { sum, j in
                    let d = Double(y.data[j] - dense.data[j])
                    return sum + d * d
                } / Double(y.count)
            })
        }
        self.mse = mse
        outputMeanSquare = meanSquare
    }

    /// Spearman rank correlation of the units' MSEs at timesteps i and j (1: the same order).
    public func rankCorrelation(_ i: Int, _ j: Int) -> Double {
        func ranks(_ v: [Double]) -> [Double] {
            var r = [Double](repeating: 0, count: v.count)
            for (rank, index) in v.indices.sorted(by: { v[$0] < v[$1] }).enumerated() { r[index] = Double(rank) }
            return r
        }
        let (a, b) = (ranks(mse[i]), ranks(mse[j]))
        let n = Double(units.count)
        guard n > 1 else { return 1 }
        let d2 = zip(a, b).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
        return 1 - 6 * d2 / (n * (n * n - 1))
    }
}
