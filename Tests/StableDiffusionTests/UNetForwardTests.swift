import Foundation
import NN
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// The UNet forward against diffusers (float64 reference, Tests/Fixtures/forward): plain, gated and
/// hard-skip outputs and the tapped features, relative L2 error at most 1e-5 each.
final class UNetForwardTests: XCTestCase {
    static let cases = ["tiny-sd2", "tiny-sd2-noupcast", "tiny-sd1-conv", "small-l1"]
    static let tolerance: Float = 1e-5

    /// Parameters stored inline in a fixture file as `weight.<name>`.
    struct InlineWeights: ParameterSource {
        let file: SafeTensorsFile
        func tensor(_ name: String, shape: [Int]) throws -> Tensor {
            let info = try file.require("weight." + name)
            guard info.shape == shape else { throw ParameterError.shape(name, expected: shape, actual: info.shape) }
            return Tensor(shape: shape, values: try file.floats("weight." + name))
        }
    }

    struct Case {
        let name: String
        let file: SafeTensorsFile
        let unet: UNet
        let sample: Tensor
        let timesteps: [Float]
        let context: Tensor

        func tensor(_ key: String) throws -> Tensor {
            let info = try file.require(key)
            return Tensor(shape: info.shape, values: try file.floats(key))
        }
    }

    func load(_ name: String) throws -> Case {
        let file = try SafeTensorsFile(path: Fixtures.path("forward/\(name).safetensors"))
        let meta = try XCTUnwrap(file.metadata)
        let config = try UNetConfig(diffusersJSON: Data(try XCTUnwrap(meta["config"]).utf8), source: name)
        let weights = try XCTUnwrap(meta["weights"])
        let unet: UNet
        if weights == "inline" {
            unet = try UNet(config: config, parameters: InlineWeights(file: file))
        } else {
            let repoRoot = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
            let ckpt = try UNetCheckpoint(path: repoRoot.appendingPathComponent(weights).path, options: LoadOptions())
            unet = try UNet(config: config, parameters: ckpt)
        }
        let c = Case(name: name, file: file, unet: unet, sample: Tensor(shape: [1], values: [0]), timesteps: [], context: Tensor(shape: [1], values: [0]))
        return Case(name: name, file: file, unet: unet, sample: try c.tensor("sample"),
                    timesteps: try c.tensor("timestep").scalars, context: try c.tensor("context"))
    }

    func testUnitListMatchesDiffusers() throws {
        for name in Self.cases {
            let c = try load(name)
            let expected = try XCTUnwrap(c.file.metadata?["units"]).split(separator: ",").map(String.init)
            XCTAssertEqual(c.unet.units.map(\.name), expected, name)
        }
    }

    func testPlainForwardAndFeatures() throws {
        for name in Self.cases {
            let c = try load(name)
            var options = UNetForwardOptions()
            options.tapFeatures = true
            let out = c.unet.forward(sample: c.sample, timesteps: c.timesteps, context: c.context, options: options)
            try assertClose(out.sample, c.tensor("out"), "\(name) out")
            XCTAssertEqual(out.features.map(\.name), c.unet.config.featureNames, name)
            for f in out.features { try assertClose(f.tensor, c.tensor("feature.\(f.name)"), "\(name) feature.\(f.name)") }
        }
    }

    func testGatedForward() throws {
        for name in Self.cases {
            let c = try load(name)
            var options = UNetForwardOptions()
            options.tapFeatures = true
            for info in c.file.tensors where info.name.hasPrefix("gate.") {
                options.gates[String(info.name.dropFirst(5))] = try c.file.floats(info.name)
            }
            XCTAssertEqual(options.gates.count, c.unet.units.count, "\(name): a gate per unit")
            let values = options.gates.values.flatMap { $0 }
            XCTAssertTrue(values.contains(0) && values.contains(1), "\(name): gates include exact 0 and 1")
            try c.unet.check(options, batch: c.sample.shape[0])
            let out = c.unet.forward(sample: c.sample, timesteps: c.timesteps, context: c.context, options: options)
            try assertClose(out.sample, c.tensor("out_gated"), "\(name) out_gated")
            for f in out.features { try assertClose(f.tensor, c.tensor("gated_feature.\(f.name)"), "\(name) gated_feature.\(f.name)") }
        }
    }

