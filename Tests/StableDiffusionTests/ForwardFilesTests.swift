import Foundation
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// The files of `alter forward`: inputs checked against the model with errors that name the file,
/// gates checked per unit, outputs written atomically and read back equal.
final class ForwardFilesTests: XCTestCase {
    func unet() throws -> UNet {
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Diffusers, options: LoadOptions())
        return try UNet(config: ckpt.config, parameters: ckpt)
    }

    func write(_ tensors: [(String, DType, [Int], [Float])], to path: String) throws {
        let w = try SafeTensorsWriter(path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: $0.1, shape: $0.2) })
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.0, $0.3) })
        for spec in w.order {
            let values = try XCTUnwrap(byName[spec.name])
            if spec.dtype == .i64 {
                let ints = values.map { Int64($0) }
                try ints.withUnsafeBytes { try w.write(spec.name, bytes: $0) }
            } else {
                try w.write(spec.name, floats: values)
            }
        }
        try w.finish()
    }

    func testRoundTripWithIntegerTimestepsAndFeatures() throws {
        let dir = try TemporaryDirectory()
        let model = try unet()
        let inputs = dir.path + "/in.safetensors", out = dir.path + "/out.safetensors"
        let sample: [Float] = (0..<512).map { (i: Int) -> Float in Float((i * 37) % 23) / 23 - 0.5 }
        let context: [Float] = (0..<96).map { (i: Int) -> Float in Float((i * 11) % 17) / 17 - 0.5 }
        try write([("sample", .f32, [2, 4, 8, 8], sample), ("timestep", .i64, [2], [10, 900]),
                   ("context", .f16, [2, 3, 16], context)], to: inputs)
        let x = try ForwardFiles.readInputs(inputs, for: model)
        XCTAssertEqual(x.timesteps, [10, 900])
        var options = UNetForwardOptions()
        options.tapFeatures = true
        let y = model.forward(sample: x.sample, timesteps: x.timesteps, context: x.context, options: options)
        try ForwardFiles.writeOutputs(y, to: out)
        let file = try SafeTensorsFile(path: out)
        XCTAssertEqual(Set(file.names), Set(["out"] + model.config.featureNames.map { "feature.\($0)" }))
        XCTAssertEqual(try file.floats("out"), y.sample.scalars)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("alter-tmp") }, [])
    }

    func testOneTimestepServesTheBatch() throws {
        let dir = try TemporaryDirectory()
        let inputs = dir.path + "/in.safetensors"
        try write([("sample", .f32, [2, 4, 8, 8], Array(repeating: 0.1, count: 512)), ("timestep", .f32, [1], [500]),
                   ("context", .f32, [2, 3, 16], Array(repeating: 0.2, count: 96))], to: inputs)
        XCTAssertEqual(try ForwardFiles.readInputs(inputs, for: try unet()).timesteps, [500, 500])
    }

    func testMisfitInputsNameTheFileAndTensor() throws {
        let dir = try TemporaryDirectory()
        let model = try unet()
        let inputs = dir.path + "/in.safetensors"
        try write([("sample", .f32, [2, 4, 8, 8], Array(repeating: 0, count: 512)), ("timestep", .f32, [2], [1, 2]),
                   ("context", .f32, [2, 3, 12], Array(repeating: 0, count: 72))], to: inputs)
        XCTAssertThrowsError(try ForwardFiles.readInputs(inputs, for: model)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(inputs) && text.contains("context"), text)
        }
        let noSample = dir.path + "/nosample.safetensors"
        try write([("timestep", .f32, [2], [1, 2])], to: noSample)
        XCTAssertThrowsError(try ForwardFiles.readInputs(noSample, for: model)) {
            XCTAssertEqual(($0 as? SafeTensorsError)?.tensor, "sample")
        }
        let gates = dir.path + "/gates.safetensors"
        try write([("down_blocks.1.resnets.0", .f32, [2], [0.5, 0.5])], to: gates)
        XCTAssertThrowsError(try ForwardFiles.readGates(gates, for: model, batch: 2)) { error in
            XCTAssertTrue("\(error)".contains("down_blocks.1.resnets.0"), "\(error)")
        }
    }
}
