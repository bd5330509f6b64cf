import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// Every fixture, in every layout, dtype and packaging, loads to the same tensors: the reference
/// diffusers fp32 weights cast to the source's dtype. The half-precision files were cast by torch,
/// so bit-exact equality also checks `DTypeConversion` against torch's rounding.
final class FixtureEquivalenceTests: XCTestCase {
    struct Source {
        var label: String
        var path: String
        var options: LoadOptions
        var dtype: DType
        var kind: CheckpointKind
        var layout: CheckpointLayout
    }

    static var sd2Sources: [Source] {
        let cfg = Fixtures.sd2Config
        return [
            Source(label: "diffusers fp32", path: Fixtures.sd2Diffusers, options: Fixtures.options(),
                   dtype: .f32, kind: .diffusersUNet, layout: .diffusers),
            Source(label: "diffusers fp16 variant (found without --variant)", path: Fixtures.sd2DiffusersFP16,
                   options: Fixtures.options(), dtype: .f16, kind: .diffusersUNet, layout: .diffusers),
            Source(label: "diffusers fp16 variant (--variant fp16)", path: Fixtures.sd2DiffusersFP16,
                   options: Fixtures.options(variant: "fp16"), dtype: .f16, kind: .diffusersUNet, layout: .diffusers),
            Source(label: "sharded", path: Fixtures.sd2Sharded, options: Fixtures.options(),
                   dtype: .f32, kind: .diffusersUNet, layout: .diffusers),
            Source(label: "pipeline (bf16)", path: Fixtures.sd2Pipeline, options: Fixtures.options(),
                   dtype: .bf16, kind: .diffusersPipeline, layout: .diffusers),
            Source(label: "diffusers weights file", path: Fixtures.sd2DiffusersWeights, options: Fixtures.options(config: cfg),
                   dtype: .f32, kind: .diffusersWeightsFile, layout: .diffusers),
            Source(label: "original fp32", path: Fixtures.sd2Original, options: Fixtures.options(config: cfg),
                   dtype: .f32, kind: .originalSingleFile, layout: .original),
            Source(label: "original fp16", path: Fixtures.sd2OriginalFP16, options: Fixtures.options(config: cfg),
                   dtype: .f16, kind: .originalSingleFile, layout: .original),
            Source(label: "original bf16", path: Fixtures.sd2OriginalBF16, options: Fixtures.options(config: cfg),
                   dtype: .bf16, kind: .originalSingleFile, layout: .original),
            Source(label: "original with EMA, plain weights", path: Fixtures.sd2OriginalEMA, options: Fixtures.options(config: cfg),
                   dtype: .f32, kind: .originalSingleFile, layout: .original),
        ]
    }

    func testTinySD2SourcesMatchDiffusersFP32() throws {
        let reference = try SafeTensorsFile(path: Fixtures.sd2DiffusersWeights)
        let expectedConfig = try Fixtures.sd2ConfigValue()
        let parameters = expectedConfig.parameters()
        XCTAssertEqual(parameters.count, 684)
        XCTAssertEqual(expectedConfig.parameterCount, 56_440)
        XCTAssertEqual(Set(reference.names), Set(parameters.map(\.name)), "reference file holds exactly the canonical parameters")

        for s in Self.sd2Sources {
            let ckpt: UNetCheckpoint
            do { ckpt = try UNetCheckpoint(path: s.path, options: s.options) } catch {
                XCTFail("\(s.label): \(error)")
                continue
            }
            XCTAssertEqual(ckpt.source.kind, s.kind, s.label)
            XCTAssertEqual(ckpt.source.layout, s.layout, s.label)
            XCTAssertEqual(ckpt.config, expectedConfig, s.label)
            XCTAssertEqual(ckpt.report.mapped, parameters.count, s.label)
            XCTAssertTrue(ckpt.report.missing.isEmpty && ckpt.report.unused.isEmpty, "\(s.label): \(ckpt.report)")
            var mismatched = 0
            for p in parameters {
                guard let loc = ckpt.location(p.name) else { XCTFail("\(s.label): \(p.name) not located"); continue }
                XCTAssertEqual(loc.info.dtype, s.dtype, "\(s.label): \(p.name) dtype")
                XCTAssertEqual(loc.info.shape, p.shape, "\(s.label): \(p.name) shape")
                let expected = castThrough(try reference.floats(p.name), s.dtype)
                // Details for the first 10 differing tensors of a source, then only the count.
                if !assertBitExact(try ckpt.floats(p.name), expected, tensor: p.name, context: s.label, quiet: mismatched >= 10) {
                    mismatched += 1
                }
            }
            XCTAssertEqual(mismatched, 0, "\(s.label): \(mismatched) of \(parameters.count) tensors differ")
        }
    }

