import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// `CheckpointSource.locate` and the shard checks: what is recognised, and the typed errors for
/// what is not.
final class LayoutDetectionTests: XCTestCase {
    func locateError(_ what: String, _ path: String, variant: String? = nil,
                     file: StaticString = #filePath, line: UInt = #line) -> CheckpointError? {
        expectCheckpointError(what, file: file, line: line) { try CheckpointSource.locate(path, variant: variant) }
    }

    func testRecognisedSources() throws {
        let cases: [(String, CheckpointKind, CheckpointLayout, Int)] = [
            (Fixtures.sd2Diffusers, .diffusersUNet, .diffusers, 1),
            (Fixtures.sd2DiffusersFP16, .diffusersUNet, .diffusers, 1),
            (Fixtures.sd2Sharded, .diffusersUNet, .diffusers, 3),
            (Fixtures.sd2Pipeline, .diffusersPipeline, .diffusers, 1),
            (Fixtures.sd2DiffusersWeights, .diffusersWeightsFile, .diffusers, 1),
            (Fixtures.sd2Original, .originalSingleFile, .original, 1),
            (Fixtures.sd1Original, .originalSingleFile, .original, 1),
        ]
        for (path, kind, layout, files) in cases {
            let s = try CheckpointSource.locate(path)
            XCTAssertEqual(s.kind, kind, path)
            XCTAssertEqual(s.layout, layout, path)
            XCTAssertEqual(s.weightPaths.count, files, path)
            XCTAssertEqual(s.path, path)
        }
        let pipeline = try CheckpointSource.locate(Fixtures.sd2Pipeline)
        XCTAssertEqual(pipeline.configPath, Fixtures.path("tiny-sd2/pipeline/unet/config.json"))
        XCTAssertEqual(pipeline.schedulerConfigPath, Fixtures.path("tiny-sd2/pipeline/scheduler/scheduler_config.json"))
        // model_index.json: image_encoder and safety_checker are [null, null] (absent).
        XCTAssertEqual(pipeline.pipelineComponents, ["feature_extractor", "scheduler", "text_encoder", "tokenizer", "unet", "vae"])
        XCTAssertNil(try CheckpointSource.locate(Fixtures.sd2Original).configPath)
        XCTAssertEqual(try CheckpointSource.locate(Fixtures.sd2Sharded).shardMap?.count, 684)
    }

    func testNonexistentPath() {
        let p = Fixtures.path("no-such-checkpoint.safetensors")
        guard let e = locateError("nonexistent", p) else { return }
        guard case .notFound(let q) = e else { return XCTFail("\(e)") }
        XCTAssertEqual(q, p)
        XCTAssertTrue(e.description.contains(p))
    }

    func testPickleFilesAreRefused() throws {
        let tmp = try TemporaryDirectory()
        for name in ["model.ckpt", "MODEL.CKPT", "weights.pt", "weights.pth", "pytorch_model.bin"] {
            let p = tmp.path(name)
            FileManager.default.createFile(atPath: p, contents: Data("PK\u{3}\u{4}not really".utf8))
            guard let e = locateError(name, p) else { continue }
            guard case .unsupportedFormat(let f, _) = e else { XCTFail("\(name): \(e)"); continue }
            XCTAssertEqual(f, p)
        }
    }

    func testBinOnlyDiffusersFolder() throws {
        let tmp = try TemporaryDirectory()
        try FileManager.default.copyItem(atPath: Fixtures.sd2Config, toPath: tmp.path("config.json"))
        FileManager.default.createFile(atPath: tmp.path("diffusion_pytorch_model.bin"), contents: Data([0x80, 0x02]))
        guard let e = locateError(".bin-only folder", tmp.path) else { return }
        guard case .unsupportedFormat(let f, let why) = e else { return XCTFail("\(e)") }
        XCTAssertEqual(f, tmp.path("diffusion_pytorch_model.bin"))
        XCTAssertTrue(why.contains("safe_serialization") || why.contains("pickle"), why)
    }

    func testFolderWithConfigButNoWeights() throws {
        let tmp = try TemporaryDirectory()
        try FileManager.default.copyItem(atPath: Fixtures.sd2Config, toPath: tmp.path("config.json"))
        guard let e = locateError("no weights", tmp.path) else { return }
        guard case .notFound(let p) = e else { return XCTFail("\(e)") }
        XCTAssertEqual(p, tmp.path("diffusion_pytorch_model.safetensors"))
        // Asking for a variant that is not there.
        guard let v = locateError("missing variant", Fixtures.sd2Diffusers, variant: "fp16") else { return }
        guard case .notFound = v else { return XCTFail("\(v)") }
    }

    func testEmptyFolder() throws {
        let tmp = try TemporaryDirectory()
        guard let e = locateError("empty folder", tmp.path) else { return }
        guard case .unrecognisedLayout(let f, _) = e else { return XCTFail("\(e)") }
        XCTAssertEqual(f, tmp.path)
    }

    func testSafetensorsWithoutUNet() throws {
        let tmp = try TemporaryDirectory()
        let p = tmp.path("vae.safetensors")
        let w = try SafeTensorsWriter(path: p, tensors: [
            TensorSpec(name: "first_stage_model.encoder.conv_in.weight", dtype: .f32, shape: [2]),
            TensorSpec(name: "text_model.embeddings.weight", dtype: .f16, shape: [2]),
        ])
        try w.write("first_stage_model.encoder.conv_in.weight", floats: [1, 2])
        try w.write("text_model.embeddings.weight", floats: [1, 2])
        try w.finish()
        guard let e = locateError("no UNet keys", p) else { return }
        guard case .unrecognisedLayout(let f, _) = e else { return XCTFail("\(e)") }
        XCTAssertEqual(f, p)
    }

