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
        assertParity(decoded, try tensor("decoded"), "SD2.1 VAE random init, decoder")

        let dist = try vae.encode(try tensor("image"))
        XCTAssertEqual(dist.mean.shape, [1, 4, 8, 8])
        assertParity(dist.mean, try tensor("mean"), "SD2.1 VAE random init, encoder mean")
        assertParity(dist.logvar, try tensor("logvar"), "SD2.1 VAE random init, encoder logvar")
    }
}
