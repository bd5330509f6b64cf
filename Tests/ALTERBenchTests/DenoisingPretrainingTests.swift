import ALTERBench
import ALTER
import ExampleSupport
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// Plain denoising training (the pre-training of `alter bench routing`) and model copies.
final class DenoisingPretrainingTests: XCTestCase {
    /// A copy has the same weights in separate storage and computes the same output.
    func testCopyIsIndependent() throws {
        let unet = try UNet(checkpoint: Example.checkpoint())
        let copy = try unet.copy()
        XCTAssertEqual(copy.config, unet.config)
        XCTAssertEqual(copy.parameters.map(\.name), unet.parameters.map(\.name))
        XCTAssertEqual(copy.parameters.map(\.value.scalars), unet.parameters.map(\.value.scalars))
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        let (x, ctx) = data.batch(indices: [0, 1])
        XCTAssertEqual(copy.forward(sample: x, timesteps: [10, 900], context: ctx).sample.scalars,
                       unet.forward(sample: x, timesteps: [10, 900], context: ctx).sample.scalars)
        copy.parameters[0].value.data[0] += 1
        XCTAssertNotEqual(copy.parameters[0].value.scalars, unet.parameters[0].value.scalars)
    }

    /// Denoising training lowers the denoising loss, is deterministic per seed and trains only the
    /// model it is given.
    func testDenoisingTrainingLowersTheLoss() throws {
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        var pre = DenoisingPretraining(steps: 60)
        pre.batch = 4
        pre.warmupSteps = 5
        pre.seed = 3
        let a = try UNet(checkpoint: Example.checkpoint()), b = try a.copy(), untouched = try a.copy()
        let before = untouched.parameters.map(\.value.scalars)
        var seen: [Int] = []
        let losses = pre.train(a, on: data) { step, _ in seen.append(step) }
        XCTAssertEqual(seen, Array(1...60))
        XCTAssertEqual(losses.count, 60)
        XCTAssertTrue(losses.allSatisfy { $0.isFinite && $0 > 0 })
        let first = losses.prefix(15).reduce(0, +) / 15, last = losses.suffix(15).reduce(0, +) / 15
        XCTAssertLessThan(last, 0.8 * first, "denoising loss: first 15 steps \(first), last 15 \(last)")
        XCTAssertEqual(pre.train(b, on: data), losses)
        XCTAssertEqual(a.parameters.map(\.value.scalars), b.parameters.map(\.value.scalars))
        XCTAssertEqual(untouched.parameters.map(\.value.scalars), before)
    }
}
