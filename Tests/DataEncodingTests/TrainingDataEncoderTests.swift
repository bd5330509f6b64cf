import ALTER
import DataEncoding
import Foundation
import Images
import SafeTensors
import StableDiffusion
import TensorCore
import TextToImage
import XCTest

/// `TrainingDataEncoder` on the tiny SD2.1-structured pipeline (Tests/Fixtures/pipeline/sd21-tiny,
/// 64x64 images -> 8x8 latents): the file equals the components' own outputs, matches diffusers +
/// transformers (scripts/make_encode_data_fixtures.py), reads back as training data for the
/// fixture's UNet, and bad data sets are refused or skipped.
final class TrainingDataEncoderTests: XCTestCase {
    static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    static var pipeline: String { tests.appendingPathComponent("Fixtures/pipeline/sd21-tiny").path }
    static var fixtures: String { tests.appendingPathComponent("Fixtures/encode-data").path }
    static var jpeg: String { tests.appendingPathComponent("Fixtures/images/ycbcr444.jpg").path }

    nonisolated(unsafe) static var cached: TextToImageComponents?
    var components: TextToImageComponents {
        get throws {
            if let c = Self.cached { return c }
            let c = try TextToImageComponents(model: Self.pipeline)
            Self.cached = c
            return c
        }
    }

    func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-encode-data-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// A smooth `width` x `height` pattern, different per `k`.
    func pattern(_ width: Int, _ height: Int, _ k: Int) -> RGBImage {
        var p = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 {
                    let v = sin(Double(x) / Double(3 + k + c)) * cos(Double(y) / Double(4 + c)) * 100 + 128
                    p[(y * width + x) * 3 + c] = UInt8(max(0, min(255, v.rounded())))
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: p)
    }

    /// A folder with three PNGs (written by PNGWriter) and a JPEG, and `captions.jsonl` for them.
    func makeDataSet(_ dir: String, captions: [(String, String)]? = nil) throws -> (images: String, captions: String) {
        let images = dir + "/images"
        try FileManager.default.createDirectory(atPath: images + "/sub", withIntermediateDirectories: true)
        try pattern(96, 64, 1).writePNG(to: images + "/a.png")
        try pattern(64, 72, 2).writePNG(to: images + "/sub/b.png")
        try pattern(64, 64, 3).writePNG(to: images + "/c.png")
        try FileManager.default.copyItem(atPath: Self.jpeg, toPath: images + "/d.jpg")
        let rows = captions ?? [("a.png", "a wide pattern"), ("sub/b.png", "a tall one, in a folder"), ("c.png", ""), ("d.jpg", "a photo")]
        let lines = try rows.map { String(decoding: try JSONEncoder().encode(["file": $0.0, "text": $0.1]), as: UTF8.self) }
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/captions.jsonl", atomically: true, encoding: .utf8)
        return (images, dir + "/captions.jsonl")
    }

    func options(_ dtype: DType = .f32, batch: Int = 2, mode: DataEncodingOptions.LatentMode = .mean) -> DataEncodingOptions {
        var o = DataEncodingOptions()
        o.size = 64
        o.batch = batch
        o.dtype = dtype
        o.latentMode = mode
        return o
    }

    func tensor(_ file: SafeTensorsFile, _ name: String) throws -> Tensor {
        Tensor(shape: try file.require(name).shape, values: try file.floats(name))
    }

    /// Relative L2 error of `a` against `b`; fails above `bound`.
    @discardableResult
    func assertRelativeL2(_ a: Tensor, _ b: Tensor, _ what: String, _ bound: Double, line: UInt = #line) -> Double {
        XCTAssertEqual(a.shape, b.shape, what, line: line)
        guard a.shape == b.shape else { return .infinity }
        var d = 0.0, n = 0.0, worst = 0.0, at = 0
        for i in 0..<a.count {
            let x = Double(a.data[i]), y = Double(b.data[i])
            d += (x - y) * (x - y)
            n += y * y
            if abs(x - y) > worst { (worst, at) = (abs(x - y), i) }
        }
        let rel = (d / max(n, 1e-30)).squareRoot()
        print(String(format: "%@: relative L2 error %.3g (worst element %d: %.8g vs %.8g)", what, rel, at, a.data[at], b.data[at]))
        XCTAssertLessThanOrEqual(rel, bound, "\(what): relative L2 error \(rel)", line: line)
        return rel
    }