    func testHardSkipForward() throws {
        for name in Self.cases {
            let c = try load(name)
            var options = UNetForwardOptions()
            options.tapFeatures = true
            options.skip = Set(try XCTUnwrap(c.file.metadata?["skip"]).split(separator: ",").map(String.init))
            XCTAssertFalse(options.skip.isEmpty)
            try c.unet.check(options, batch: c.sample.shape[0])
            let out = c.unet.forward(sample: c.sample, timesteps: c.timesteps, context: c.context, options: options)
            try assertClose(out.sample, c.tensor("out_skip"), "\(name) out_skip")
            for f in out.features { try assertClose(f.tensor, c.tensor("skip_feature.\(f.name)"), "\(name) skip_feature.\(f.name)") }
        }
    }

    func testSkippingEveryUnitEqualsAllGatesZero() throws {
        let c = try load("tiny-sd2")
        var skip = UNetForwardOptions(), zero = UNetForwardOptions()
        skip.skip = Set(c.unet.units.map(\.name))
        for u in c.unet.units { zero.gates[u.name] = Array(repeating: 0, count: c.sample.shape[0]) }
        let a = c.unet.forward(sample: c.sample, timesteps: c.timesteps, context: c.context, options: skip)
        let b = c.unet.forward(sample: c.sample, timesteps: c.timesteps, context: c.context, options: zero)
        try assertClose(a.sample, b.sample, "skip all vs gates 0")
    }

    func testBadRequestsAreTypedErrors() throws {
        let c = try load("tiny-sd2")
        var o = UNetForwardOptions()
        o.skip = ["down_blocks.1.resnets.0"]  // channel-changing resnet: not a unit
        XCTAssertThrowsError(try c.unet.check(o, batch: 3)) { XCTAssertEqual($0 as? UNetError, .notAUnit("down_blocks.1.resnets.0")) }
        o = UNetForwardOptions()
        o.gates["mid_block.resnets.0"] = [0.5]
        XCTAssertThrowsError(try c.unet.check(o, batch: 3)) {
            XCTAssertEqual($0 as? UNetError, .gateCount(unit: "mid_block.resnets.0", expected: 3, actual: 1))
        }
        o.gates["mid_block.resnets.0"] = [0.5, 1.5, 0]
        XCTAssertThrowsError(try c.unet.check(o, batch: 3)) { XCTAssertEqual($0 as? UNetError, .gateRange(unit: "mid_block.resnets.0")) }
        XCTAssertThrowsError(try c.unet.check(sample: [3, 4, 6, 8], timesteps: 3, context: [3, 5, 16]))
        XCTAssertThrowsError(try c.unet.check(sample: [3, 4, 8, 8], timesteps: 3, context: [3, 5, 15]))
        XCTAssertNoThrow(try c.unet.check(sample: [3, 4, 8, 8], timesteps: 3, context: [3, 5, 16]))
    }

    /// Relative L2 error at most `tolerance`; on failure, names the worst element.
    func assertClose(_ actual: Tensor, _ expected: Tensor, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(actual.shape, expected.shape, "\(what): shape", file: file, line: line)
        guard actual.shape == expected.shape else { return }
        var diff = 0.0, norm = 0.0, worst = 0, worstErr = -1.0
        for i in 0..<actual.count {
            let a = Double(actual.data[i]), e = Double(expected.data[i])
            diff += (a - e) * (a - e)
            norm += e * e
            let err = abs(a - e) / (1e-6 + 1e-4 * abs(e))
            if err > worstErr { worstErr = err; worst = i }
        }
        let rel = (diff / max(norm, 1e-30)).squareRoot()
        XCTAssertLessThanOrEqual(rel, Double(Self.tolerance), String(
            format: "%@: relative L2 error %.3g; worst element %d: %.8g vs reference %.8g",
            what, rel, worst, actual.data[worst], expected.data[worst]), file: file, line: line)
    }
}
