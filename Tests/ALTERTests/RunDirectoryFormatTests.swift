@testable import ALTER
import ExampleSupport
import Foundation
import XCTest

/// The run directory's JSON files (formats/run-directory.md, version 2) against their golden key
/// lists, and version 1 runs, which `--resume` still continues.
final class RunDirectoryFormatTests: XCTestCase {
    func testRunFilesMatchTheirGoldenKeys() throws {
        let config = Example.config(steps: 6, hypernetSteps: 2)
        let dir = RunDirectory(path: try temporaryDirectory(self) + "/run")
        try dir.create(config: config)
        XCTAssertEqual(try Example.trainer(config).run(in: dir), .finished)
        let read = { (p: String) throws -> Data in try XCTUnwrap(FileManager.default.contents(atPath: p), p) }
        try GoldenKeys.check(json: try read(dir.configPath), name: "run-config")
        try GoldenKeys.check(json: try read(dir.checkpointPath + "/state.json"), name: "run-state")
        try GoldenKeys.check(json: try read(dir.decisionsPath), name: "run-decisions")
        let lines = try String(contentsOfFile: dir.metricsPath, encoding: .utf8).split(separator: "\n")
        try GoldenKeys.check(json: Data(lines[0].utf8), name: "run-metrics-hypernet-phase")
        try GoldenKeys.check(json: Data(lines[3].utf8), name: "run-metrics-frozen")
    }

    /// A version 1 run (camelCase config and state, metrics keys without `_loss`) stopped after a
    /// checkpoint resumes to the same result as an uninterrupted version 2 run, and its files are
    /// written back in version 2.
    func testVersion1RunResumes() throws {
        let config = Example.config(steps: 6, hypernetSteps: 4)
        let root = try temporaryDirectory(self)
        let straight = RunDirectory(path: root + "/a"), old = RunDirectory(path: root + "/b")
        try straight.create(config: config)
        XCTAssertEqual(try Example.trainer(config).run(in: straight), .finished)
        try old.create(config: config)
        let first = try Example.trainer(config)
        XCTAssertEqual(try first.run(in: old, shouldStop: { first.step == 3 }), .interrupted(step: 3))

        // Rewrite the stopped run as version 1.
        let toVersion1 = Dictionary(uniqueKeysWithValues: RunFileVersion.version1Keys.map { ($1, $0) })
        func downgrade(_ path: String) throws {
            var text = try String(contentsOfFile: path, encoding: .utf8)
            for (new, v1) in toVersion1 { text = text.replacingOccurrences(of: "\"\(new)\"", with: "\"\(v1)\"") }
            text = text.replacingOccurrences(of: "\"format\" : \"alter.run\",", with: "")
                .replacingOccurrences(of: "\"format_version\" : 2,", with: "")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        for path in [old.configPath, old.checkpointPath + "/state.json", old.metricsPath] { try downgrade(path) }
        let v1Config = try String(contentsOfFile: old.configPath, encoding: .utf8)
        XCTAssertTrue(v1Config.contains("\"hypernetSteps\"") && !v1Config.contains("\"format\""), v1Config)
        XCTAssertTrue(try String(contentsOfFile: old.metricsPath, encoding: .utf8).contains("\"output_kd\""))

        XCTAssertEqual(try old.readConfig(), config)
        let second = try Example.trainer(config)
        XCTAssertEqual(try old.restoreCheckpoint(into: second), 3)
        try old.truncateMetrics(after: 3)
        try old.writeJSON(config, to: old.configPath)
        XCTAssertEqual(try second.run(in: old), .finished)
        for file in ["final/unet/diffusion_pytorch_model.safetensors", "final/decisions.json", "checkpoint/state.json"] {
            let a = try XCTUnwrap(FileManager.default.contents(atPath: straight.path + "/" + file))
            let b = try XCTUnwrap(FileManager.default.contents(atPath: old.path + "/" + file))
            XCTAssertTrue(a == b, "\(file) differs")
        }
        let metrics = try String(contentsOfFile: old.metricsPath, encoding: .utf8)
        XCTAssertEqual(metrics.split(separator: "\n").count, 6)
        XCTAssertFalse(metrics.contains("\"output_kd\""), "version 1 metrics lines are rewritten")
        XCTAssertTrue(try String(contentsOfFile: old.configPath, encoding: .utf8).contains("\"format_version\" : 2"))
    }
}