    /// The written tensors equal the components' outputs computed here, batch for batch.
    func testFileEqualsTheComponents() throws {
        let dir = try temporaryDirectory()
        let set = try makeDataSet(dir)
        let c = try components
        let out = dir + "/data.safetensors"
        let report = try TrainingDataEncoder(components: c).encode(folder: set.images, captions: set.captions, output: out, options: options())
        XCTAssertEqual(report.sampleCount, 4)
        XCTAssertEqual(report.latentsShape, [4, 4, 8, 8])
        XCTAssertEqual(report.contextShape, [4, 77, 16])
        XCTAssertEqual(report.uncondShape, [77, 16])
        XCTAssertTrue(report.skipped.isEmpty)

        let file = try SafeTensorsFile(path: out)
        let names = ["a.png", "sub/b.png", "c.png", "d.jpg"], texts = ["a wide pattern", "a tall one, in a folder", "", "a photo"]
        // Batches of 2, as encoded.
        for first in [0, 2] {
            let batch = Tensor(uninitialized: [2, 3, 64, 64])
            for k in 0..<2 {
                let image = try ImageFile.read(path: set.images + "/" + names[first + k])
                let x = try ImageResize.resizeAndCenterCrop(image, to: 64, filter: .bilinear).tensor()
                (batch.data + k * x.count).update(from: x.data, count: x.count)
            }
            let mean = try c.vae.encode(batch).mean
            let latents = try tensor(file, "latents")
            for i in 0..<mean.count {
                XCTAssertEqual(latents.data[first * mean.count / 2 + i], mean.data[i] * Float(0.18215), "latent \(first) + \(i)")
            }
            let ids = texts[first..<(first + 2)].map { c.tokenizer.tokenize($0).inputIds }
            let context = try c.textEncoder.encode(ids)
            let written = try tensor(file, "context")
            XCTAssertEqual(Array(UnsafeBufferPointer(start: written.data + first * context.count / 2, count: context.count)),
                           Array(UnsafeBufferPointer(start: context.data, count: context.count)))
        }
        let uncond = try c.textEncoder.encode([c.tokenizer.tokenize("").inputIds])
        XCTAssertEqual(try file.floats("uncond"), Array(UnsafeBufferPointer(start: uncond.data, count: uncond.count)))
        let idsInfo = try file.require("extra.input_ids")
        XCTAssertEqual(idsInfo.dtype, .i32)
        XCTAssertEqual(idsInfo.shape, [4, 77])
        let raw = file.rawBytes(idsInfo)
        let stored = (0..<(4 * 77)).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        XCTAssertEqual(stored, texts.flatMap { c.tokenizer.tokenize($0).inputIds })
        let meta = try XCTUnwrap(file.metadata)
        XCTAssertEqual(try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(meta["images"]).utf8)), names)
        XCTAssertEqual(try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(meta["captions"]).utf8)), texts)
        XCTAssertEqual(meta["latent_mode"], "mean")
        XCTAssertEqual(meta["size"], "64")

        // The reader of the format takes it, and it fits the pipeline's UNet.
        let data = try TrainingData(path: out)
        XCTAssertEqual(data.count, 4)
        XCTAssertEqual(data.extraNames, ["extra.input_ids"])
        XCTAssertEqual(data.metadata["vae_scaling_factor"], "0.18215")
        try data.validate(for: try UNetCheckpoint(path: Self.pipeline).config)
    }

    /// The fixture folder through diffusers' AutoencoderKL and transformers' CLIPTextModel in
    /// float64 (scripts/make_encode_data_fixtures.py), from the JSON lines and the CSV captions.
    func testMatchesDiffusersAndTransformers() throws {
        let expected = try SafeTensorsFile(path: Self.fixtures + "/expected.safetensors")
        let dir = try temporaryDirectory()
        for captions in ["captions.jsonl", "captions.csv"] {
            let out = dir + "/\(captions).safetensors"
            let report = try TrainingDataEncoder(components: try components).encode(
                folder: Self.fixtures + "/images", captions: Self.fixtures + "/" + captions, output: out, options: options(batch: 3))
            XCTAssertEqual(report.truncatedCaptionCount, 1)
            let file = try SafeTensorsFile(path: out)
            for name in ["latents", "context", "uncond"] {
                assertRelativeL2(try tensor(file, name), try tensor(expected, name), "\(captions) \(name)", 1e-5)
            }
            let raw = file.rawBytes(try file.require("extra.input_ids")), ref = expected.rawBytes(try expected.require("input_ids"))
            XCTAssertEqual((0..<(4 * 77)).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) },
                           (0..<(4 * 77)).map { Int(ref.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) })
            let imagesWritten = try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(file.metadata?["images"]).utf8))
            let imagesExpected = try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(expected.metadata?["images"]).utf8))
            XCTAssertEqual(imagesWritten, imagesExpected)
            let captionsWritten = try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(file.metadata?["captions"]).utf8))
            let captionsExpected = try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(expected.metadata?["captions"]).utf8))
            XCTAssertEqual(captionsWritten, captionsExpected)
        }
    }

    /// F16 storage (the default) and seeded samples: the same seed gives the same latents whatever
    /// the batch, another seed others, and the sample differs from the mean.
    func testSampledLatentsAreSeededPerSample() throws {
        let dir = try temporaryDirectory()
        let set = try makeDataSet(dir)
        let encoder = TrainingDataEncoder(components: try components)
        func latents(_ name: String, _ o: DataEncodingOptions) throws -> [Float] {
            _ = try encoder.encode(folder: set.images, captions: set.captions, output: dir + "/" + name, options: o)
            let f = try SafeTensorsFile(path: dir + "/" + name)
            XCTAssertEqual(try f.require("latents").dtype, o.dtype)
            return try f.floats("latents")
        }
        let a = try latents("a", options(.f16, batch: 1, mode: .sample(seed: 7)))
        let b = try latents("b", options(.f16, batch: 3, mode: .sample(seed: 7)))
        let c = try latents("c", options(.f16, batch: 3, mode: .sample(seed: 8)))
        let mean = try latents("m", options(.f16, batch: 4))
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        XCTAssertNotEqual(a, mean)
        XCTAssertEqual(try SafeTensorsFile(path: dir + "/a").metadata?["seed"], "7")
        _ = try TrainingData(path: dir + "/a")
    }

    func expectFailure(_ what: String, _ body: () throws -> Void, saying words: String..., line: UInt = #line) {
        do {
            try body()
            XCTFail("\(what): no error", line: line)
        } catch {
            for w in words { XCTAssertTrue("\(error)".contains(w), "\(what): no '\(w)' in: \(error)", line: line) }
        }
    }

    /// Missing captions, captions for missing files, unreadable images, duplicates, an empty
    /// folder: refused, naming them, with nothing written; with skipBad the bad ones are left out
    /// and listed.
    func testBadDataSets() throws {
        let dir = try temporaryDirectory()
        let encoder = TrainingDataEncoder(components: try components)
        let out = dir + "/out.safetensors"
        // An image without a caption, a caption without an image, a "PNG" that is text.
        let set = try makeDataSet(dir, captions: [("a.png", "x"), ("sub/b.png", "y"), ("gone.png", "z"), ("bad.png", "w")])
        try "not an image".write(toFile: set.images + "/bad.png", atomically: true, encoding: .utf8)
        expectFailure("bad entries", { _ = try encoder.encode(folder: set.images, captions: set.captions, output: out, options: options()) },
                      saying: "c.png: no caption", "d.jpg: no caption", "gone.png: no image (a caption on line 3 names it)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        // Only the unreadable image left: it is found by the checking pass.
        let onlyBad = try temporaryDirectory()
        let set2 = try makeDataSet(onlyBad, captions: [("a.png", "x"), ("sub/b.png", "y"), ("c.png", "z"), ("d.jpg", "v"), ("bad.png", "w")])
        try "not an image".write(toFile: set2.images + "/bad.png", atomically: true, encoding: .utf8)
        expectFailure("unreadable", { _ = try encoder.encode(folder: set2.images, captions: set2.captions, output: out, options: options()) },
                      saying: "1 bad entry: bad.png: ", "not a PNG or JPEG")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))

        var skipping = options()
        skipping.skipBad = true
        let report = try encoder.encode(folder: set.images, captions: set.captions, output: out, options: skipping)
        XCTAssertEqual(report.sampleCount, 2)
        XCTAssertEqual(report.skipped.map(\.file), ["c.png", "d.jpg", "gone.png", "bad.png"])
        let data = try TrainingData(path: out)
        XCTAssertEqual(data.count, 2)
        XCTAssertEqual(data.metadata["images"], "[\"a.png\",\"sub/b.png\"]")

        // Duplicates are refused even with skipBad.
        let dup = try temporaryDirectory()
        let set3 = try makeDataSet(dup, captions: [("a.png", "x"), ("sub/b.png", "y"), ("c.png", "z"), ("d.jpg", "v"), ("sub//b.png", "again")])
        expectFailure("duplicate", { _ = try encoder.encode(folder: set3.images, captions: set3.captions, output: out, options: skipping) },
                      saying: "'sub/b.png' has more than one caption (lines 2, 5)")

        // An empty folder; a folder with only other files.
        let empty = dir + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        try "x".write(toFile: empty + "/notes.txt", atomically: true, encoding: .utf8)
        expectFailure("empty", { _ = try encoder.encode(folder: empty, captions: set.captions, output: dir + "/e.safetensors", options: skipping) },
                      saying: "no images (files ending in")
        expectFailure("not a folder", { _ = try encoder.encode(folder: dir + "/nope", captions: set.captions, output: dir + "/e.safetensors", options: skipping) },
                      saying: "nope: not a directory")
        // Every caption skipped: nothing left.
        let none = try temporaryDirectory()
        let set4 = try makeDataSet(none, captions: [("x.png", "x")])
        expectFailure("nothing left", { _ = try encoder.encode(folder: set4.images, captions: set4.captions, output: dir + "/n.safetensors", options: skipping) },
                      saying: "no image is left to encode (5 skipped)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/n.safetensors"))
        // Bounds.
        var small = options()
        small.size = 60
        expectFailure("size", { _ = try encoder.encode(folder: set.images, captions: set.captions, output: dir + "/s.safetensors", options: small) },
                      saying: "size 60: the VAE needs a multiple of its downsampling factor 8")
        small.size = 4096
        expectFailure("size", { try small.validate() }, saying: "size 4096: expected 8...2048")
        small = options(batch: 0)
        expectFailure("batch", { try small.validate() }, saying: "batch 0")
    }

    /// A bundle without components and an original file without a tokenizer are refused by name.
    func testComponentSources() throws {
        expectFailure("single file", { _ = try TextToImageComponents(model: Self.tests.appendingPathComponent("Fixtures/pipeline/sd21-tiny-original.safetensors").path) },
                      saying: "holds no tokenizer")
        expectFailure("folder + tokenizer", { _ = try TextToImageComponents(model: Self.pipeline, tokenizer: Self.pipeline) },
                      saying: "only with an original single file")
        var heads = CLIPTextLoadOptions()
        heads.heads = 2
        var vae = VAELoadOptions()
        vae.configPath = Self.pipeline + "/vae/config.json"
        let single = try TextToImageComponents(model: Self.tests.appendingPathComponent("Fixtures/pipeline/sd21-tiny-original.safetensors").path,
                                               tokenizer: Self.pipeline + "/tokenizer", textEncoder: heads, vae: vae)
        XCTAssertEqual(single.textEncoder.config.hiddenSize, 16)
        // The same encodings as from the folder.
        let dir = try temporaryDirectory()
        let set = try makeDataSet(dir)
        _ = try TrainingDataEncoder(components: single).encode(folder: set.images, captions: set.captions, output: dir + "/s", options: options())
        _ = try TrainingDataEncoder(components: try components).encode(folder: set.images, captions: set.captions, output: dir + "/f", options: options())
        let s = try SafeTensorsFile(path: dir + "/s"), f = try SafeTensorsFile(path: dir + "/f")
        for name in ["latents", "context", "uncond"] {
            assertRelativeL2(try tensor(s, name), try tensor(f, name), "single file vs folder \(name)", 0)
        }
    }
}
