import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// Strict loading: every expected tensor present, of the right shape and a float dtype, and no
/// stray tensors in the UNet namespace unless allowed. Each failure names the tensor.
final class StrictLoadingTests: XCTestCase {
    enum Edit {
        case drop(String)
        case reshape(String, [Int])
        case add(String, [Int])
        case retype(String, DType)
    }

    /// Writes a diffusers folder copy of the tiny-sd2 fixture with `edit` applied.
    func editedCopy(_ edit: Edit, in tmp: TemporaryDirectory) throws -> String {
        let src = try SafeTensorsFile(path: Fixtures.sd2DiffusersWeights)
        let folder = tmp.path("unet")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Fixtures.sd2Config, toPath: folder + "/config.json")
        var specs: [TensorSpec] = src.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        switch edit {
        case .drop(let n): specs.removeAll { $0.name == n }
        case .reshape(let n, let s): specs = specs.map { $0.name == n ? TensorSpec(name: n, dtype: $0.dtype, shape: s) : $0 }
        case .add(let n, let s): specs.append(TensorSpec(name: n, dtype: .f32, shape: s))
        case .retype(let n, let d): specs = specs.map { $0.name == n ? TensorSpec(name: n, dtype: d, shape: $0.shape) : $0 }
        }
        let w = try SafeTensorsWriter(path: folder + "/diffusion_pytorch_model.safetensors", tensors: specs, metadata: ["format": "pt"])
        while let spec = w.nextSpec {
            if let info = src.info(spec.name), info.dtype == spec.dtype, info.shape == spec.shape {
                try w.write(spec.name, bytes: src.rawBytes(info))
            } else {
                let bytes = [UInt8](repeating: 1, count: spec.byteCount)
                try bytes.withUnsafeBytes { try w.write(spec.name, bytes: $0) }
            }
        }
        try w.finish()
        return folder
    }

    func strictReport(_ what: String, path: String, options: LoadOptions = LoadOptions(),
                      file: StaticString = #filePath, line: UInt = #line) -> LoadReport? {
        guard let e = expectCheckpointError(what, file: file, line: line, { try UNetCheckpoint(path: path, options: options) }) else { return nil }
        guard case .strictLoad(let report) = e else {
            XCTFail("\(what): expected a strict-load error, got \(e)", file: file, line: line)
            return nil
        }
        return report
    }

    func testUnmodifiedCopyLoads() throws {
        let tmp = try TemporaryDirectory()
        let folder = try editedCopy(.add("unused.never", [0]), in: tmp)
        // A zero-element extra tensor is still unused; the copy otherwise is the fixture.
        let ckpt = try UNetCheckpoint(path: folder, options: Fixtures.options(allowUnused: true))
        XCTAssertEqual(ckpt.report.mapped, 684)
    }

    func testMissingTensor() throws {
        let tmp = try TemporaryDirectory()
        let name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        let folder = try editedCopy(.drop(name), in: tmp)
        guard let r = strictReport("missing tensor", path: folder) else { return }
        XCTAssertEqual(r.missing, [name])
        XCTAssertEqual(r.mapped, 683)
        XCTAssertTrue(r.unused.isEmpty && r.misshapen.isEmpty && r.wrongDType.isEmpty, r.description)
        XCTAssertTrue(r.description.contains(name), r.description)
        XCTAssertTrue(CheckpointError.strictLoad(r).description.contains(name))
    }

    func testMisshapenTensor() throws {
        let tmp = try TemporaryDirectory()
        let name = "conv_in.weight"
        let folder = try editedCopy(.reshape(name, [4, 4, 1, 1]), in: tmp)
        guard let r = strictReport("misshapen tensor", path: folder) else { return }
        XCTAssertEqual(r.misshapen, [LoadReport.Misshapen(canonical: name, stored: name, expected: [4, 4, 3, 3], actual: [4, 4, 1, 1])])
        XCTAssertTrue(r.missing.isEmpty && r.unused.isEmpty && r.wrongDType.isEmpty, r.description)
        XCTAssertTrue(r.description.contains(name) && r.description.contains("[4, 4, 3, 3]") && r.description.contains("[4, 4, 1, 1]"), r.description)
    }

    func testUnusedTensor() throws {
        let tmp = try TemporaryDirectory()
        let folder = try editedCopy(.add("foo.bar", [3]), in: tmp)
        guard let r = strictReport("unused tensor", path: folder) else { return }
        XCTAssertEqual(r.unused, ["foo.bar"])
        XCTAssertEqual(r.mapped, 684)
        XCTAssertTrue(r.missing.isEmpty && r.misshapen.isEmpty && r.wrongDType.isEmpty, r.description)
        XCTAssertTrue(r.description.contains("foo.bar"), r.description)

        let ckpt = try UNetCheckpoint(path: folder, options: Fixtures.options(allowUnused: true))
        XCTAssertEqual(ckpt.report.unused, ["foo.bar"], "accepted but still listed")
        XCTAssertEqual(ckpt.report.mapped, 684)
        XCTAssertTrue(ckpt.report.isAcceptable(allowUnused: true))
        XCTAssertFalse(ckpt.report.isAcceptable(allowUnused: false))
    }

    func testWrongDType() throws {
        let tmp = try TemporaryDirectory()
        let name = "mid_block.resnets.0.norm1.bias"
        let folder = try editedCopy(.retype(name, .i32), in: tmp)
        guard let r = strictReport("I32 tensor", path: folder) else { return }
        XCTAssertEqual(r.wrongDType, [LoadReport.WrongDType(stored: name, dtype: .i32)])
        XCTAssertTrue(r.missing.isEmpty && r.misshapen.isEmpty && r.unused.isEmpty, r.description)
        XCTAssertTrue(r.description.contains(name) && r.description.contains("I32"), r.description)
    }

    /// Original layout: a stray `model.diffusion_model.*` tensor is unused; VAE, text encoder,
    /// schedule buffers and EMA bookkeeping are not the UNet's business.
    func testOriginalLayoutUnusedOnlyInUNetNamespace() throws {
        let tmp = try TemporaryDirectory()
        let src = try SafeTensorsFile(path: Fixtures.sd2OriginalEMA)
        let path = tmp.path("extra.safetensors")
        var specs = src.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        specs.append(TensorSpec(name: "model.diffusion_model.extra.weight", dtype: .f32, shape: [2]))
        let w = try SafeTensorsWriter(path: path, tensors: specs)
        while let spec = w.nextSpec {
            if let info = src.info(spec.name) { try w.write(spec.name, bytes: src.rawBytes(info)) } else {
                try w.write(spec.name, floats: [1, 2])
            }
        }
        try w.finish()
        let cfg = Fixtures.sd2Config
        guard let r = strictReport("stray UNet tensor", path: path, options: Fixtures.options(config: cfg)) else { return }
        XCTAssertEqual(r.unused, ["model.diffusion_model.extra.weight"])
        // The EMA UNet has its own namespace: the stray plain tensor does not concern it.
        let ema = try UNetCheckpoint(path: path, options: Fixtures.options(config: cfg, ema: true))
        XCTAssertEqual(ema.report.unused, [])
        // The fixtures themselves: nothing unused.
        for p in [Fixtures.sd2Original, Fixtures.sd2OriginalEMA] {
            XCTAssertEqual(try UNetCheckpoint(path: p, options: Fixtures.options(config: cfg)).report.unused, [], p)
        }
    }

    /// A config that disagrees with the weights is a strict-load error too (here: tiny-sd1's conv
    /// projections against tiny-sd2's linear ones, and a different context size).
    func testWrongConfigIsMisshapen() {
        guard let r = strictReport("tiny-sd2 weights with tiny-sd1 config", path: Fixtures.sd2Original,
                                   options: Fixtures.options(config: Fixtures.sd1Config)) else { return }
        XCTAssertTrue(r.misshapen.contains { $0.canonical == "mid_block.attentions.0.proj_in.weight" && $0.expected == [8, 8, 1, 1] && $0.actual == [8, 8] }, r.description)
        XCTAssertTrue(r.misshapen.contains { $0.canonical.hasSuffix("attn2.to_k.weight") && $0.actual.last == 16 && $0.expected.last == 12 }, r.description)
        XCTAssertTrue(r.missing.isEmpty, r.description)
    }
}
