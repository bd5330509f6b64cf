import Foundation
import TensorCore
import XCTest

/// The tape itself (traversal, accumulation, parameters, recomputation) and the small operations
/// of the hypernetwork and the losses, against central finite differences.
final class TapeTests: XCTestCase {
    /// Checks d loss / d inputs from `backward` against central differences of the same Float32
    /// computation with step h = 1e-2 on inputs of order 1 (the functions are smooth there, so the
    /// truncation error is O(h^2) ~ 1e-4 relative). Float32 rounding of a loss of magnitude |L|
    /// adds about 1e-7 |L| / h ~ 1e-5 |L|; the tolerance 2e-3 relative to the largest gradient
    /// (plus 2e-3 of each element) covers both with a wide margin, and a wrong gradient (sign,
    /// factor, index) is off by far more.
    func check(_ name: String, inputs: [Tensor], _ f: (Tape, [Var]) -> Var, file: StaticString = #filePath, line: UInt = #line) {
        let tape = Tape()
        let vars = inputs.map { tape.input($0.copy()) }
        let loss = f(tape, vars)
        XCTAssertEqual(loss.value.count, 1, file: file, line: line)
        tape.backward(loss)
        let h: Float = 1e-2
        func value(_ xs: [Tensor]) -> Double {
            let t = Tape(recording: false)
            return Double(f(t, xs.map { t.constant($0) }).value.scalars[0])
        }
        for (k, x) in inputs.enumerated() {
            guard let g = tape.gradient(of: vars[k]) else { return XCTFail("\(name): no gradient for input \(k)", file: file, line: line) }
            var fd = [Double](repeating: 0, count: x.count)
            for i in 0..<x.count {
                let plus = inputs.map { $0.copy() }, minus = inputs.map { $0.copy() }
                plus[k].data[i] += h
                minus[k].data[i] -= h
                fd[i] = (value(plus) - value(minus)) / Double(2 * h)
            }
            let scale = fd.map(Swift.abs).max() ?? 0
            XCTAssertGreaterThan(scale, 1e-6, "\(name): vanishing reference gradient", file: file, line: line)
            var worst = 0.0, at = 0
            for i in 0..<x.count {
                let r = Swift.abs(Double(g.data[i]) - fd[i]) / (2e-3 * scale + 2e-3 * Swift.abs(fd[i]))
                if r > worst { worst = r; at = i }
            }
            XCTAssertLessThanOrEqual(worst, 1, "\(name) input \(k): element \(at) got \(g.data[at]), finite difference \(fd[at])", file: file, line: line)
        }
    }