    /// The half-precision fixtures make the torch-vs-`DTypeConversion` check meaningful only if
    /// some values actually round; make sure they do.
    func testHalfPrecisionFixturesActuallyRound() throws {
        let reference = try SafeTensorsFile(path: Fixtures.sd2DiffusersWeights)
        var changedF16 = 0, changedBF16 = 0
        for name in reference.names {
            let v = try reference.floats(name)
            changedF16 += zip(v, castThrough(v, .f16)).filter { $0.bitPattern != $1.bitPattern }.count
            changedBF16 += zip(v, castThrough(v, .bf16)).filter { $0.bitPattern != $1.bitPattern }.count
        }
        XCTAssertGreaterThan(changedF16, 1000)
        XCTAssertGreaterThan(changedBF16, 1000)

        // torch rounds to nearest: truncating to bf16 would disagree with the bf16 fixture.
        let pipeline = try SafeTensorsFile(path: Fixtures.path("tiny-sd2/pipeline/unet/diffusion_pytorch_model.safetensors"))
        var truncationDiffers = 0
        for name in reference.names {
            let truncated = try reference.floats(name).map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) }
            truncationDiffers += zip(truncated, try pipeline.floats(name)).filter { $0.bitPattern != $1.bitPattern }.count
        }
        XCTAssertGreaterThan(truncationDiffers, 1000)
    }

    func testTinySD1OriginalMatchesDiffusers() throws {
        let expectedConfig = try Fixtures.sd1ConfigValue()
        XCTAssertFalse(expectedConfig.useLinearProjection)
        XCTAssertEqual(expectedConfig.attentionHeads, [2, 2, 2, 2])
        XCTAssertEqual(expectedConfig.parameterCount, 55_576)
        let reference = try UNetCheckpoint(path: Fixtures.sd1Diffusers, options: Fixtures.options(config: Fixtures.sd1Config))
        XCTAssertEqual(reference.source.kind, .diffusersWeightsFile)
        let original = try UNetCheckpoint(path: Fixtures.sd1Original, options: Fixtures.options(config: Fixtures.sd1Config))
        XCTAssertEqual(original.source.kind, .originalSingleFile)
        XCTAssertEqual(original.config, expectedConfig)
        XCTAssertEqual(original.report.mapped, 684)
        XCTAssertTrue(original.report.unused.isEmpty, original.report.description)
        for p in expectedConfig.parameters() {
            XCTAssertEqual(original.location(p.name)?.info.dtype, .f16, p.name)
            XCTAssertEqual(reference.location(p.name)?.info.dtype, .f16, p.name)
            // fp16 -> f32 -> fp16 -> f32 is the identity: the cast helper must not change anything.
            let expected = castThrough(try reference.floats(p.name), .f16)
            assertBitExact(try original.floats(p.name), expected, tensor: p.name, context: "tiny-sd1 original vs diffusers")
        }
    }

    /// Loading without a config: the structure is inferred and the same tensors are found.
    func testOriginalWithoutConfigLoadsSameTensors() throws {
        let withConfig = try UNetCheckpoint(path: Fixtures.sd2Original, options: Fixtures.options(config: Fixtures.sd2Config))
        let inferred = try UNetCheckpoint(path: Fixtures.sd2Original)
        XCTAssertEqual(inferred.configOrigin, "inferred from tensors")
        XCTAssertEqual(inferred.config.parameters(), withConfig.config.parameters())
        for p in withConfig.config.parameters() {
            XCTAssertEqual(inferred.location(p.name)?.info, withConfig.location(p.name)?.info, p.name)
        }
    }
}
