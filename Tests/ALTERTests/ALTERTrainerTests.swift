import ALTERBench
import ALTER
import Experts
import ExampleSupport
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// End-to-end runs of the ALTER stage on the example model and data (examples/).
final class ALTERTrainerTests: XCTestCase {
    /// A run reaches its MAC target (within `UnitBudget.tolerance`, 0.01), every expert serves a timestep, and fine-tuning
    /// with the frozen masks lowers the held-out output-KD loss of the routed, pruned student.
    func testExampleRunMeetsItsTargets() throws {
        var config = Example.config(steps: 160, hypernetSteps: 100)
        config.settings.keep = 0.7
        let trainer = try Example.trainer(config)
        let dir = RunDirectory(path: try temporaryDirectory(self) + "/run")
        try dir.create(config: config)
        var kdAtFreeze: Double?
        let evalData = trainer.data
        let outcome = try trainer.run(in: dir, progress: { m in
            if m.step == config.hypernetSteps {
                kdAtFreeze = trainer.evaluate(on: evalData, decisions: trainer.decisions, count: 16, seed: 99)
            }
        })
        XCTAssertEqual(outcome, .finished)
        let final = try dir.readDecisions()
        XCTAssertEqual(final.keptFraction, config.settings.keep, accuracy: UnitBudget.tolerance, "kept MAC fraction")
        XCTAssertEqual(final.decisions, trainer.decisions)
        XCTAssertTrue(final.expertShares.allSatisfy { $0 > 0 }, "every expert serves a timestep: \(final.expertShares)")
        XCTAssertTrue(final.decisions.kept.contains { $0.contains(false) }, "something is pruned")
        let start = try XCTUnwrap(kdAtFreeze)
        let end = trainer.evaluate(on: evalData, decisions: final.decisions, count: 16, seed: 99)
        XCTAssertGreaterThan(start, 0)
        XCTAssertLessThan(end, start, "held-out output KD after the mask freeze \(start), at the end \(end)")

        // The run directory: config, one metrics line per step, the final UNet loads as a model.
        let lines = try String(contentsOfFile: dir.metricsPath, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, config.steps)
        XCTAssertEqual(try dir.readConfig(), config)
        var o = LoadOptions()
        o.configPath = nil
        let reloaded = try UNet(checkpoint: UNetCheckpoint(path: dir.finalPath + "/unet", options: o))
        XCTAssertEqual(reloaded.parameters.map(\.value.scalars), trainer.student.parameters.map(\.value.scalars))
    }

    /// Segment routing trains the interval lengths: the run meets --keep, and the frozen routing
    /// table has one contiguous interval per expert that serves a timestep, in expert order.
    func testSegmentRoutingRunIsContiguous() throws {
        var config = Example.config(steps: 40, hypernetSteps: 30)
        config.settings.routing = .segments
        let trainer = try Example.trainer(config)
        let dir = RunDirectory(path: try temporaryDirectory(self) + "/run")
        try dir.create(config: config)
        XCTAssertEqual(try trainer.run(in: dir), .finished)
        let final = try dir.readDecisions()
        XCTAssertEqual(final.keptFraction, config.settings.keep, accuracy: UnitBudget.tolerance, "kept MAC fraction")
        let route = final.decisions.route
        XCTAssertEqual(route, route.sorted(), "routes are non-decreasing in t")
        let segments = RoutingTable.segments(route, experts: config.settings.experts)
        XCTAssertTrue(segments.allSatisfy { $0 <= 1 }, "segments per expert: \(segments)")
        XCTAssertNotEqual(route, FixedRouter(experts: 4, trainSteps: 1000).hardRoutes(), "the interval lengths moved")
    }

    /// Stopping after a checkpoint and resuming gives the same final weights, decisions and
    /// metrics (but the timings) as an uninterrupted run.
    func testResumedRunMatchesUninterruptedRun() throws {
        let config = Example.config(steps: 10, hypernetSteps: 6)
        let root = try temporaryDirectory(self)
        let straight = RunDirectory(path: root + "/a"), resumed = RunDirectory(path: root + "/b")
        try straight.create(config: config)
        XCTAssertEqual(try Example.trainer(config).run(in: straight), .finished)

        try resumed.create(config: config)
        let first = try Example.trainer(config)
        XCTAssertEqual(try first.run(in: resumed, shouldStop: { first.step == 4 }), .interrupted(step: 4))
        let second = try Example.trainer(config)
        XCTAssertEqual(try resumed.restoreCheckpoint(into: second), 4)
        try resumed.truncateMetrics(after: 4)
        XCTAssertEqual(try second.run(in: resumed), .finished)

        for file in ["final/unet/diffusion_pytorch_model.safetensors", "final/decisions.json", "checkpoint/hypernet.safetensors",
                     "checkpoint/unet-adamw.safetensors", "checkpoint/state.json"] {
            let a = try XCTUnwrap(FileManager.default.contents(atPath: straight.path + "/" + file))
            let b = try XCTUnwrap(FileManager.default.contents(atPath: resumed.path + "/" + file))
            XCTAssertTrue(a == b, "\(file) differs")
        }
        func metrics(_ d: RunDirectory) throws -> [StepMetrics] {
            try String(contentsOfFile: d.metricsPath, encoding: .utf8).split(separator: "\n").map {
                var m = try JSONDecoder().decode(StepMetrics.self, from: Data($0.utf8))
                m.seconds = 0
                return m
            }
        }
        XCTAssertEqual(try metrics(straight), try metrics(resumed))
        XCTAssertEqual(try metrics(straight).count, 10)
    }

    /// Bad requests fail before training, with errors that say what is wrong.
    func testBadRequestsFailBeforeTraining() throws {
        func expect(_ config: CompressionConfig, data: String? = nil, _ check: (CompressionError) -> Bool, line: UInt = #line) {
            do {
                let ckpt = try Example.checkpoint()
                _ = try ALTERTrainer(config: config, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                     data: try TrainingData(contentsOf: URL(fileURLWithPath: data ?? Example.data)))
                XCTFail("no error", line: line)
            } catch let e as CompressionError {
                XCTAssertTrue(check(e), "\(e)", line: line)
            } catch { XCTFail("\(error)", line: line) }
        }
        var c = Example.config(steps: 5, hypernetSteps: 2)
        c.settings.keep = 0
        expect(c) { $0 == .keepOutOfRange(0) }
        c.settings.keep = 1.2
        expect(c) { $0 == .keepOutOfRange(1.2) }
        c.settings.keep = 0.01
        expect(c) { if case .keepBelowFixed = $0 { return true } else { return false } }
        c.settings.keep = 0.65
        c.settings.experts = 1001
        expect(c) { $0 == .tooManyExperts(1001, timesteps: 1000) }

        // Data that does not fit the model: a context dimension of 8 (the model takes 32), and
        // latents of 3 channels.
        let dir = try temporaryDirectory(self)
        for (name, latents, context) in [("ctx", [2, 4, 16, 16], [2, 5, 8]), ("chan", [2, 3, 16, 16], [2, 5, 32])] {
            let path = dir + "/\(name).safetensors"
            let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "latents", dtype: .f32, shape: latents),
                                                               TensorSpec(name: "context", dtype: .f32, shape: context)])
            for spec in w.order { try w.write(spec.name, floats: Array(repeating: 0.5, count: spec.elementCount)) }
            try w.finish()
            let msg = name == "ctx" ? "32" : "4 latent channels"
            expect(Example.config(steps: 5, hypernetSteps: 2), data: path) {
                if case .data(let s) = $0 { return s.contains(path) && s.contains(msg) } else { return false }
            }
        }
    }
}
