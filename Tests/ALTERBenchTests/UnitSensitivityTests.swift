import ALTERBench
import ALTER
import ExampleSupport
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// Skip-one-unit sensitivity per timestep (`alter bench routing --sensitivity`).
final class UnitSensitivityTests: XCTestCase {
    func testSensitivityMatchesASkippedForward() throws {
        let unet = try UNet(checkpoint: Example.checkpoint())
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        let s = UnitSensitivity(unet: unet, data: data, timesteps: [50, 950], samples: 2, seed: 5)
        XCTAssertEqual(s.units, unet.config.units().map(\.name))
        XCTAssertEqual(s.mse.count, 2)
        XCTAssertTrue(s.mse.allSatisfy { $0.count == s.units.count && $0.allSatisfy { $0.isFinite && $0 >= 0 } })
        XCTAssertTrue(s.mse[0].contains { $0 > 0 }, "skipping a unit changes the output")
        XCTAssertTrue(s.outputMeanSquare.allSatisfy { $0 > 0 })
        XCTAssertEqual(s.rankCorrelation(0, 0), 1, accuracy: 1e-12)
        XCTAssertEqual(s.rankCorrelation(0, 1), s.rankCorrelation(1, 0), accuracy: 1e-12)
        XCTAssertLessThanOrEqual(abs(s.rankCorrelation(0, 1)), 1)

        // The same number by hand for one unit at t = 950.
        var rng = SeededGenerator(seed: 5)
        let (x0, ctx) = data.batch(indices: [0, 1])
        let noise = rng.normals(x0.count)
        let (a, sd) = NoiseSchedule.scaledLinear().coefficients(950)
        let noisy = Tensor(shape: x0.shape, values: (0..<x0.count).map { a * x0.data[$0] + sd * noise[$0] })
        let l = 5
        var o = UNetForwardOptions()
        o.skip = [s.units[l]]
        let dense = unet.forward(sample: noisy, timesteps: [950, 950], context: ctx).sample.scalars
        let skipped = unet.forward(sample: noisy, timesteps: [950, 950], context: ctx, options: o).sample.scalars
        let mse = zip(dense, skipped).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) } / Double(dense.count)
        XCTAssertEqual(s.mse[1][l], mse, accuracy: 1e-12 + 1e-9 * mse)
    }
}
