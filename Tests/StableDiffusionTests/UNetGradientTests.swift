import Foundation
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// Gradients of the UNet on a tape against diffusers + torch autograd in float64
/// (Tests/Fixtures/grad/tiny-sd2-grad.safetensors, scripts/make_grad_fixtures.py):
/// L = sum(out * G.out) + sum_f sum(feature_f * G.feature.f), with every unit blended by its gate.
/// Gradients with respect to the sample, the context, every gate and 14 named parameters must
/// match with a relative error of at most 1e-4 (relative L2 per tensor, and element-wise
/// |got - expected| <= 1e-4 * max|expected| + 1e-6).
final class UNetGradientTests: XCTestCase {
    static let tolerance = 1e-4

    struct Fixture {
        let file: SafeTensorsFile
        let unet: UNet
        let units: [String]
        let params: [String]
        func tensor(_ key: String) throws -> Tensor {
            let info = try file.require(key)
            return Tensor(shape: info.shape, values: try file.floats(key))
        }
    }

    func load() throws -> Fixture {
        let file = try SafeTensorsFile(path: Fixtures.path("grad/tiny-sd2-grad.safetensors"))
        let meta = try XCTUnwrap(file.metadata)
        let config = try UNetConfig(diffusersJSON: Data(try XCTUnwrap(meta["config"]).utf8), source: "grad fixture")
        let repoRoot = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
        let ckpt = try UNetCheckpoint(path: repoRoot.appendingPathComponent(try XCTUnwrap(meta["weights"])).path, options: LoadOptions())
        let unet = try UNet(config: config, parameters: ckpt)
        let units = try XCTUnwrap(meta["units"]).split(separator: ",").map(String.init)
        let params = try XCTUnwrap(meta["params"]).split(separator: ",").map(String.init)
        XCTAssertEqual(unet.units.map(\.name), units)
        return Fixture(file: file, unet: unet, units: units, params: params)
    }

    /// Compares element-wise and by relative L2; reports the worst element.
    func assertClose(_ got: Tensor?, _ expected: Tensor, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let got else { return XCTFail("\(what): no gradient", file: file, line: line) }
        XCTAssertEqual(got.count, expected.count, what, file: file, line: line)
        let g = got.scalars.map(Double.init), e = expected.scalars.map(Double.init)
        let scale = e.map(Swift.abs).max() ?? 0
        var worst = 0, worstRatio = 0.0, diff2 = 0.0, ref2 = 0.0
        for i in e.indices {
            let d = Swift.abs(g[i] - e[i])
            diff2 += d * d
            ref2 += e[i] * e[i]
            let ratio = d / (Self.tolerance * scale + 1e-6)
            if ratio > worstRatio { worstRatio = ratio; worst = i }
        }
        let rel = (diff2 / max(ref2, 1e-300)).squareRoot()
        XCTAssertTrue(worstRatio <= 1 && (ref2 == 0 || rel <= Self.tolerance),
                      "\(what): rel L2 \(rel), worst element \(worst): got \(g[worst]), expected \(e[worst]) (max |expected| \(scale))",
                      file: file, line: line)
    }

