import ALTER
import Experts
import ExampleSupport
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// `DrawRecorder` (formats/record-draws.md): recording leaves the run unchanged and the record
/// holds what the format says.
final class DrawRecorderTests: XCTestCase {
    /// A run with a recorder ends with bit-identical weights, decisions and metrics to one without.
    func testRecordingDoesNotChangeTheRun() throws {
        let config = Example.config(steps: 8, hypernetSteps: 5)
        let root = try temporaryDirectory(self)
        let plain = RunDirectory(path: root + "/plain"), recorded = RunDirectory(path: root + "/recorded")
        try plain.create(config: config)
        try recorded.create(config: config)
        XCTAssertEqual(try Example.trainer(config).run(in: plain), .finished)
        let ckpt = try Example.checkpoint()
        let recorder = DrawRecorder(steps: 6)
        let trainer = try ALTERTrainer(config: config, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                       data: try TrainingData(contentsOf: URL(fileURLWithPath: Example.data)), recorder: recorder)
        XCTAssertEqual(try trainer.run(in: recorded), .finished)
        for file in ["final/unet/diffusion_pytorch_model.safetensors", "final/decisions.json", "checkpoint/hypernet.safetensors",
                     "checkpoint/unet.safetensors", "checkpoint/unet-adamw.safetensors", "checkpoint/state.json"] {
            let a = try XCTUnwrap(FileManager.default.contents(atPath: plain.path + "/" + file), file)
            let b = try XCTUnwrap(FileManager.default.contents(atPath: recorded.path + "/" + file), file)
            XCTAssertTrue(a == b, "\(file) differs with a recorder")
        }
        func metrics(_ d: RunDirectory) throws -> [StepMetrics] {
            try String(contentsOfFile: d.metricsPath, encoding: .utf8).split(separator: "\n").map {
                var m = try JSONDecoder().decode(StepMetrics.self, from: Data($0.utf8))
                m.seconds = 0
                return m
            }
        }
        let lines = try metrics(recorded)
        XCTAssertEqual(try metrics(plain), lines)

        // The record: the documented names, and values equal to the run's metrics.
        recorder.recordFinal(trainer.finalDecisions)
        let path = root + "/draws.safetensors"
        try recorder.write(to: path)
        let file = try SafeTensorsFile(path: path)
        let names = Set(file.header.tensors.map(\.name))
        XCTAssertEqual(file.header.metadata?["format"], "alter.record-draws")
        XCTAssertEqual(file.header.metadata?["recorded_steps"], "6")
        for name in ["init.generator_input", "init.unit_share", "init.fixed_share", "init.initial_decisions.kept", "init.draw.unit_gumbel",
                     "init.draw.route_gumbel", "final.kept", "final.route"] {
            XCTAssertTrue(names.contains(name), name)
        }
        for p in trainer.hypernet.parameters { XCTAssertTrue(names.contains("init.hypernet." + p.name), p.name) }
        for step in 1...6 {
            let p = String(format: "step.%06d", step)
            for suffix in ["indices", "timesteps", "noise", "decisions.kept", "decisions.route", "loss", "output_kd", "feature_kd",
                           "denoise", "kept_fraction", "grad_norm_unet"] {
                XCTAssertTrue(names.contains(p + "." + suffix), p + "." + suffix)
            }
            let hyper = step <= 5
            XCTAssertEqual(names.contains(p + ".hypernet.unit_gumbel"), hyper, p)
            XCTAssertEqual(names.contains(p + ".grad_norm_hypernet"), hyper, p)
            XCTAssertEqual(names.contains(p + ".next.unit_gumbel"), step < 5, p)
            let loss = try XCTUnwrap(file.header.tensors.first { $0.name == p + ".loss" })
            XCTAssertEqual(loss.dtype, .f64)
            let value = Double(bitPattern: UInt64(littleEndian: file.rawBytes(loss).loadUnaligned(as: UInt64.self)))
            XCTAssertEqual(value, lines[step - 1].loss, p)
        }
        XCTAssertFalse(names.contains("step.000007.loss"))
    }
}
