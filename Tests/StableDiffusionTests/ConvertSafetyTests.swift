import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// `convert` never clobbers without being asked, and a failed conversion leaves nothing behind.
final class ConvertSafetyTests: XCTestCase {
    func assertNoTemporaries(_ tmp: TemporaryDirectory, file: StaticString = #filePath, line: UInt = #line) throws {
        let leftovers = try tmp.contents().filter { $0.contains(".alter-tmp-") }
        XCTAssertEqual(leftovers, [], "temporary entries left behind", file: file, line: line)
    }

    func testExistingFileNeedsOverwrite() throws {
        let tmp = try TemporaryDirectory()
        let out = tmp.path("unet.safetensors")
        let marker = Data("precious".utf8)
        FileManager.default.createFile(atPath: out, contents: marker)
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Diffusers)
        guard let e = expectCheckpointError("existing output", { try ckpt.convert(to: out, layout: .original, dtype: nil) }) else { return }
        guard case .safetensors(let s) = e, s.reason == .exists else { return XCTFail("\(e)") }
        XCTAssertEqual(s.file, out)
        XCTAssertEqual(FileManager.default.contents(atPath: out), marker, "untouched")
        try assertNoTemporaries(tmp)

        let summary = try ckpt.convert(to: out, layout: .original, dtype: .f16, overwrite: true)
        XCTAssertEqual(summary.tensors, 684)
        let written = try SafeTensorsFile(path: out)
        XCTAssertEqual(written.tensors.count, 684)
        XCTAssertTrue(written.tensors.allSatisfy { $0.dtype == .f16 })
        XCTAssertEqual(written.metadata?["format"], "pt")
        try assertNoTemporaries(tmp)
    }

    func testExistingFolderNeedsOverwrite() throws {
        let tmp = try TemporaryDirectory()
        let out = tmp.path("unet")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        let marker = out + "/keep.txt"
        FileManager.default.createFile(atPath: marker, contents: Data("precious".utf8))
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Original, options: Fixtures.options(config: Fixtures.sd2Config))
        guard let e = expectCheckpointError("existing folder", { try ckpt.convert(to: out, layout: .diffusers, dtype: nil) }) else { return }
        guard case .safetensors(let s) = e, s.reason == .exists else { return XCTFail("\(e)") }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out), ["keep.txt"], "untouched")
        try assertNoTemporaries(tmp)

        // Even with overwrite, a folder that is not a diffusers UNet folder is not replaced.
        guard let notUNet = expectCheckpointError("other folder", { try ckpt.convert(to: out, layout: .diffusers, dtype: nil, overwrite: true) }) else { return }
        XCTAssertTrue(notUNet.description.contains("is not a diffusers UNet folder"), notUNet.description)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out), ["keep.txt"], "untouched")

        // A UNet folder is replaced with overwrite.
        let unet = tmp.path("unet2")
        _ = try ckpt.convert(to: unet, layout: .diffusers, dtype: .f16)
        _ = try ckpt.convert(to: unet, layout: .diffusers, dtype: nil, overwrite: true)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: unet)), ["config.json", "diffusion_pytorch_model.safetensors"])
        XCTAssertEqual(try UNetCheckpoint(path: unet).report.mapped, 684)
        try assertNoTemporaries(tmp)
    }

    /// An original checkpoint without --config: the tiny model's heads cannot be inferred, so
    /// writing the diffusers layout (whose config.json needs them) fails, leaving nothing.
    func testFailedConversionLeavesNothing() throws {
        let tmp = try TemporaryDirectory()
        let out = tmp.path("unet")
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Original)
        guard let e = expectCheckpointError("no heads", { try ckpt.convert(to: out, layout: .diffusers, dtype: .f16) }) else { return }
        guard case .invalidConfig = e else { return XCTFail("\(e)") }
        XCTAssertTrue(e.description.contains("config_path"), e.description)
        XCTAssertEqual(try tmp.contents(), [])

        // The same failure over an existing folder with overwrite leaves the old folder.
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        FileManager.default.createFile(atPath: out + "/keep.txt", contents: Data())
        XCTAssertNotNil(expectCheckpointError("no heads, overwrite") { try ckpt.convert(to: out, layout: .diffusers, dtype: nil, overwrite: true) })
        XCTAssertEqual(try tmp.contents(), ["unet"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out), ["keep.txt"])
    }

    func testOtherFailuresLeaveNothing() throws {
        let tmp = try TemporaryDirectory()
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Diffusers)
        // Non-float target dtype.
        XCTAssertNotNil(expectCheckpointError("I32 target") { try ckpt.convert(to: tmp.path("a.safetensors"), layout: .original, dtype: .i32) })
        // Original layout onto an existing folder, even with overwrite.
        try FileManager.default.createDirectory(atPath: tmp.path("dir.safetensors"), withIntermediateDirectories: false)
        XCTAssertNotNil(expectCheckpointError("folder as file") {
            try ckpt.convert(to: tmp.path("dir.safetensors"), layout: .original, dtype: nil, overwrite: true)
        })
        XCTAssertEqual(try tmp.contents(), ["dir.safetensors"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp.path("dir.safetensors")), [])
        XCTAssertEqual(try tmp.contents(), ["dir.safetensors"])
        // A destination in a folder that does not exist: the folders are created.
        _ = try ckpt.convert(to: tmp.path("missing/a/unet.safetensors"), layout: .original, dtype: nil)
        _ = try ckpt.convert(to: tmp.path("missing/b/unet"), layout: .diffusers, dtype: nil)
        XCTAssertEqual(try UNetCheckpoint(path: tmp.path("missing/b/unet")).report.mapped, 684)
        XCTAssertEqual(try SafeTensorsFile(path: tmp.path("missing/a/unet.safetensors")).tensors.count, 684)
    }

    func testProgressReachesTotal() throws {
        let tmp = try TemporaryDirectory()
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Diffusers)
        var calls: [(Int, Int)] = []
        let summary = try ckpt.convert(to: tmp.path("p.safetensors"), layout: .original, dtype: .bf16) { calls.append(($0, $1)) }
        XCTAssertEqual(calls.count, 684)
        XCTAssertEqual(calls.last?.0, summary.bytes)
        XCTAssertTrue(calls.allSatisfy { $0.1 == summary.bytes })
        XCTAssertTrue(zip(calls, calls.dropFirst()).allSatisfy { $0.0 < $1.0 })
    }

    /// An input is never an output: the same file (also through a link), a folder holding the
    /// input, or a path inside an input folder; each refused with the input named, nothing changed.
    func testInputIsNeverReplaced() throws {
        let tmp = try TemporaryDirectory()
        let single = tmp.path("model.safetensors")
        try FileManager.default.copyItem(atPath: Fixtures.sd2Original, toPath: single)
        let before = try Data(contentsOf: URL(fileURLWithPath: single))
        try FileManager.default.createSymbolicLink(atPath: tmp.path("link.safetensors"), withDestinationPath: single)
        let ckpt = try UNetCheckpoint(path: single, options: Fixtures.options(config: Fixtures.sd2Config))
        for (out, layout) in [(single, CheckpointLayout.original), (tmp.path("link.safetensors"), .original), (tmp.path(""), .diffusers)] {
            guard let e = expectCheckpointError("input as output \(out)", { try ckpt.convert(to: out, layout: layout, dtype: .bf16, overwrite: true) }) else { continue }
            XCTAssertTrue(e.description.contains("an input of this command"), e.description)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: single)), before, "the input is untouched")
        let folder = try UNetCheckpoint(path: Fixtures.sd2Diffusers)
        guard let inside = expectCheckpointError("inside the input folder", {
            try folder.convert(to: Fixtures.sd2Diffusers + "/copy.safetensors", layout: .original, dtype: nil)
        }) else { return }
        XCTAssertTrue(inside.description.contains("inside an input"), inside.description)
    }
}