    func run(_ f: Fixture, prefix: String, checkpointing: Bool) throws {
        let tape = Tape()
        let sample = tape.input(try f.tensor("input.sample"))
        let context = tape.input(try f.tensor("input.context"))
        let timesteps = try f.tensor("input.timestep").scalars
        var gates: [String: Var] = [:]
        for u in f.units {
            gates[u] = tape.input(prefix.isEmpty ? try f.tensor("gate." + u) : Tensor(repeating: 1, shape: [2]))
        }
        for p in f.unet.parameters { p.zeroGrad() }
        let out = f.unet.forward(on: tape, sample: sample, timesteps: timesteps, context: context, gates: gates,
                                 tapFeatures: true, checkpointing: checkpointing)
        var seeds = [(out.sample, try f.tensor("G.out"))]
        for feature in out.features { seeds.append((feature.value, try f.tensor("G.feature." + feature.name))) }
        XCTAssertEqual(out.features.count, 9)
        var loss = 0.0
        for (v, g) in seeds { for i in 0..<g.count { loss += Double(v.value.data[i]) * Double(g.data[i]) } }
        let expectedLoss = Double(try f.tensor(prefix + "loss").scalars[0])
        // The loss sums terms of both signs whose magnitudes add up to about 830 (metadata
        // loss_abs_scale): Float32 rounding of the outputs allows about 1e-6 of that.
        XCTAssertEqual(loss, expectedLoss, accuracy: 1e-6 * 1000, "\(prefix)loss")
        tape.backward(seeds)

        let mode = checkpointing ? "checkpointed" : "plain"
        assertClose(tape.gradient(of: sample), try f.tensor(prefix + "grad.sample"), "\(mode) \(prefix)grad.sample")
        assertClose(tape.gradient(of: context), try f.tensor(prefix + "grad.context"), "\(mode) \(prefix)grad.context")
        for u in f.units {
            assertClose(gates[u].flatMap { tape.gradient(of: $0) }, try f.tensor(prefix + "grad.gate." + u), "\(mode) \(prefix)grad.gate.\(u)")
        }
        let byName = Dictionary(uniqueKeysWithValues: f.unet.parameters.map { ($0.name, $0) })
        for name in f.params {
            let p = try XCTUnwrap(byName[name], name)
            assertClose(p.grad, try f.tensor(prefix + "grad.param." + name), "\(mode) \(prefix)grad.param.\(name)")
        }
    }

    func testGatedGradientsMatchTorch() throws {
        let f = try load()
        try run(f, prefix: "", checkpointing: false)
    }

    func testCheckpointedGradientsMatchTorch() throws {
        let f = try load()
        try run(f, prefix: "", checkpointing: true)
    }

    func testUngatedGradientsMatchTorch() throws {
        let f = try load()
        try run(f, prefix: "ones.", checkpointing: true)
    }

    /// Recomputation changes memory, not results: the same gradients up to the order in which
    /// contributions to shared inputs (the time embedding) are summed.
    func testCheckpointingGivesTheSameGradients() throws {
        let f = try load()
        var results: [[Float]] = []
        for checkpointing in [false, true] {
            let tape = Tape()
            let sample = tape.input(try f.tensor("input.sample"))
            for p in f.unet.parameters { p.zeroGrad() }
            let out = f.unet.forward(on: tape, sample: sample, timesteps: try f.tensor("input.timestep").scalars,
                                     context: tape.constant(try f.tensor("input.context")), checkpointing: checkpointing)
            tape.backward([(out.sample, try f.tensor("G.out"))])
            results.append(try XCTUnwrap(tape.gradient(of: sample)).scalars + f.unet.parameters.flatMap { $0.grad?.scalars ?? [] })
        }
        XCTAssertEqual(results[0].count, results[1].count)
        // Per element: 1e-4 relative, plus 1e-6 of the largest gradient for terms that cancel.
        let scale = Double(results[0].map(Swift.abs).max() ?? 0)
        var worst = 0.0, at = 0
        for i in results[0].indices {
            let d = Double(Swift.abs(results[0][i] - results[1][i])) / (1e-4 * Double(Swift.abs(results[0][i])) + 1e-6 * scale)
            if d > worst { worst = d; at = i }
        }
        XCTAssertGreaterThan(scale, 0)
        XCTAssertLessThanOrEqual(worst, 1, "element \(at): \(results[0][at]) vs \(results[1][at])")
    }

    /// A non-recording tape keeps nothing and matches the recorded forward exactly.
    func testInferenceForwardRecordsNothing() throws {
        let f = try load()
        let sample = try f.tensor("input.sample"), context = try f.tensor("input.context")
        let t = try f.tensor("input.timestep").scalars
        let inference = f.unet.forward(sample: sample, timesteps: t, context: context).sample.scalars
        let tape = Tape()
        let recorded = f.unet.forward(on: tape, sample: tape.input(sample), timesteps: t, context: tape.constant(context), checkpointing: false)
        XCTAssertGreaterThan(tape.nodeCount, 100)
        XCTAssertEqual(inference, recorded.sample.value.scalars)
        let off = Tape(recording: false)
        _ = f.unet.forward(on: off, sample: off.input(sample), timesteps: t, context: off.constant(context))
        XCTAssertEqual(off.nodeCount, 0)
    }
}
