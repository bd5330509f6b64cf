import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// `--ema`: the LitEma copies of an original checkpoint (`model_ema.diffusion_model<name without dots>`).
final class EMATests: XCTestCase {
    func testEMAWeightsEqualDiffusersConversion() throws {
        let expected = try SafeTensorsFile(path: Fixtures.sd2EMADiffusers)
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2OriginalEMA, options: Fixtures.options(config: Fixtures.sd2Config, ema: true))
        let parameters = ckpt.config.parameters()
        XCTAssertEqual(Set(expected.names), Set(parameters.map(\.name)))
        XCTAssertEqual(ckpt.report.mapped, parameters.count)
        XCTAssertTrue(ckpt.report.isAcceptable(allowUnused: false), ckpt.report.description)
        for p in parameters {
            let stored = try XCTUnwrap(ckpt.location(p.name)).info.name
            XCTAssertTrue(stored.hasPrefix("model_ema.diffusion_model"), "\(p.name) read from \(stored)")
            XCTAssertFalse(stored.dropFirst("model_ema.".count).contains("."), stored)
            assertBitExact(try ckpt.floats(p.name), try expected.floats(p.name), tensor: p.name, context: "--ema")
        }
    }

    /// The EMA weights differ from the plain ones, so the test above really reads the EMA copies.
    func testEMAWeightsDifferFromPlainWeights() throws {
        let cfg = Fixtures.sd2Config
        let ema = try UNetCheckpoint(path: Fixtures.sd2OriginalEMA, options: Fixtures.options(config: cfg, ema: true))
        let plain = try UNetCheckpoint(path: Fixtures.sd2OriginalEMA, options: Fixtures.options(config: cfg))
        var differing = 0
        for p in ema.config.parameters() where try ema.floats(p.name) != plain.floats(p.name) { differing += 1 }
        XCTAssertGreaterThan(differing, 600)
    }

    func testEMAOnCheckpointWithoutEMAIsAnError() {
        for path in [Fixtures.sd2Original, Fixtures.sd2Diffusers, Fixtures.sd2Pipeline] {
            let e = expectCheckpointError("--ema on \(path)") {
                try UNetCheckpoint(path: path, options: Fixtures.options(config: Fixtures.sd2Config, ema: true))
            }
            guard let e else { continue }
            guard case .unrecognisedLayout = e else { XCTFail("\(path): unexpected error \(e)"); continue }
            XCTAssertTrue(e.description.contains("EMA") || e.description.contains("ema"), e.description)
        }
    }

    func testEMAInspection() throws {
        let plain = try CheckpointInspection(path: Fixtures.sd2Original, options: Fixtures.options(config: Fixtures.sd2Config))
        XCTAssertFalse(plain.hasEMA)
        let withEMA = try CheckpointInspection(path: Fixtures.sd2OriginalEMA, options: Fixtures.options(config: Fixtures.sd2Config))
        XCTAssertTrue(withEMA.hasEMA)
        let emaComponent = try XCTUnwrap(withEMA.components.first { $0.component == Component.ema.rawValue })
        // 684 EMA weights + model_ema.decay + model_ema.num_updates.
        XCTAssertEqual(emaComponent.tensors, 686)
        XCTAssertEqual(emaComponent.parameters, 56_440 + 2)
        XCTAssertNil(withEMA.unetError)
        XCTAssertEqual(withEMA.unet?.unused, 0)
    }
}
