import ArgumentParser
import Foundation
import NN
import TensorCore

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Time the main kernels at SD2.1 shapes (64x64 latent) beside a bare sgemm of the same size.")

    @Option(help: "Repetitions per kernel.")
    var runs = 5

    func run() throws {
        let r = RandomParameters(seed: 3)
        func time(_ name: String, flops: Double, _ body: () -> Void) {
            body()
            var best = Double.infinity
            for _ in 0..<runs {
                let t0 = Date()
                body()
                best = min(best, Date().timeIntervalSince(t0))
            }
            print(String(format: "%-40@ %8.2f ms %8.1f GFLOP/s", name, best * 1e3, flops / best / 1e9))
        }
        for (c, s) in [(320, 64), (640, 32), (1280, 16), (1280, 8)] {
            let x = r.tensorOrDie("x", [1, c, s, s])
            let w = r.tensorOrDie("w", [c, c, 3, 3])
            let b = r.tensorOrDie("b", [c])
            let f = 2.0 * Double(c * c * 9 * s * s)
            time("conv3x3 \(c)->\(c) @\(s)", flops: f) { _ = Conv2d.forward(x, weight: w, bias: b, padding: 1) }
            let col = Tensor(uninitialized: [c * 9, s * s])
            let out = Tensor(uninitialized: [c, s * s])
            time("  sgemm \(c)x\(s * s)x\(c * 9)", flops: f) {
                BLAS.sgemm(m: c, n: s * s, k: c * 9, a: w.data, lda: c * 9, b: col.data, ldb: s * s, c: out.data, ldc: s * s)
            }
        }
        for (c, n) in [(320, 4096), (640, 1024), (1280, 256)] {
            let x = r.tensorOrDie("x", [n, c])
            let w = r.tensorOrDie("w", [8 * c, c])
            let b = r.tensorOrDie("b", [8 * c])
            time("linear \(n)x\(c) -> \(8 * c)", flops: 2.0 * Double(n * c * 8 * c)) { _ = Linear.forward(x, weight: w, bias: b) }
            let q = r.tensorOrDie("q", [1, n, c])
            time("attention \(n) tokens, \(c) ch, \(c / 64) heads", flops: 4.0 * Double(n * n * c)) {
                _ = Attention.forward(q: q, k: q, v: q, heads: c / 64)
            }
        }
    }
}

extension RandomParameters {
    func tensorOrDie(_ name: String, _ shape: [Int]) -> Tensor {
        // Random tensors of any shape cannot fail.
        (try? tensor(name, shape: shape)) ?? Tensor(zeros: shape)
    }
}
