import ALTER
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// The example checkpoint and training data in examples/.
enum Example {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var model: String { root.appendingPathComponent("examples/sd21-tiny.safetensors").path }
    static var config: String { root.appendingPathComponent("examples/sd21-tiny.config.json").path }
    static var data: String { root.appendingPathComponent("examples/sd21-tiny-data.safetensors").path }

    static func checkpoint() throws -> UNetCheckpoint {
        var o = LoadOptions()
        o.configPath = config
        o.allowUnused = true
        return try UNetCheckpoint(path: model, options: o)
    }

    /// A trainer on the example: separate student and teacher.
    static func trainer(_ config: CompressionConfig) throws -> ALTERTrainer {
        let ckpt = try checkpoint()
        return try ALTERTrainer(config: config, student: try UNet(checkpoint: ckpt), teacher: try UNet(checkpoint: ckpt),
                                data: try TrainingData(contentsOf: URL(fileURLWithPath: data)))
    }

    static func config(steps: Int, hypernetSteps: Int, experts: Int = 4, keep: Double = 0.65) -> CompressionConfig {
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
func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}
