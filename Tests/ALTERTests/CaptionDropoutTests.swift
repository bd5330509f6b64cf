@testable import ALTER
import ExampleSupport
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// `--caption-dropout` (ALTERSettings.captionDropout): a dropped sample's context is the data's
/// `uncond`, for the student and the teacher alike; the flags come from the data stream after the
/// noise and are recorded; without dropout nothing more is drawn.
final class CaptionDropoutTests: XCTestCase {
    func data() throws -> TrainingData { try TrainingData(contentsOf: URL(fileURLWithPath: Example.data)) }

    /// Each batch row's context is either its sample's caption or `uncond`, as the flags say; with
    /// 0.5 over 40 draws of 2 both kinds occur; with 1 every row is `uncond`.
    func testDroppedRowsHoldTheUnconditionalContext() throws {
        let d = try data()
        let uncond = try XCTUnwrap(d.uncond, "the example data has uncond")
        for p in [0.5, 1.0] {
            var c = Example.config(steps: 8, hypernetSteps: 2)
            c.settings.captionDropout = p
            let trainer = try Example.trainer(c)
            var dropped = 0, kept = 0
            for _ in 0..<40 {
                let batch = trainer.drawBatch()
                let flags = try XCTUnwrap(batch.dropped)
                XCTAssertEqual(flags.count, c.batch)
                let (_, captions) = d.batch(indices: batch.indices)
                let per = uncond.count
                for (k, drop) in flags.enumerated() {
                    let row = Array(UnsafeBufferPointer(start: batch.context.data + k * per, count: per))
                    let expected = drop ? uncond.scalars : Array(UnsafeBufferPointer(start: captions.data + k * per, count: per))
                    XCTAssertEqual(row, expected, "p \(p), row \(k), dropped \(drop)")
                    if drop { dropped += 1 } else { kept += 1 }
                }
            }
            if p == 1 { XCTAssertEqual(kept, 0) } else { XCTAssertGreaterThan(dropped, 0); XCTAssertGreaterThan(kept, 0) }
        }
    }

    /// Without dropout the data stream draws exactly what it drew before the option existed: the
    /// same indices, timesteps and noise as a run with dropout, whose flags follow them.
    func testDropoutDrawsAfterTheNoiseAndOnlyWhenEnabled() throws {
        let plain = try Example.trainer(Example.config(steps: 8, hypernetSteps: 2))
        var c = Example.config(steps: 8, hypernetSteps: 2)
        c.settings.captionDropout = 0.3
        let withDropout = try Example.trainer(c)
        let a = plain.drawBatch(), b = withDropout.drawBatch()
        XCTAssertNil(a.dropped)
        XCTAssertEqual(a.indices, b.indices)
        XCTAssertEqual(a.timesteps, b.timesteps)
        XCTAssertEqual(a.noise.scalars, b.noise.scalars)
    }

    /// Training with dropout runs, records the flags, and a fully dropped batch trains the UNet on
    /// the unconditional context only (the teacher sees the same context: output KD starts at 0).
    func testRunRecordsFlags() throws {
        var c = Example.config(steps: 8, hypernetSteps: 2)
        c.settings.captionDropout = 1
        let recorder = DrawRecorder(steps: 3)
        let ckpt = try Example.checkpoint()
        let trainer = try ALTERTrainer(config: c, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                       data: try data(), recorder: recorder)
        let first = try trainer.trainStep()
        XCTAssertEqual(first.outputKD, 0, accuracy: 1e-12, "student = teacher on the same context at step 1")
        _ = try trainer.trainStep()
        recorder.recordFinal(trainer.finalDecisions)
        let path = try temporaryDirectory(self) + "/draws.safetensors"
        try recorder.write(to: path)
        let file = try SafeTensorsFile(path: path)
        for step in 1...2 {
            let info = try XCTUnwrap(file.info(String(format: "step.%06d.dropped", step)))
            XCTAssertEqual(info.dtype, .u8)
            XCTAssertEqual(info.shape, [c.batch])
            XCTAssertEqual(Array(file.rawBytes(info)), [UInt8](repeating: 1, count: c.batch))
        }
    }

    /// Data without `uncond` cannot drop captions: refused before training, naming the file.
    func testNeedsUncond() throws {
        let d = try data()
        let noUncond = try TrainingData(latents: d.latents, context: d.context, path: "no-uncond.safetensors")
        var c = Example.config(steps: 8, hypernetSteps: 2)
        c.settings.captionDropout = 0.1
        let ckpt = try Example.checkpoint()
        XCTAssertThrowsError(try ALTERTrainer(config: c, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                              data: noUncond)) { e in
            let error = e as? CompressionError
            XCTAssertEqual(error?.field, "caption_dropout")
            XCTAssertTrue("\(e)".contains("no-uncond.safetensors"), "\(e)")
        }
        c.settings.captionDropout = 0
        XCTAssertNoThrow(try ALTERTrainer(config: c, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt), data: noUncond))
    }

    /// A probability outside [0, 1] is refused; a config.json without the key (runs written
    /// before it existed) reads as 0 and is written back with it.
    func testValidationAndOlderConfigs() throws {
        for bad in [-0.1, 1.5, Double.nan] {
            var c = Example.config(steps: 8, hypernetSteps: 2)
            c.settings.captionDropout = bad
            XCTAssertThrowsError(try c.validate(), "\(bad)") { XCTAssertEqual(($0 as? CompressionError)?.field, "caption_dropout") }
        }
        var c = Example.config(steps: 8, hypernetSteps: 2)
        c.settings.captionDropout = 0.25
        let json = try JSONEncoder().encode(c)
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        var settings = try XCTUnwrap(object["settings"] as? [String: Any])
        XCTAssertEqual(settings["caption_dropout"] as? Double, 0.25)
        XCTAssertEqual(try JSONDecoder().decode(CompressionConfig.self, from: json), c)
        settings.removeValue(forKey: "caption_dropout")
        object["settings"] = settings
        let older = try JSONDecoder().decode(CompressionConfig.self, from: try JSONSerialization.data(withJSONObject: object))
        XCTAssertEqual(older.settings.captionDropout, 0)
        settings.removeValue(forKey: "keep")
        object["settings"] = settings
        XCTAssertThrowsError(try JSONDecoder().decode(CompressionConfig.self, from: try JSONSerialization.data(withJSONObject: object)),
                             "every other key stays required")
    }
}
