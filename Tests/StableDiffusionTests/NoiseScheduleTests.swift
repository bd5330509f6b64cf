import Foundation
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// The training noise schedule against diffusers' DDPMScheduler (Tests/Fixtures/grad/schedule.safetensors).
final class NoiseScheduleTests: XCTestCase {
    func doubles(_ f: SafeTensorsFile, _ name: String) throws -> [Double] {
        let info = try f.require(name)
        XCTAssertEqual(info.dtype, .f64)
        let raw = f.rawBytes(info)
        return (0..<info.elementCount).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) }
    }

    func testMatchesDiffusers() throws {
        let f = try SafeTensorsFile(path: Fixtures.path("grad/schedule.safetensors"))
        let s = NoiseSchedule.scaledLinear()
        // Same formula in Double: agreement to rounding.
        let ac = try doubles(f, "alphas_cumprod_f64")
        XCTAssertEqual(ac.count, 1000)
        for t in 0..<1000 { XCTAssertEqual(s.alphasCumprod[t], ac[t], accuracy: 1e-13 * ac[t], "t=\(t)") }
        // diffusers' own float32 tensor: within its float32 rounding (9.3e-7 relative measured).
        let ac32 = try f.floats("alphas_cumprod")
        for t in 0..<1000 { XCTAssertEqual(s.alphasCumprod[t], Double(ac32[t]), accuracy: 2e-6 * ac[t], "t=\(t)") }

        let x0 = Tensor(shape: [2, 4, 4, 4], values: try f.floats("x0")), noise = Tensor(shape: [2, 4, 4, 4], values: try f.floats("noise"))
        let timesteps = [3, 998]
        let noisy = s.addNoise(x0, noise: noise, timesteps: timesteps).scalars
        let v = s.velocity(x0, noise: noise, timesteps: timesteps).scalars
        XCTAssertEqual(s.target(.epsilon, x0: x0, noise: noise, timesteps: timesteps).scalars, noise.scalars)
        XCTAssertEqual(s.target(.vPrediction, x0: x0, noise: noise, timesteps: timesteps).scalars, v)
        // Float32 results against the float64 references: two products and a sum, a few ulp.
        for (got, name) in [(noisy, "add_noise_f64"), (v, "get_velocity_f64")] {
            let ref = try doubles(f, name)
            var worst = 0.0, at = 0
            for i in ref.indices {
                let r = Swift.abs(Double(got[i]) - ref[i]) / (4e-7 * (Swift.abs(ref[i]) + 1))
                if r > worst { worst = r; at = i }
            }
            XCTAssertLessThanOrEqual(worst, 1, "\(name): element \(at) got \(got[at]), expected \(ref[at])")
        }
    }
}
