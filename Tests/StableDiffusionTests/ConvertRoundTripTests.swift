import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// `convert`: diffusers <-> original, in every storage dtype, checked byte for byte against the
/// source and against the original-layout fixtures written by the Python key table (itself
/// verified against diffusers' `convert_ldm_unet_checkpoint`).
final class ConvertRoundTripTests: XCTestCase {
    /// `bytes` of a `from` tensor converted to `to` with `DTypeConversion`.
    func converted(_ bytes: UnsafeRawBufferPointer, from: DType, to: DType) -> [UInt8] {
        let count = bytes.count / from.byteSize
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: count * to.byteSize, alignment: 16)
        defer { out.deallocate() }
        DTypeConversion.convert(bytes, from: from, to: to, into: out)
        return Array(out)
    }

    func testDiffusersOriginalDiffusersIsBitIdentical() throws {
        let tmp = try TemporaryDirectory()
        let reference = try SafeTensorsFile(path: Fixtures.sd2DiffusersWeights)
        let config = try Fixtures.sd2ConfigValue()
        let originalNames = Set(UNetKeyMap(config: config, layout: .original).entries.map(\.stored))
        for dtype in [DType.f32, .f16, .bf16] {
            let label = dtype.rawValue
            let source = try UNetCheckpoint(path: Fixtures.sd2Diffusers)
            let originalPath = tmp.path("unet-\(label).safetensors")
            let s1 = try source.convert(to: originalPath, layout: .original, dtype: dtype)
            XCTAssertEqual(s1.tensors, 684, label)
            XCTAssertEqual(s1.weightsPath, originalPath)
            XCTAssertEqual(s1.bytes, config.parameterCount * dtype.byteSize, label)

            let middle = try SafeTensorsFile(path: originalPath)
            XCTAssertEqual(Set(middle.names), originalNames, label)
            XCTAssertTrue(middle.tensors.allSatisfy { $0.dtype == dtype }, label)

            let original = try UNetCheckpoint(path: originalPath, options: Fixtures.options(config: Fixtures.sd2Config))
            XCTAssertEqual(original.source.layout, .original)
            let folder = tmp.path("unet-\(label)")
            let s2 = try original.convert(to: folder, layout: .diffusers, dtype: dtype)
            XCTAssertEqual(s2.weightsPath, folder + "/diffusion_pytorch_model.safetensors")

            let back = try SafeTensorsFile(path: s2.weightsPath)
            XCTAssertEqual(Set(back.names), Set(reference.names), label)
            for info in reference.tensors {
                guard let b = back.info(info.name) else { XCTFail("\(label): \(info.name) missing after round trip"); continue }
                XCTAssertEqual(b.dtype, dtype, info.name)
                XCTAssertEqual(b.shape, info.shape, info.name)
                let expected = converted(reference.rawBytes(info), from: .f32, to: dtype)
                XCTAssertTrue(Array(back.rawBytes(b)) == expected, "\(label): \(info.name) bytes differ after diffusers -> original -> diffusers")
                // And through the original file in between.
                let m = try XCTUnwrap(original.location(info.name))
                XCTAssertTrue(Array(m.file.rawBytes(m.info)) == expected, "\(label): \(info.name) bytes differ in the original-layout file")
            }
            if dtype == .f32 {
                for info in reference.tensors {
                    XCTAssertTrue(Array(back.rawBytes(try back.require(info.name))) == Array(reference.rawBytes(info)), info.name)
                }
            }
            // A converted folder loads again, with an equal config.
            let reloaded = try UNetCheckpoint(path: folder)
            XCTAssertEqual(reloaded.source.kind, .diffusersUNet)
            XCTAssertEqual(reloaded.config, config, label)
        }
    }

    /// diffusers fp32 fixture -> original layout equals the UNet part of the torch-written
    /// original fixture: same names, same bytes.
    func testDiffusersToOriginalMatchesPythonKeyTable() throws {
        try checkAgainstOriginalFixture(
            diffusers: Fixtures.sd2Diffusers, config: nil, original: Fixtures.sd2Original, label: "tiny-sd2 fp32")
    }

    func testTinySD1DiffusersToOriginalMatchesPythonKeyTable() throws {
        try checkAgainstOriginalFixture(
            diffusers: Fixtures.sd1Diffusers, config: Fixtures.sd1Config, original: Fixtures.sd1Original, label: "tiny-sd1 fp16")
    }

    func checkAgainstOriginalFixture(diffusers: String, config: String?, original: String, label: String) throws {
        let tmp = try TemporaryDirectory()
        let ckpt = try UNetCheckpoint(path: diffusers, options: Fixtures.options(config: config))
        let out = tmp.path("converted.safetensors")
        _ = try ckpt.convert(to: out, layout: .original, dtype: nil)
        let converted = try SafeTensorsFile(path: out)
        let fixture = try SafeTensorsFile(path: original)
        let fixtureUNet = fixture.tensors.filter { $0.name.hasPrefix("model.diffusion_model.") }
        XCTAssertEqual(fixtureUNet.count, 684, label)
        let convertedNames = Set(converted.names), fixtureNames = Set(fixtureUNet.map(\.name))
        XCTAssertEqual(convertedNames, fixtureNames, label)
        for n in convertedNames.subtracting(fixtureNames).sorted() { XCTFail("\(label): we write \(n), the Python table does not") }
        for n in fixtureNames.subtracting(convertedNames).sorted() { XCTFail("\(label): the Python table writes \(n), we do not") }
        for info in fixtureUNet {
            guard let c = converted.info(info.name) else { continue }
            XCTAssertEqual(c.dtype, info.dtype, info.name)
            XCTAssertEqual(c.shape, info.shape, info.name)
            XCTAssertTrue(Array(converted.rawBytes(c)) == Array(fixture.rawBytes(info)), "\(label): \(info.name) bytes differ")
        }
    }

    /// The other direction, against torch-written diffusers files: original fp16 -> diffusers equals
    /// the fp16 variant folder, original bf16 -> diffusers equals the pipeline's bf16 UNet, and the
    /// tiny-sd1 original -> diffusers equals its diffusers file.
    func testOriginalToDiffusersMatchesDiffusersFixtures() throws {
        let cases: [(String, String, String, String)] = [
            (Fixtures.sd2Original, Fixtures.sd2Config, Fixtures.sd2DiffusersWeights, "tiny-sd2 fp32"),
            (Fixtures.sd2OriginalFP16, Fixtures.sd2Config, Fixtures.path("tiny-sd2/diffusers-fp16/diffusion_pytorch_model.fp16.safetensors"), "tiny-sd2 fp16"),
            (Fixtures.sd2OriginalBF16, Fixtures.sd2Config, Fixtures.path("tiny-sd2/pipeline/unet/diffusion_pytorch_model.safetensors"), "tiny-sd2 bf16"),
            (Fixtures.sd1Original, Fixtures.sd1Config, Fixtures.sd1Diffusers, "tiny-sd1 fp16"),
        ]
        let tmp = try TemporaryDirectory()
        for (i, (original, config, expectedPath, label)) in cases.enumerated() {
            let ckpt = try UNetCheckpoint(path: original, options: Fixtures.options(config: config))
            let summary = try ckpt.convert(to: tmp.path("out\(i)"), layout: .diffusers, dtype: nil)
            let got = try SafeTensorsFile(path: summary.weightsPath)
            let expected = try SafeTensorsFile(path: expectedPath)
            XCTAssertEqual(Set(got.names), Set(expected.names), label)
            for info in expected.tensors {
                guard let g = got.info(info.name) else { continue }
                XCTAssertEqual(g.dtype, info.dtype, "\(label): \(info.name)")
                XCTAssertEqual(g.shape, info.shape, "\(label): \(info.name)")
                XCTAssertTrue(Array(got.rawBytes(g)) == Array(expected.rawBytes(info)), "\(label): \(info.name) bytes differ")
            }
        }
    }

    /// The EMA copies can be converted too; the result equals the expected diffusers EMA weights.
    func testEMAConvertsToDiffusers() throws {
        let tmp = try TemporaryDirectory()
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2OriginalEMA, options: Fixtures.options(config: Fixtures.sd2Config, ema: true))
        let summary = try ckpt.convert(to: tmp.path("ema"), layout: .diffusers, dtype: nil)
        let got = try SafeTensorsFile(path: summary.weightsPath)
        let expected = try SafeTensorsFile(path: Fixtures.sd2EMADiffusers)
        XCTAssertEqual(Set(got.names), Set(expected.names))
        for info in expected.tensors {
            XCTAssertTrue(Array(got.rawBytes(try got.require(info.name))) == Array(expected.rawBytes(info)), info.name)
        }
    }

    func testConvertedConfigParsesBackEqual() throws {
        let tmp = try TemporaryDirectory()
        for (weights, config, label) in [
            (Fixtures.sd2Diffusers, nil as String?, "tiny-sd2"),
            (Fixtures.sd1Diffusers, Fixtures.sd1Config, "tiny-sd1"),
        ] {
            let ckpt = try UNetCheckpoint(path: weights, options: Fixtures.options(config: config))
            let out = tmp.path(label)
            _ = try ckpt.convert(to: out, layout: .diffusers, dtype: .f16)
            let path = out + "/config.json"
            let parsed = try UNetConfig(diffusersJSON: Data(contentsOf: URL(fileURLWithPath: path)), source: path)
            XCTAssertEqual(parsed, ckpt.config, label)
        }
        // And the full SD2.1 config survives its own JSON.
        let sd21 = UNetConfig.sd21
        XCTAssertEqual(try UNetConfig(diffusersJSON: sd21.diffusersJSON(), source: "sd21"), sd21)
        var sd1 = UNetConfig()
        sd1.crossAttentionDim = 768
        sd1.useLinearProjection = false
        sd1.attentionHeads = [8, 8, 8, 8]
        XCTAssertEqual(try UNetConfig(diffusersJSON: sd1.diffusersJSON(), source: "sd1"), sd1)
    }
}
