import Foundation
import NN
import TensorCore
import XCTest
@testable import StableDiffusion

/// A UNet built without some units' parameters (as a bundle stores it) never asks for them and
/// computes exactly what the full model computes with those units skipped.
final class AbsentUnitTests: XCTestCase {
    struct Guarded: ParameterSource {
        let inner: UNetCheckpoint
        let forbidden: [String]
        func tensor(_ name: String, shape: [Int]) throws -> Tensor {
            if let u = forbidden.first(where: { name.hasPrefix($0 + ".") }) { throw ParameterError.missing("\(name) of absent unit \(u)") }
            return try inner.tensor(name, shape: shape)
        }
    }

    func testAbsentUnitsAreNeverLoadedAndMatchSkips() throws {
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Diffusers, options: LoadOptions())
        let full = try UNet(checkpoint: ckpt)
        let absent = ["down_blocks.0.resnets.1", "mid_block.attentions.0.transformer_blocks.0", "up_blocks.1.resnets.0",
                      "up_blocks.2.attentions.1.transformer_blocks.0"]
        let partial = try UNet(config: ckpt.config, parameters: Guarded(inner: ckpt, forbidden: absent), absentUnits: Set(absent))
        XCTAssertLessThan(partial.parameters.count, full.parameters.count)
        XCTAssertFalse(partial.parameters.contains { p in absent.contains { p.name.hasPrefix($0 + ".") } })

        let sample = Tensor(shape: [1, 4, 8, 8], values: (0..<256).map { Float(($0 * 37) % 17) / 17 - 0.5 })
        let context = Tensor(shape: [1, 5, ckpt.config.crossAttentionDim], values: (0..<(5 * ckpt.config.crossAttentionDim)).map { Float(($0 * 13) % 11) / 11 - 0.5 })
        var options = UNetForwardOptions()
        options.skip = Set(absent)
        XCTAssertNoThrow(try partial.check(options, batch: 1))
        let a = partial.forward(sample: sample, timesteps: [500], context: context, options: options).sample.scalars
        let b = full.forward(sample: sample, timesteps: [500], context: context, options: options).sample.scalars
        XCTAssertEqual(a, b)

        options.skip.remove("up_blocks.1.resnets.0")
        XCTAssertThrowsError(try partial.check(options, batch: 1)) { e in
            XCTAssertEqual(e as? UNetError, .absentUnit("up_blocks.1.resnets.0"))
        }
        XCTAssertThrowsError(try UNet(config: ckpt.config, parameters: ckpt, absentUnits: ["conv_in"])) { e in
            XCTAssertEqual(e as? UNetError, .notAUnit("conv_in"))
        }
    }
}
