import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// `CheckpointInspection`: components, parameter counts, family, EMA and prediction type, from
/// headers only.
final class CheckpointInspectionTests: XCTestCase {
    func component(_ i: CheckpointInspection, _ c: Component) -> CheckpointInspection.ComponentEntry? {
        i.components.first { $0.component == c.rawValue }
    }

    func fileTotals(_ path: String) throws -> (tensors: Int, elements: Int, bytes: Int) {
        let f = try SafeTensorsFile(path: path)
        return (f.tensors.count, f.tensors.reduce(0) { $0 + $1.elementCount }, f.tensors.reduce(0) { $0 + $1.byteCount })
    }

    func testOriginalSD2() throws {
        let path = Fixtures.sd2Original
        let i = try CheckpointInspection(path: path, options: Fixtures.options(config: Fixtures.sd2Config))
        let totals = try fileTotals(path)
        XCTAssertEqual(i.kind, CheckpointKind.originalSingleFile.rawValue)
        XCTAssertEqual(i.layout, "original")
        XCTAssertEqual(i.tensorCount, totals.tensors)
        XCTAssertEqual(i.bytes, try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int))

        let unet = try XCTUnwrap(component(i, .unet))
        XCTAssertEqual(unet.tensors, 684)
        XCTAssertEqual(unet.parameters, 56_440)
        XCTAssertEqual(unet.bytes, 56_440 * 4)
        XCTAssertEqual(component(i, .vae)?.tensors, 6)
        XCTAssertEqual(component(i, .textEncoder)?.tensors, 5)
        XCTAssertEqual(component(i, .other)?.tensors, 2, "betas, alphas_cumprod")
        XCTAssertNil(component(i, .ema))
        XCTAssertEqual(i.components.map(\.component), ["UNet", "VAE", "text encoder", "other"])
        XCTAssertEqual(i.components.reduce(0) { $0 + $1.tensors }, totals.tensors)
        XCTAssertEqual(i.components.reduce(0) { $0 + $1.parameters }, totals.elements)
        XCTAssertEqual(i.components.reduce(0) { $0 + $1.bytes }, totals.bytes)
        XCTAssertEqual(i.dtypes, ["F32": totals.tensors])

        XCTAssertTrue(i.family.hasPrefix("SD2.x-shaped"), i.family)
        XCTAssertTrue(i.predictionType.contains("v_prediction"), i.predictionType)
        XCTAssertFalse(i.hasEMA)
        XCTAssertNil(i.unetError)
        let u = try XCTUnwrap(i.unet)
        XCTAssertEqual(u.parameters, 56_440)
        XCTAssertEqual(u.mapped, 684)
        XCTAssertEqual(u.missing + u.unused + u.misshapen, 0)
        XCTAssertEqual(u.blockOutChannels, [4, 8, 8, 8])
        XCTAssertEqual(u.attentionHeads, [1, 2, 2, 2])
        XCTAssertTrue(u.upcastAttention)
        XCTAssertEqual(u.configOrigin, Fixtures.sd2Config)
        XCTAssertEqual(u.assumptions, [])
        XCTAssertNil(i.tensors)
    }

    func testOriginalSD2WithoutConfig() throws {
        let i = try CheckpointInspection(path: Fixtures.sd2Original, listTensors: true)
        XCTAssertNil(i.unetError)
        XCTAssertTrue(i.family.hasPrefix("SD2.x-shaped"), i.family)
        let u = try XCTUnwrap(i.unet)
        XCTAssertEqual(u.configOrigin, "inferred from tensors")
        XCTAssertFalse(u.assumptions.isEmpty)
        XCTAssertEqual(u.mapped, 684)
        let list = try XCTUnwrap(i.tensors)
        XCTAssertEqual(list.count, i.tensorCount)
        XCTAssertEqual(list.filter { $0.component == "UNet" }.count, 684)
        XCTAssertEqual(list.first { $0.name == "betas" }?.component, "other")
    }

    func testEMAFile() throws {
        let path = Fixtures.sd2OriginalEMA
        let i = try CheckpointInspection(path: path, options: Fixtures.options(config: Fixtures.sd2Config))
        let totals = try fileTotals(path)
        XCTAssertTrue(i.hasEMA)
        XCTAssertEqual(component(i, .unet)?.tensors, 684)
        XCTAssertEqual(component(i, .ema)?.tensors, 686)
        XCTAssertEqual(i.components.reduce(0) { $0 + $1.parameters }, totals.elements)
        XCTAssertEqual(i.components.reduce(0) { $0 + $1.tensors }, totals.tensors)
        XCTAssertEqual(i.dtypes["I32"], 1, "model_ema.num_updates")
    }

    func testTinySD1() throws {
        let path = Fixtures.sd1Original
        let i = try CheckpointInspection(path: path, options: Fixtures.options(config: Fixtures.sd1Config))
        let totals = try fileTotals(path)
        XCTAssertEqual(component(i, .unet)?.parameters, 55_576)
        XCTAssertEqual(component(i, .textEncoder)?.tensors, 4)
        XCTAssertEqual(i.components.reduce(0) { $0 + $1.parameters }, totals.elements)
        XCTAssertTrue(i.family.hasPrefix("SD1.x-shaped"), i.family)
        XCTAssertEqual(i.predictionType, "epsilon (SD1.x)")
        XCTAssertEqual(i.unet?.useLinearProjection, false)
    }

    func testPipelineAndShards() throws {
        let p = try CheckpointInspection(path: Fixtures.sd2Pipeline)
        XCTAssertEqual(p.kind, CheckpointKind.diffusersPipeline.rawValue)
        XCTAssertEqual(p.predictionType, "v_prediction (from scheduler_config.json)")
        XCTAssertNotNil(p.pipelineComponents)
        XCTAssertEqual(p.dtypes, ["BF16": 684])
        XCTAssertEqual(p.components.map(\.component), ["UNet"])

        let s = try CheckpointInspection(path: Fixtures.sd2Sharded)
        XCTAssertEqual(s.files.count, 3)
        XCTAssertEqual(s.tensorCount, 684)
        XCTAssertEqual(s.components.first?.parameters, 56_440)
        XCTAssertNil(s.unetError)
    }

    /// A UNet problem is reported, not thrown.
    func testUNetErrorIsReported() throws {
        let i = try CheckpointInspection(path: Fixtures.sd2Original, options: Fixtures.options(config: Fixtures.sd1Config))
        XCTAssertNil(i.unet)
        XCTAssertTrue(i.unetError?.contains("misshapen") ?? false, i.unetError ?? "nil")
        XCTAssertEqual(i.family, "unknown")
        XCTAssertEqual(component(i, .unet)?.tensors, 684)
    }

    func testEncodesAsJSON() throws {
        let i = try CheckpointInspection(path: Fixtures.sd2Original, options: Fixtures.options(config: Fixtures.sd2Config))
        let data = try JSONEncoder().encode(i)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(o["tensor_count"] as? Int, 697)
        XCTAssertEqual(o["has_ema"] as? Bool, false)
    }
}
