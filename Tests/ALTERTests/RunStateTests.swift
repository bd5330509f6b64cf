import ALTER
import ExampleSupport
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// Runs a user can always get out of: a non-finite loss stops with a checkpoint of the last good
/// step, a run without a checkpoint is recognisable, a run directory is locked while trained, and a
/// refused configuration leaves no directory behind.
final class RunStateTests: XCTestCase {
    /// A gradient turned NaN at step 3 (through the gradient hook, where a data-parallel all-reduce
    /// would go) stops the run; the checkpoint holds step 2 exactly as an uninterrupted run has it.
    func testNonFiniteGradientStopsAfterACheckpointOfTheLastGoodStep() throws {
        let config = Example.config(steps: 5, hypernetSteps: 2)
        let root = try temporaryDirectory(self)
        let good = RunDirectory(path: root + "/good"), bad = RunDirectory(path: root + "/bad")
        try good.create(config: config)
        let reference = try Example.trainer(config)
        for _ in 0..<2 { try good.append(try reference.trainStep()) }
        try good.writeCheckpoint(reference)

        try bad.create(config: config)
        let trainer = try Example.trainer(config)
        trainer.gradientHook = { phase, parameters in
            if phase == .unet, trainer.step == 2, let g = parameters[0].grad { g.data[0] = .nan }
        }
        XCTAssertThrowsError(try trainer.run(in: bad)) { e in
            guard case CompressionError.nonFinite(let step, let what, let clean) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(step, 3)
            XCTAssertTrue(clean)
            XCTAssertTrue(what.contains("gradient"), what)
            XCTAssertTrue("\(e)".contains("checkpoint of step 2"), "\(e)")
        }
        XCTAssertEqual(trainer.step, 2)
        XCTAssertTrue(bad.hasCheckpoint)
        for file in ["unet.safetensors", "unet-adamw.safetensors", "hypernet.safetensors", "state.json"] {
            let a = try XCTUnwrap(FileManager.default.contents(atPath: good.checkpointPath + "/" + file))
            let b = try XCTUnwrap(FileManager.default.contents(atPath: bad.checkpointPath + "/" + file))
            XCTAssertTrue(a == b, "\(file) is the last good step's")
        }
        XCTAssertEqual(try String(contentsOfFile: bad.metricsPath, encoding: .utf8).split(separator: "\n").count, 2)
    }

    /// Training data with huge (finite) values: the first step's loss is not finite; the run stops
    /// with a message saying so, writes no metrics line and no checkpoint.
    func testNonFiniteLossAtTheFirstStep() throws {
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        let huge = Tensor(shape: data.latents.shape, values: [Float](repeating: 3e38, count: data.latents.count))
        let hostile = try TrainingData(latents: huge, context: data.context)
        let config = Example.config(steps: 6, hypernetSteps: 1)
        let ckpt = try Example.checkpoint()
        let trainer = try ALTERTrainer(config: config, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt), data: hostile)
        let dir = RunDirectory(path: try temporaryDirectory(self) + "/run")
        try dir.create(config: config)
        XCTAssertThrowsError(try trainer.run(in: dir)) { e in
            guard case CompressionError.nonFinite(1, _, _) = e else { return XCTFail("\(e)") }
            XCTAssertTrue("\(e)".contains("not finite") || "\(e)".contains("nan") || "\(e)".contains("inf"), "\(e)")
        }
        XCTAssertFalse(dir.hasCheckpoint)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.metricsPath), "no metrics line was written")
    }

    func testRunDirectoryIsLockedAndRefusedConfigsLeaveNothing() throws {
        let root = try temporaryDirectory(self)
        let dir = RunDirectory(path: root + "/run")
        var config = Example.config(steps: 6, hypernetSteps: 2)
        config.settings.learningRateHypernet = .infinity
        XCTAssertThrowsError(try dir.create(config: config)) { XCTAssertTrue("\($0)".contains("lr_hypernet"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.path), "no empty run directory left")

        config.settings.learningRateHypernet = 1e-2
        try dir.create(config: config)
        XCTAssertFalse(dir.hasCheckpoint)
        let lock = try dir.lock()
        XCTAssertThrowsError(try dir.lock()) { XCTAssertTrue("\($0)".contains("another alter process"), "\($0)") }
        lock.release()
        XCTAssertNoThrow(try dir.lock())
        XCTAssertThrowsError(try dir.create(config: config)) { XCTAssertTrue("\($0)".contains("already holds a run"), "\($0)") }
        let file = root + "/file"
        FileManager.default.createFile(atPath: file, contents: Data())
        XCTAssertThrowsError(try RunDirectory(path: file).create(config: config)) { XCTAssertTrue("\($0)".contains("not a directory"), "\($0)") }
    }

    func testSettingsAreValidatedByField() {
        func field(_ change: (inout CompressionConfig) -> Void) -> String? {
            var c = Example.config(steps: 10, hypernetSteps: 3)
            change(&c)
            do { try c.validate(); return nil } catch { return error.field }
        }
        XCTAssertEqual(field { $0.settings.learningRateUNet = .nan }, "lr_unet")
        XCTAssertEqual(field { $0.settings.ratioWeight = -5 }, "ratio_weight")
        XCTAssertEqual(field { $0.settings.balanceWeight = .infinity }, "balance_weight")
        XCTAssertEqual(field { $0.settings.warmupSteps = 100 }, "warmup_steps")
        XCTAssertEqual(field { $0.settings.beta2 = 1 }, "beta2")
        XCTAssertEqual(field { $0.checkpointMinutes = -1 }, "checkpoint_minutes")
        XCTAssertEqual(field { $0.settings.keep = .nan }, "keep")
        XCTAssertNil(field { _ in })
    }
}
