import Foundation
import NN
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// The full SD2.1 VAE (block_out_channels [128, 256, 512, 512], 2 layers per block, 32 groups) at
/// alter's deterministic random init (`RandomParameters`, ported to numpy by
/// scripts/make_vae_fixtures.py --sd21) against diffusers' AutoencoderKL in float64: the decoder on
/// a 16x16 latent, the encoder on a 64x64 image.
final class AutoencoderKLSD21Tests: XCTestCase {
    func check(_ actual: Tensor, _ expected: Tensor, _ what: String) {
        XCTAssertEqual(actual.shape, expected.shape, what)
        guard actual.shape == expected.shape else { return }
        var diff = 0.0, norm = 0.0, worst = 0, worstRatio = -1.0
        for i in 0..<actual.count {
            let a = Double(actual.data[i]), e = Double(expected.data[i])
            diff += (a - e) * (a - e)
            norm += e * e
            let ratio = Swift.abs(a - e) / (1e-5 + 1e-4 * Swift.abs(e))
            if ratio > worstRatio { (worstRatio, worst) = (ratio, i) }
        }
        let rel = (diff / max(norm, 1e-30)).squareRoot()
        let message = String(format: "SD2.1 VAE random init, %@: relative L2 error %.3g; worst element %d: %.8g vs reference %.8g (%.3g of the element tolerance)",
                             what, rel, worst, actual.data[worst], expected.data[worst], worstRatio)
        print(message)
        XCTAssertLessThanOrEqual(rel, 1e-5, message)
        XCTAssertLessThanOrEqual(worstRatio, 1, message)
    }

    func testFullSizeRandomInit() throws {
        let file = try SafeTensorsFile(path: Fixtures.path("vae/sd21-random.safetensors"))
        let meta = try XCTUnwrap(file.metadata)
        let seed = try XCTUnwrap(UInt64(try XCTUnwrap(meta["seed"])))
        func tensor(_ name: String) throws -> Tensor { Tensor(shape: try file.require(name).shape, values: try file.floats(name)) }

        let config = VAEConfig.sd21
        XCTAssertEqual(config.blockOutChannels, [128, 256, 512, 512])
        XCTAssertEqual(config.layersPerBlock, 2)
        XCTAssertEqual(config.normNumGroups, 32)
        let shapes = VAEKeys.parameters(config)
        XCTAssertEqual(meta["parameters"], String(shapes.reduce(0) { $0 + $1.shape.reduce(1, *) }))

        let parameters = RandomParameters(seed: seed)
        // The numpy port draws the same values (the script stores two of them).
        let probeName = try XCTUnwrap(meta["probe_name"])
        let probeShape = try XCTUnwrap(shapes.first { $0.name == probeName }?.shape)
        let probe = try parameters.tensor(probeName, shape: probeShape)
        XCTAssertEqual(meta["probe"], "[\(Double(probe.data[0])), \(Double(probe.data[1]))]")

        let vae = try AutoencoderKL(config: config, parameters: parameters)
        let decoded = try vae.decode(try tensor("latent"))
        XCTAssertEqual(decoded.shape, [1, 3, 128, 128])
        check(decoded, try tensor("decoded"), "decoder")

        let dist = try vae.encode(try tensor("image"))
        XCTAssertEqual(dist.mean.shape, [1, 4, 8, 8])
        check(dist.mean, try tensor("mean"), "encoder mean")
        check(dist.logvar, try tensor("logvar"), "encoder logvar")
    }
}