    func tensor(_ shape: [Int], seed: Int, lo: Float = -1, hi: Float = 1) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, values: (0..<n).map { i in
            let u = Float((i * 7919 + seed * 104_729) % 1000) / 1000
            return lo + (hi - lo) * u
        })
    }

    func weights(_ shape: [Int], seed: Int) -> Tensor { tensor(shape, seed: seed, lo: -1.5, hi: 2) }

    func testMatmulSigmoidLogAbs() {
        let w = weights([3, 4], seed: 9)
        check("matmul", inputs: [tensor([3, 5], seed: 1), tensor([5, 4], seed: 2)]) { t, v in
            t.sum(t.multiply(t.matmul(v[0], v[1]), t.constant(w)))
        }
        check("sigmoid", inputs: [tensor([7], seed: 3, lo: -3, hi: 3)]) { t, v in t.sum(t.multiply(t.sigmoid(v[0]), t.constant(weights([7], seed: 4)))) }
        check("log", inputs: [tensor([6], seed: 5, lo: 0.5, hi: 3)]) { t, v in t.sum(t.multiply(t.log(v[0]), t.constant(weights([6], seed: 6)))) }
        check("abs", inputs: [tensor([6], seed: 7, lo: 0.2, hi: 2)]) { t, v in t.sum(t.abs(t.addScalar(v[0], -1.05))) }
    }

    func testReductionsAndLosses() {
        check("meanRows", inputs: [tensor([5, 3], seed: 11)]) { t, v in t.sum(t.multiply(t.meanRows(v[0]), t.constant(weights([3], seed: 12)))) }
        check("mean", inputs: [tensor([4, 2], seed: 13)]) { t, v in t.mean(t.multiply(v[0], v[0])) }
        check("mseLoss", inputs: [tensor([2, 3, 4], seed: 14), tensor([2, 3, 4], seed: 15)]) { t, v in t.mseLoss(v[0], v[1]) }
        check("selectRows", inputs: [tensor([6, 3], seed: 16)]) { t, v in
            t.sum(t.multiply(t.selectRows(v[0], [4, 1, 4, 0]), t.constant(weights([4, 3], seed: 17))))
        }
        check("column", inputs: [tensor([4, 3], seed: 18)]) { t, v in
            t.sum(t.multiply(t.column(v[0], 2), t.constant(weights([4], seed: 19))))
        }
        check("softmax", inputs: [tensor([3, 5], seed: 20, lo: -2, hi: 2)]) { t, v in
            t.sum(t.multiply(t.softmax(v[0]), t.constant(weights([3, 5], seed: 21))))
        }
        check("relu+layerNorm+linear", inputs: [tensor([4, 6], seed: 22), weights([5, 6], seed: 23), tensor([5], seed: 24),
                                               tensor([6], seed: 25, lo: 0.5, hi: 1.5), tensor([6], seed: 26)]) { t, v in
            let h = t.relu(t.linear(t.layerNorm(v[0], weight: v[3], bias: v[4], eps: 1e-5), weight: v[1], bias: v[2]))
            return t.sum(t.multiply(h, t.constant(weights([4, 5], seed: 27))))
        }
    }

    /// The straight-through estimator passes the soft gradient through the hard value.
    func testStraightThrough() {
        let tape = Tape()
        let x = tape.input(Tensor(shape: [3], values: [-0.5, 0.2, 2]))
        let soft = tape.sigmoid(x)
        let hard = tape.straightThrough(soft, hard: Tensor(shape: [3], values: [0, 1, 1]))
        XCTAssertEqual(hard.value.scalars, [0, 1, 1])
        tape.backward(tape.sum(tape.multiply(hard, tape.constant(Tensor(shape: [3], values: [1, 2, 3])))))
        let g = tape.gradient(of: x)!.scalars
        let s = soft.value.scalars
        for i in 0..<3 { XCTAssertEqual(g[i], [1, 2, 3][i] * s[i] * (1 - s[i]), accuracy: 1e-6) }
    }

    /// A value used twice gets both gradients; parameters accumulate across backward passes until
    /// cleared; frozen parameters get none.
    func testAccumulation() {
        let p = Parameter(name: "p", value: Tensor(shape: [2], values: [1, 2]))
        let frozen = Parameter(name: "q", value: Tensor(shape: [2], values: [3, 4]))
        frozen.trainable = false
        for _ in 0..<2 {
            let tape = Tape()
            let v = tape.parameter(p), q = tape.parameter(frozen)
            XCTAssertFalse(q.requiresGrad)
            tape.backward(tape.sum(tape.add(tape.multiply(v, v), tape.multiply(v, q))))  // d/dp = 2p + q
        }
        XCTAssertEqual(p.grad?.scalars, [2 * (2 + 3), 2 * (4 + 4)])
        XCTAssertNil(frozen.grad)
        p.zeroGrad()
        XCTAssertNil(p.grad)
    }

    /// Recomputation gives the same gradients, for inputs and for parameters used inside.
    func testCheckpointMatchesDirect() {
        let w = Parameter(name: "w", value: weights([4, 4], seed: 31))
        func segment(_ t: Tape, _ v: [Var]) -> Var { t.silu(t.linear(v[0], weight: t.parameter(w), bias: nil)) }
        var results: [[Float]] = []
        for useCheckpoint in [false, true] {
            w.zeroGrad()
            let tape = Tape()
            let x = tape.input(tensor([3, 4], seed: 32))
            let y = useCheckpoint ? tape.checkpoint([x], segment) : segment(tape, [x])
            tape.backward(tape.sum(tape.multiply(y, tape.constant(weights([3, 4], seed: 33)))))
            results.append(tape.gradient(of: x)!.scalars + w.grad!.scalars)
        }
        XCTAssertEqual(results[0], results[1])
    }

    /// The traversal is iterative: a chain of 200,000 operations does not exhaust the stack.
    func testLongChain() {
        let tape = Tape()
        let x = tape.input(Tensor(shape: [1], values: [1]))
        var y = x
        for _ in 0..<200_000 { y = tape.addScalar(tape.scale(y, 1), 0) }
        tape.backward(y)
        XCTAssertEqual(tape.gradient(of: x)?.scalars, [1])
    }
}
