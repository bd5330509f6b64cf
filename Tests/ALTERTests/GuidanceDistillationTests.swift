@testable import ALTER
import ExampleSupport
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// Guidance distillation (`--guidance-kd-weight`, docs/method.md section 5): the batch holds each
/// sample with its context, then with `uncond`; the term is MSE of the guided outputs over g^2.
final class GuidanceDistillationTests: XCTestCase {
    func config(weight: Double = 1, scale: Double = 7.5) -> CompressionConfig {
        var c = Example.config(steps: 8, hypernetSteps: 2)
        c.settings.guidanceKDWeight = weight
        c.settings.guidanceKDScale = scale
        return c
    }

    /// The doubled batch: the same noisy latents, timesteps and targets twice; the second half's
    /// context is `uncond`; the draws are those of a plain run.
    func testBatchHoldsBothHalves() throws {
        let trainer = try Example.trainer(config())
        let plain = try Example.trainer(Example.config(steps: 8, hypernetSteps: 2))
        let b = trainer.drawBatch(), p = plain.drawBatch()
        let n = p.noisy.shape[0]
        XCTAssertEqual(b.noisy.shape, [2 * n] + p.noisy.shape.dropFirst())
        XCTAssertEqual(b.timesteps, p.timesteps + p.timesteps)
        XCTAssertEqual(b.indices, p.indices)
        let (c0, c1) = ALTERTrainer.halves(b.context), (x0, x1) = ALTERTrainer.halves(b.noisy), (t0, t1) = ALTERTrainer.halves(b.target)
        XCTAssertEqual(c0.scalars, p.context.scalars)
        let uncond = try XCTUnwrap(trainer.data.uncond)
        XCTAssertEqual(c1.scalars, (0..<n).flatMap { _ in uncond.scalars })
        XCTAssertEqual(x0.scalars, p.noisy.scalars)
        XCTAssertEqual(x1.scalars, p.noisy.scalars)
        XCTAssertEqual(t0.scalars, t1.scalars)
    }

    /// Step 1 (student = teacher): every term is 0; the terms but the guided one equal a plain
    /// run's on the conditional half; later the guided term is reported and positive. The value
    /// is the formula's, recomputed from both models' outputs.
    func testTermValue() throws {
        let trainer = try Example.trainer(config(weight: 0.5, scale: 3))
        let first = try trainer.trainStep()
        XCTAssertEqual(try XCTUnwrap(first.guidanceKD), 0, accuracy: 1e-12)
        XCTAssertEqual(first.outputKD, 0, accuracy: 1e-12)
        _ = try trainer.trainStep()
        let batch = trainer.drawBatch()
        let teacherOut = trainer.teacher.forward(sample: batch.noisy, timesteps: batch.timesteps, context: batch.context)
        let studentOut = trainer.student.forward(sample: batch.noisy, timesteps: batch.timesteps, context: batch.context)
        let g: Float = 3
        let (sc, su) = ALTERTrainer.halves(studentOut.sample), (tc, tu) = ALTERTrainer.halves(teacherOut.sample)
        var sum = 0.0
        for i in 0..<sc.count {
            let d = Double(((1 - g) * su.data[i] + g * sc.data[i]) - ((1 - g) * tu.data[i] + g * tc.data[i]))
            sum += d * d
        }
        let expected = sum / Double(sc.count) / Double(g * g)
        let tape = Tape(recording: false)
        let out = trainer.student.forward(on: tape, sample: tape.constant(batch.noisy), timesteps: batch.timesteps,
                                          context: tape.constant(batch.context), gates: [:], skip: [], tapFeatures: true)
        let o = trainer.objective(tape, out, teacher: trainer.teacher.forward(sample: batch.noisy, timesteps: batch.timesteps, context: batch.context,
                                                                              options: { var x = UNetForwardOptions(); x.tapFeatures = true; return x }()),
                                  target: batch.target)
        XCTAssertGreaterThan(expected, 0)
        XCTAssertEqual(try XCTUnwrap(o.guidanceKD), expected, accuracy: 1e-5 * expected)
    }

    /// Without `uncond` in the data, or with a non-positive scale, the run is refused.
    func testRefusals() throws {
        var c = config()
        c.settings.guidanceKDScale = 0
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? CompressionError)?.field, "guidance_kd_scale") }
        let d = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        let noUncond = try TrainingData(latents: d.latents, context: d.context, path: "no-uncond.safetensors")
        let ckpt = try Example.checkpoint()
        XCTAssertThrowsError(try ALTERTrainer(config: config(), student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                              data: noUncond)) { XCTAssertEqual(($0 as? CompressionError)?.field, "guidance_kd_weight") }
    }
}
