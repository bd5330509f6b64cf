import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest
@testable import ALTER

/// The training-data file of `alter compress` (formats/training-data.md): loading F32/F16/BF16,
/// batches, and every error naming the file, the tensor, and what was expected.
final class TrainingDataTests: XCTestCase {
    /// A temporary directory removed when the test case ends.
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-trainingdata-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    /// The small SD2-style model the tests check against: 4 levels (multiples of 8), 4 channels, D = 16.
    private var config: UNetConfig {
        var c = UNetConfig()
        c.blockOutChannels = [4, 8, 8, 8]
        c.normNumGroups = 2
        c.attentionHeads = [1, 2, 2, 2]
        c.crossAttentionDim = 16
        return c
    }

    private typealias Entry = (name: String, dtype: DType, shape: [Int], values: [Float])

    /// Writes tensors with SafeTensorsWriter (integer dtypes from the Float values) and returns the path.
    @discardableResult
    private func write(_ name: String, _ tensors: [Entry], metadata: [String: String]? = nil) throws -> String {
        let path = dir.appendingPathComponent(name).path
        let w = try SafeTensorsWriter(
            path: path, tensors: tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }, metadata: metadata)
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.values) })
        for spec in w.order {
            let values = try XCTUnwrap(byName[spec.name])
            switch spec.dtype {
            case .i64: try values.map { Int64($0) }.withUnsafeBytes { try w.write(spec.name, bytes: $0) }
            case .u8: try values.map { UInt8($0) }.withUnsafeBytes { try w.write(spec.name, bytes: $0) }
            default: try w.write(spec.name, floats: values)
            }
        }
        try w.finish()
        return path
    }

    /// Distinct values, exactly representable in F16 and BF16 (multiples of 1/64 up to 2).
    private func values(_ n: Int, seed: Int) -> [Float] {
        (0..<n).map { Float(((($0 &* 37) &+ seed &* 11) % 257) - 128) / 64 }
    }

    private func count(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    private func entry(_ name: String, _ dtype: DType, _ shape: [Int], seed: Int = 1) -> Entry {
        (name, dtype, shape, values(count(shape), seed: seed))
    }

    /// A good file: latents [3, 4, 8, 8], context [3, 5, 16], optionally uncond [5, 16].
    private func goodEntries(_ dtype: DType = .f32, uncond: Bool = true) -> [Entry] {
        var e = [entry("latents", dtype, [3, 4, 8, 8], seed: 1), entry("context", dtype, [3, 5, 16], seed: 2)]
        if uncond { e.append(entry("uncond", dtype, [5, 16], seed: 3)) }
        return e
    }

    /// Loads `path` expecting an error; returns it.
    private func loadError(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> TrainingDataError? {
        do {
            _ = try TrainingData(contentsOf: URL(fileURLWithPath: path))
            XCTFail("\(path) loaded", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    /// Loads `path` and validates it for the test config, expecting an error from `validate`.
    private func validateError(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> TrainingDataError? {
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: path))
        do {
            try data.validate(for: config)
            XCTFail("\(path) validated", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    // MARK: - valid files

    func testF32FileRoundTrips() throws {
        var entries = goodEntries(.f32)
        entries.append(("extra.index", .i64, [3], [7, 8, 9]))
        let path = try write("pairs.safetensors", entries, metadata: [
            "format": "alter.training-data", "format_version": "1", "vae_scaling_factor": "0.18215", "source": "unit test",
        ])
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(data.path, path)
        XCTAssertEqual(data.count, 3)
        XCTAssertEqual(data.latents.shape, [3, 4, 8, 8])
        XCTAssertEqual(data.context.shape, [3, 5, 16])
        XCTAssertEqual(data.latents.scalars, entries[0].values)
        XCTAssertEqual(data.context.scalars, entries[1].values)
        XCTAssertEqual(data.uncond?.shape, [5, 16])
        XCTAssertEqual(data.uncond?.scalars, entries[2].values)
        XCTAssertEqual([data.latentChannels, data.latentHeight, data.latentWidth, data.contextLength, data.contextDim], [4, 8, 8, 5, 16])
        XCTAssertEqual(data.extraNames, ["extra.index"])
        XCTAssertEqual(data.metadata["source"], "unit test")
        XCTAssertEqual(data.vaeScalingFactor, 0.18215)
        XCTAssertNoThrow(try data.validate(for: config))
    }

    func testHalfPrecisionFilesRoundTrip() throws {
        for dtype in [DType.f16, .bf16] {
            let entries = goodEntries(dtype)
            let path = try write("pairs-\(dtype.rawValue).safetensors", entries)
            let data = try TrainingData(path: path)
            XCTAssertEqual(data.latents.scalars, entries[0].values, "\(dtype)")
            XCTAssertEqual(data.context.scalars, entries[1].values, "\(dtype)")
            XCTAssertEqual(data.uncond?.scalars, entries[2].values, "\(dtype)")
            XCTAssertNil(data.vaeScalingFactor)
            XCTAssertNoThrow(try data.validate(for: config))
        }
        // Mixed dtypes, no uncond.
        let mixed = [entry("latents", .f16, [2, 4, 8, 16]), entry("context", .bf16, [2, 77, 16])]
        let data = try TrainingData(path: try write("mixed.safetensors", mixed))
        XCTAssertNil(data.uncond)
        XCTAssertEqual(data.latents.scalars, mixed[0].values)
        XCTAssertEqual(data.context.scalars, mixed[1].values)
        XCTAssertNoThrow(try data.validate(for: config))
    }

    func testF16ConversionMatchesTheReader() throws {
        // Values that F16 rounds: the loaded values are the writer's F16 values read back (the
        // conversion SafeTensorsFile.floats applies), not the originals.
        let raw: [Float] = (0..<(2 * 4 * 8 * 8)).map { sin(Float($0) * 0.37) * 3.3 }
        let path = try write("rounded.safetensors", [("latents", .f16, [2, 4, 8, 8], raw), entry("context", .f32, [2, 1, 16])])
        let data = try TrainingData(path: path)
        XCTAssertEqual(data.latents.scalars, try SafeTensorsFile(path: path).floats("latents"))
        XCTAssertNotEqual(data.latents.scalars, raw)
    }

    // MARK: - batches

    func testBatchCopiesTheSelectedSamples() throws {
        let l = entry("latents", .f16, [5, 4, 8, 8], seed: 4), c = entry("context", .f32, [5, 3, 16], seed: 5)
        let data = try TrainingData(path: try write("five.safetensors", [l, c]))
        let indices = [4, 0, 4, 2]
        let b = data.batch(indices: indices)
        XCTAssertEqual(b.latents.shape, [4, 4, 8, 8])
        XCTAssertEqual(b.context.shape, [4, 3, 16])
        let lPer = 4 * 8 * 8, cPer = 3 * 16
        XCTAssertEqual(b.latents.scalars, indices.flatMap { l.values[($0 * lPer)..<(($0 + 1) * lPer)] })
        XCTAssertEqual(b.context.scalars, indices.flatMap { c.values[($0 * cPer)..<(($0 + 1) * cPer)] })
        // The same from tensors in memory.
        let memory = try TrainingData(latents: data.latents, context: data.context)
        XCTAssertEqual(memory.batch(indices: indices).latents.scalars, b.latents.scalars)
        XCTAssertEqual(memory.batch(indices: indices).context.scalars, b.context.scalars)
        // A copy: writing the batch leaves the data alone.
        b.latents.data[0] = 1000
        XCTAssertEqual(data.batch(indices: [4]).latents.scalars[0], l.values[4 * lPer])
        XCTAssertEqual(memory.latents.scalars, l.values)
        XCTAssertEqual(data.batch(indices: []).latents.shape, [0, 4, 8, 8])
    }

    // MARK: - errors while loading

    /// A FIFO, a directory, a device or a link to a device as `--data`: refused before opening
    /// (a FIFO would block in `open`, /dev/zero would be read forever), naming the file.
    func testSpecialFilesAreRefusedBeforeOpening() throws {
        let fifo = dir.appendingPathComponent("data.fifo").path
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let zero = dir.appendingPathComponent("zero.safetensors").path
        try FileManager.default.createSymbolicLink(atPath: zero, withDestinationPath: "/dev/zero")
        for (path, kind) in [(fifo, "a FIFO"), (dir.path, "a directory"), ("/dev/zero", "a character device"), (zero, "a character device")] {
            let e = loadError(path)
            XCTAssertEqual(e?.file, path)
            XCTAssertTrue(e?.description.contains("is \(kind), not a regular file") ?? false, "\(String(describing: e))")
        }
    }


    func testNotASafetensorsFile() throws {
        let path = dir.appendingPathComponent("captions.txt").path
        try Data("a photograph of an astronaut riding a horse\n".utf8).write(to: URL(fileURLWithPath: path))
        let e = loadError(path)
        guard case .safetensors(let inner) = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(inner.file, path)
        XCTAssertEqual(e?.description, "\(path): header length 7453303930163830881 exceeds the 104857600-byte limit; this is not a safetensors file")
        let short = dir.appendingPathComponent("short.safetensors").path
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: short))
        XCTAssertEqual(loadError(short)?.description, "\(short): file is 3 bytes; a safetensors file needs at least 8 (header length); this is not a safetensors file")

        let missing = dir.appendingPathComponent("nope.safetensors").path
        let m = loadError(missing)
        XCTAssertEqual(m?.file, missing)
        XCTAssertTrue(m?.description.contains("cannot open") ?? false, "\(String(describing: m))")
    }

    func testMissingLatentsAndContext() throws {
        let noLatents = try write("nolatents.safetensors", [entry("latent", .f32, [3, 4, 8, 8]), entry("context", .f32, [3, 5, 16])])
        XCTAssertEqual(loadError(noLatents), .missingTensor(file: noLatents, tensor: "latents", found: ["context", "latent"]))
        XCTAssertEqual(
            loadError(noLatents)?.description,
            "\(noLatents): no tensor 'latents' (expected [N, C, H, W] VAE latents, already multiplied by the VAE scaling factor); the file holds 'context', 'latent'")
        let noContext = try write("nocontext.safetensors", [entry("latents", .f32, [3, 4, 8, 8])])
        let e = loadError(noContext)
        XCTAssertEqual(e, .missingTensor(file: noContext, tensor: "context", found: ["latents"]))
        XCTAssertEqual(e?.tensor, "context")
        XCTAssertTrue(e?.description.contains("[N, S, D] text-encoder hidden states") ?? false)
    }

    func testNonFloatDType() throws {
        let path = try write("int.safetensors", [entry("latents", .f32, [3, 4, 8, 8]), ("context", .u8, [3, 5, 16], Array(repeating: 1, count: 240))])
        let e = loadError(path)
        XCTAssertEqual(e, .notFloat(file: path, tensor: "context", dtype: .u8))
        XCTAssertEqual(e?.description, "\(path): tensor 'context' has dtype U8; training data must be F32, F16 or BF16")
    }

    func testWrongRank() throws {
        let latents3 = try write("rank3.safetensors", [entry("latents", .f32, [3, 4, 64]), entry("context", .f32, [3, 5, 16])])
        let e = loadError(latents3)
        XCTAssertEqual(e, .wrongShape(file: latents3, tensor: "latents", shape: [3, 4, 64], expected: "rank 4: [N, C, H, W]"))
        XCTAssertEqual(e?.description, "\(latents3): tensor 'latents' has shape [3, 4, 64]; expected rank 4: [N, C, H, W]")
        let context2 = try write("ctx2.safetensors", [entry("latents", .f32, [3, 4, 8, 8]), entry("context", .f32, [15, 16])])
        XCTAssertEqual(loadError(context2), .wrongShape(file: context2, tensor: "context", shape: [15, 16], expected: "rank 3: [N, S, D]"))
    }

    func testEmptyAndZeroSizedTensors() throws {
        let empty = try write("empty.safetensors", [entry("latents", .f32, [0, 4, 8, 8]), entry("context", .f32, [0, 5, 16])])
        XCTAssertEqual(loadError(empty), .wrongShape(file: empty, tensor: "latents", shape: [0, 4, 8, 8], expected: "at least one sample (N >= 1)"))
        let noTokens = try write("notokens.safetensors", [entry("latents", .f32, [2, 4, 8, 8]), entry("context", .f32, [2, 0, 16])])
        XCTAssertEqual(loadError(noTokens)?.tensor, "context")
        let zeroWidth = try write("zerow.safetensors", [entry("latents", .f32, [2, 4, 8, 0]), entry("context", .f32, [2, 5, 16])])
        XCTAssertEqual(loadError(zeroWidth)?.tensor, "latents")
    }

    func testSampleCountMismatch() throws {
        let path = try write("mismatch.safetensors", [entry("latents", .f32, [3, 4, 8, 8]), entry("context", .f32, [2, 5, 16])])
        let e = loadError(path)
        XCTAssertEqual(e, .sampleCountMismatch(file: path, latents: 3, context: 2))
        XCTAssertEqual(e?.description, "\(path): tensor 'context' holds 2 samples but 'latents' holds 3; both need the same N (one context per latent)")
    }

    func testBadUncondShape() throws {
        for shape in [[5, 32], [4, 16], [1, 5, 16], [16]] {
            var entries = goodEntries(uncond: false)
            entries.append(entry("uncond", .f32, shape))
            let path = try write("uncond.safetensors", entries)
            let e = loadError(path)
            XCTAssertEqual(e, .wrongShape(file: path, tensor: "uncond", shape: shape, expected: "[S, D] = [5, 16], one sample of 'context' [3, 5, 16]"))
            XCTAssertEqual(
                e?.description,
                "\(path): tensor 'uncond' has shape \(shape); expected [S, D] = [5, 16], one sample of 'context' [3, 5, 16]")
        }
    }

    func testUnexpectedTensorAndExtraPrefix() throws {
        var entries = goodEntries()
        entries.append(entry("timesteps", .f32, [3]))
        let path = try write("unexpected.safetensors", entries)
        let e = loadError(path)
        XCTAssertEqual(e, .unexpectedTensor(file: path, tensor: "timesteps"))
        XCTAssertEqual(
            e?.description,
            "\(path): unexpected tensor 'timesteps'; a training-data file holds 'latents', 'context' and optionally 'uncond' (put anything else under the 'extra.' prefix)")
        entries[entries.count - 1].name = "extra.timesteps"
        let ok = try TrainingData(path: try write("extra.safetensors", entries))
        XCTAssertEqual(ok.extraNames, ["extra.timesteps"])
    }

    func testNonFiniteValues() throws {
        var entries = goodEntries(.f16)
        entries[0].values[4 * 8 * 8 + 5] = .nan  // sample 1
        let path = try write("nan.safetensors", entries)
        let e = loadError(path)
        guard case .nonFinite(let f, let t, let s, let v) = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual([f, t], [path, "latents"])
        XCTAssertEqual(s, 1)
        XCTAssertTrue(v.isNaN)
        XCTAssertEqual(e?.description, "\(path): tensor 'latents' holds a non-finite value (nan) in sample 1; training data must be finite")
        // Not checked when asked not to.
        XCTAssertNoThrow(try TrainingData(path: path, checkValues: false))

        var inf = goodEntries(.bf16)
        inf[2].values[3] = -.infinity
        let infPath = try write("inf.safetensors", inf)
        XCTAssertEqual(loadError(infPath), .nonFinite(file: infPath, tensor: "uncond", sample: nil, value: -.infinity))
        XCTAssertThrowsError(try TrainingData(latents: Tensor(repeating: .infinity, shape: [1, 4, 8, 8]), context: Tensor(zeros: [1, 2, 16])))
    }

    func testNonFiniteScanOfRawValues() {
        // Every dtype, length, position, misalignment; large finite values, subnormals and -0 pass.
        let finite: [Float] = [1, -0.0, 6e-8, -65504, 3.0e38, 1.1754944e-38, -2.5]
        for dtype in [DType.f32, .f16, .bf16] {
            for n in 1...11 {
                for shift in 0..<2 {
                    func scan(_ values: [Float]) -> Int? {
                        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: n * dtype.byteSize + shift, alignment: 8)
                        defer { raw.deallocate() }
                        let out = UnsafeMutableRawBufferPointer(rebasing: raw[shift...])
                        values.withUnsafeBytes { DTypeConversion.convert($0, from: .f32, to: dtype, into: out) }
                        return TrainingData.firstNonFiniteIndex(UnsafeRawBufferPointer(out), dtype)
                    }
                    let base = (0..<n).map { finite[$0 % finite.count] }.map { dtype == .f32 ? $0 : max(-65504, min(65504, $0)) }
                    XCTAssertNil(scan(base), "\(dtype) n=\(n)")
                    for pos in 0..<n {
                        for bad in [Float.nan, .infinity, -.infinity] {
                            var v = base
                            v[pos] = bad
                            if pos + 1 < n { v[n - 1] = .nan }  // only the first is reported
                            XCTAssertEqual(scan(v), pos, "\(dtype) n=\(n) pos=\(pos) shift=\(shift) \(bad)")
                        }
                    }
                }
            }
        }
    }

    func testMetadata() throws {
        let version = try write("v2.safetensors", goodEntries(), metadata: ["format_version": "2"])
        XCTAssertEqual(loadError(version)?.description, "\(version): __metadata__ 'format_version' is '2'; expected '1' (this alter reads version 1)")
        let format = try write("fmt.safetensors", goodEntries(), metadata: ["format": "alter.bundle"])
        XCTAssertEqual(loadError(format), .invalidMetadata(file: format, key: "format", value: "alter.bundle", expected: "'alter.training-data'"))
        let scale = try write("scale.safetensors", goodEntries(), metadata: ["vae_scaling_factor": "0.18215x"])
        XCTAssertEqual(loadError(scale)?.description, "\(scale): __metadata__ 'vae_scaling_factor' is '0.18215x'; expected a positive decimal number such as 0.18215")
        // Keys the format does not define are kept and ignored.
        let other = try TrainingData(path: try write("other.safetensors", goodEntries(), metadata: ["prompts": "a, b, c"]))
        XCTAssertEqual(other.metadata, ["prompts": "a, b, c"])
    }

    // MARK: - errors against the model

    func testWrongLatentChannels() throws {
        let path = try write("pairs.safetensors", [entry("latents", .f32, [8, 3, 16, 16]), entry("context", .f32, [8, 5, 16])])
        let e = try validateError(path)
        XCTAssertEqual(e, .latentChannels(file: path, shape: [8, 3, 16, 16], expected: 4))
        XCTAssertEqual(e?.tensor, "latents")
        XCTAssertEqual(e?.description, "\(path): tensor 'latents' has shape [8, 3, 16, 16]; the model takes 4 latent channels ([N, 4, H, W])")
    }

    func testLatentSizeNotAMultiple() throws {
        for shape in [[2, 4, 12, 8], [2, 4, 8, 20], [2, 4, 4, 4]] {
            let path = try write("size.safetensors", [entry("latents", .f32, shape), entry("context", .f32, [2, 5, 16])])
            let e = try validateError(path)
            XCTAssertEqual(e, .latentSize(file: path, shape: shape, multiple: 8, levels: 4))
            XCTAssertEqual(e?.description, "\(path): tensor 'latents' has shape \(shape); the model's 4 levels need H and W to be positive multiples of 8")
        }
        // A 3-level model needs multiples of 4 only.
        let path = try write("size4.safetensors", [entry("latents", .f32, [2, 4, 12, 4]), entry("context", .f32, [2, 5, 16])])
        var three = config
        three.blockOutChannels = [4, 8, 8]
        three.attentionHeads = [1, 2, 2]
        three.downBlocks = [.crossAttention, .crossAttention, .plain]
        three.upBlocks = [.plain, .crossAttention, .crossAttention]
        XCTAssertNoThrow(try TrainingData(path: path).validate(for: three))
    }

    func testContextDimMismatch() throws {
        let path = try write("ctx.safetensors", [entry("latents", .f32, [2, 4, 8, 8]), entry("context", .f32, [2, 77, 12]), entry("uncond", .f32, [77, 12])])
        let e = try validateError(path)
        XCTAssertEqual(e, .contextDim(file: path, tensor: "context", shape: [2, 77, 12], expected: 16))
        XCTAssertEqual(e?.description, "\(path): tensor 'context' has shape [2, 77, 12]; the model's cross-attention takes D = 16 ([N, S, 16])")
    }

    // MARK: - the example

    /// examples/sd21-tiny-data.safetensors (written by scripts/make_fixtures.py --example) fits the example model.
    func testExampleDataFitsTheExampleModel() throws {
        let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples")
        let configPath = examples.appendingPathComponent("sd21-tiny.config.json").path
        let config = try UNetConfig(diffusersJSON: Data(contentsOf: URL(fileURLWithPath: configPath)), source: configPath)
        let data = try TrainingData(contentsOf: examples.appendingPathComponent("sd21-tiny-data.safetensors"))
        try data.validate(for: config)
        XCTAssertEqual(data.count, 32)
        XCTAssertEqual(data.latentShape, [32, 4, 16, 16])
        XCTAssertEqual(data.contextShape, [32, 5, 32])
        XCTAssertEqual(data.uncond?.shape, [5, 32])
        XCTAssertEqual(data.vaeScalingFactor, 0.18215)
        // Roughly unit-variance latents, as SD's scaled latents are.
        let l = data.latents.scalars
        let mean = l.reduce(0, +) / Float(l.count)
        let std = (l.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(l.count)).squareRoot()
        XCTAssertEqual(std, 1, accuracy: 0.25)
    }
}
