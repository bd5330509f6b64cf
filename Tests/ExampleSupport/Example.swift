import ALTER
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// The example checkpoint and training data in examples/, for tests of every target.
public enum Example {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static var model: String { root.appendingPathComponent("examples/sd21-tiny.safetensors").path }
    public static var config: String { root.appendingPathComponent("examples/sd21-tiny.config.json").path }
    public static var data: String { root.appendingPathComponent("examples/sd21-tiny-data.safetensors").path }
    public static var inputs: String { root.appendingPathComponent("examples/sd21-tiny-inputs.safetensors").path }

    public static func checkpoint() throws -> UNetCheckpoint {
        var o = LoadOptions()
        o.configPath = config
        o.allowUnused = true
        return try UNetCheckpoint(path: model, options: o)
    }

    /// A trainer on the example: separate student and teacher.
    public static func trainer(_ config: CompressionConfig) throws -> ALTERTrainer {
        let ckpt = try checkpoint()
        return try ALTERTrainer(config: config, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                data: try TrainingData(contentsOf: URL(fileURLWithPath: data)))
    }

    /// A finished ALTER run on the example at `path` (its parent is created): `steps` steps,
    /// `hypernetSteps` of them with the hypernetwork, batch 2, the other settings the defaults unless
    /// `configure` changes them.
    public static func finishedRun(at path: String, steps: Int, hypernetSteps: Int,
                                   configure: (inout CompressionConfig) -> Void = { _ in }) throws -> RunDirectory {
        var c = CompressionConfig(model: model, data: data, steps: steps, hypernetSteps: hypernetSteps)
        c.configPath = config
        c.batch = 2
        configure(&c)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let dir = RunDirectory(path: path)
        try dir.create(config: c)
        XCTAssertEqual(try trainer(c).run(in: dir), .finished)
        return dir
    }

    public static func config(steps: Int, hypernetSteps: Int, experts: Int = 4, keep: Double = 0.65) -> CompressionConfig {
        var c = CompressionConfig(model: model, data: data, steps: steps, hypernetSteps: hypernetSteps)
        c.settings.experts = experts
        c.settings.keep = keep
        c.settings.warmupSteps = 5
        c.settings.learningRateUNet = 1e-4
        c.settings.learningRateHypernet = 1e-2
        c.batch = 2
        c.seed = 7
        c.configPath = config
        return c
    }
}

/// A fresh temporary directory, removed at the end of the test.
public func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}