    func testCorruptSafetensors() throws {
        let tmp = try TemporaryDirectory()
        let p = tmp.path("broken.safetensors")
        var bytes = withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Array($0) }
        bytes += Array("{}".utf8)
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        guard let e = locateError("corrupt file", p) else { return }
        guard case .safetensors(let s) = e else { return XCTFail("\(e)") }
        XCTAssertEqual(s.file, p)
    }

    // MARK: sharded folders

    /// A copy of the sharded fixture whose index is rewritten by `edit`.
    func shardedCopy(in tmp: TemporaryDirectory, edit: (inout [String: String]) -> Void) throws -> String {
        let folder = tmp.path("sharded")
        try FileManager.default.copyItem(atPath: Fixtures.sd2Sharded, toPath: folder)
        let indexPath = folder + "/diffusion_pytorch_model.safetensors.index.json"
        var o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: indexPath))) as? [String: Any])
        var map = try XCTUnwrap(o["weight_map"] as? [String: String])
        edit(&map)
        o["weight_map"] = map
        try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: indexPath))
        return folder
    }

    static let shard1 = "diffusion_pytorch_model-00001-of-00003.safetensors"
    static let shard2 = "diffusion_pytorch_model-00002-of-00003.safetensors"

    func shardIndexMessage(_ what: String, _ folder: String, file: StaticString = #filePath, line: UInt = #line) -> String? {
        guard let e = expectCheckpointError(what, file: file, line: line, { try UNetCheckpoint(path: folder) }) else { return nil }
        guard case .shardIndex(let f, let why) = e else {
            XCTFail("\(what): expected a shard-index error, got \(e)", file: file, line: line)
            return nil
        }
        XCTAssertTrue(f.hasPrefix(folder), "\(what): error names \(f)", file: file, line: line)
        return why
    }

    func testUnmodifiedShardedCopyLoads() throws {
        let tmp = try TemporaryDirectory()
        let folder = try shardedCopy(in: tmp) { _ in }
        XCTAssertEqual(try UNetCheckpoint(path: folder).report.mapped, 684)
    }

    func testIndexNamesMissingShard() throws {
        let tmp = try TemporaryDirectory()
        let folder = try shardedCopy(in: tmp) { $0["conv_in.weight"] = "diffusion_pytorch_model-00004-of-00003.safetensors" }
        guard let why = shardIndexMessage("missing shard", folder) else { return }
        XCTAssertTrue(why.contains("00004-of-00003"), why)
    }

    func testIndexPointsOutsideFolder() throws {
        let tmp = try TemporaryDirectory()
        let folder = try shardedCopy(in: tmp) { $0["conv_in.weight"] = "../" + Self.shard1 }
        guard let why = shardIndexMessage("shard outside the folder", folder) else { return }
        XCTAssertTrue(why.contains("conv_in.weight"), why)
    }

    func testIndexDisagreesWithShards() throws {
        let tmp = try TemporaryDirectory()
        // Find a tensor of shard 1 and claim it is in shard 2.
        let name = try XCTUnwrap(try SafeTensorsFile(path: Fixtures.sd2Sharded + "/" + Self.shard1).names.first)
        let folder = try shardedCopy(in: tmp) { $0[name] = Self.shard2 }
        guard let why = shardIndexMessage("index disagrees", folder) else { return }
        XCTAssertTrue(why.contains(name), why)
    }

    func testTensorMissingFromIndex() throws {
        let tmp = try TemporaryDirectory()
        let name = try XCTUnwrap(try SafeTensorsFile(path: Fixtures.sd2Sharded + "/" + Self.shard2).names.last)
        let folder = try shardedCopy(in: tmp) { $0[name] = nil }
        guard let why = shardIndexMessage("tensor not in index", folder) else { return }
        XCTAssertTrue(why.contains(name), why)
    }

    func testIndexListsTensorInNoShard() throws {
        let tmp = try TemporaryDirectory()
        let folder = try shardedCopy(in: tmp) { $0["down_blocks.9.resnets.0.conv1.weight"] = Self.shard1 }
        guard let why = shardIndexMessage("tensor in no shard", folder) else { return }
        XCTAssertTrue(why.contains("down_blocks.9.resnets.0.conv1.weight"), why)
    }

    func testEmptyOrInvalidIndex() throws {
        let tmp = try TemporaryDirectory()
        let folder = try shardedCopy(in: tmp) { $0 = [:] }
        _ = shardIndexMessage("empty weight_map", folder)
        let indexPath = folder + "/diffusion_pytorch_model.safetensors.index.json"
        try Data("[1, 2]".utf8).write(to: URL(fileURLWithPath: indexPath))
        _ = shardIndexMessage("index not an object", folder)
    }

    func testTensorInTwoShards() throws {
        let tmp = try TemporaryDirectory()
        let folder = try shardedCopy(in: tmp) { _ in }
        // Rewrite shard 2 with an extra copy of a shard-1 tensor.
        let s1 = try SafeTensorsFile(path: folder + "/" + Self.shard1)
        let s2path = folder + "/" + Self.shard2
        let s2 = try SafeTensorsFile(path: s2path)
        let dup = try XCTUnwrap(s1.tensors.first)
        let w = try SafeTensorsWriter(path: s2path, tensors: (s2.tensors + [dup]).map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) })
        while let spec = w.nextSpec {
            let (f, info) = s2.info(spec.name).map { (s2, $0) } ?? (s1, dup)
            try w.write(spec.name, bytes: f.rawBytes(info))
        }
        try w.finish()
        guard let e = expectCheckpointError("duplicate tensor", { try UNetCheckpoint(path: folder) }) else { return }
        guard case .duplicateTensor(let n, _, _) = e else { return XCTFail("\(e)") }
        XCTAssertEqual(n, dup.name)
    }
}
