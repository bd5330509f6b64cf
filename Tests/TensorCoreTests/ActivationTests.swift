import Foundation
import TensorCore
import XCTest

func geluD(_ x: Double) -> Double { 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }

/// Runs `f` over `xs` through VectorMath.map (8 lanes at a time, tail padded).
func mapVector(_ xs: [Float], _ f: (SIMD8<Float>) -> SIMD8<Float>) -> [Float] {
    var out = [Float](repeating: .nan, count: xs.count)
    xs.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            VectorMath.map(src.baseAddress!, dst.baseAddress!, xs.count, f)
        }
    }
    return out
}

/// `n + 1` evenly spaced float32 points on [lo, hi] (each rounded to float32; the reference is
/// evaluated at the rounded point, so only the kernel's error is measured).
func sweep(_ lo: Double, _ hi: Double, _ n: Int) -> [Float] {
    (0...n).map { Float(lo + (hi - lo) * Double($0) / Double(n)) }
}

/// Accuracy bounds for the vectorised transcendental functions, checked over dense sweeps. They
/// are a little above the errors measured on x86-64 (reported in each assertion message), so a
/// regression of a few ulp shows up.
enum Accuracy {
    /// VectorMath.exp: max relative error on [-87, 88] (measured 8.3e-8, 1.4 ulp).
    static let expRelative = 2e-7
    /// VectorMath.erf: max absolute error on [-6, 6] (measured 4.19e-7 near |x| = 3.3; the
    /// rational approximation, not float rounding, dominates: about 7 ulp of 1).
    static let erfAbsolute = 5e-7
    /// GELU: max abs error / (1 + |x|) on [-10, 10] (measured 2.15e-7; max abs error 1.35e-6
    /// at large x). x/2 (1 + erf) cancels for x < -3, so the error there is absolute
    /// (erf's error times |x|/2) rather than relative — as in PyTorch's float GELU.
    static let geluScaled = 3e-7
    /// SiLU: max relative error on [-80, 80] (measured 1.7e-7: exp's error plus three roundings).
    static let siluRelative = 3e-7
}

final class VectorMathAccuracyTests: XCTestCase {
    func testExpDenseSweep() {
        // 1.75M points, step 1e-4, plus 4000 consecutive floats around points where the range
        // reduction changes n (±ln2/2, ±3 ln2/2) or r is tiny (0, ±ln2), and the sweep's ends.
        var xs = sweep(-87, 88, 1_750_000)
        let ln2 = Float(M_LN2)
        for centre in [0, ln2 / 2, -ln2 / 2, 1.5 * ln2, -1.5 * ln2, ln2, -ln2, -87, 88] {
            var lo = centre, hi = centre
            for _ in 0..<2000 {
                lo = lo.nextDown
                hi = hi.nextUp
                xs += [lo, hi]
            }
        }
        let ys = mapVector(xs, VectorMath.exp)
        var worst = 0.0, worstX: Float = 0, worstY: Float = 0
        for (x, y) in zip(xs, ys) {
            let ref = exp(Double(x))
            let rel = abs(Double(y) - ref) / ref
            if !(rel <= worst) { worst = rel; worstX = x; worstY = y }
        }
        print("VectorMath.exp max relative error on [-87, 88]: \(worst) at x = \(worstX) (got \(worstY), ref \(exp(Double(worstX))))")
        XCTAssertLessThanOrEqual(worst, Accuracy.expRelative,
                                 "exp max relative error \(worst) at x = \(worstX): \(worstY) vs \(exp(Double(worstX)))")
    }

    func testExpExtremes() {
        // Very negative inputs flush to 0 or a tiny positive number, never NaN or negative.
        let negatives: [Float] = [-87.3, -87.33654, -87.5, -88, -90, -100, -103.9, -104, -200, -1e4, -1e30, -.greatestFiniteMagnitude, -.infinity]
        for (x, y) in zip(negatives, mapVector(negatives, VectorMath.exp)) {
            XCTAssertFalse(y.isNaN, "exp(\(x)) is NaN")
            XCTAssertGreaterThanOrEqual(y, 0, "exp(\(x)) = \(y)")
            XCTAssertLessThanOrEqual(y, 1.5e-38, "exp(\(x)) = \(y) is not tiny")
        }
        // Large inputs stay finite up to the clamp and never turn NaN.
        let large: [Float] = [80, 87, 88, 88.2, 88.3, 88.37, 88.376, 88.37626, 88.3763, 88.5, 88.7, 89, 100, 1e4, .infinity]
        for (x, y) in zip(large, mapVector(large, VectorMath.exp)) {
            XCTAssertFalse(y.isNaN, "exp(\(x)) is NaN")
            XCTAssertTrue(y.isFinite, "exp(\(x)) = \(y)")
            XCTAssertGreaterThan(y, 5e34, "exp(\(x)) = \(y)")
            if x <= 88.37 {
                let ref = exp(Double(x))
                XCTAssertLessThanOrEqual(abs(Double(y) - ref) / ref, Accuracy.expRelative, "exp(\(x)) = \(y), ref \(ref)")
            }
        }
        XCTAssertEqual(mapVector([0], VectorMath.exp), [1], "exp(0)")
    }

    func testErfDenseSweep() {
        let xs = sweep(-6, 6, 1_200_000)
        let ys = mapVector(xs, VectorMath.erf)
        var worst = 0.0, worstX: Float = 0, worstY: Float = 0
        for (x, y) in zip(xs, ys) {
            let err = abs(Double(y) - erf(Double(x)))
            if !(err <= worst) { worst = err; worstX = x; worstY = y }
        }
        print("VectorMath.erf max absolute error on [-6, 6]: \(worst) at x = \(worstX) (got \(worstY), ref \(erf(Double(worstX))))")
        // erf never leaves [-1, 1] (the rational form alone overshoots to ±1.0000001 near |x| = 3.8).
        if let i = ys.indices.first(where: { abs(ys[$0]) > 1 }) {
            XCTFail("erf(\(xs[i])) = \(ys[i]) is outside [-1, 1]")
        }
        XCTAssertLessThanOrEqual(worst, Accuracy.erfAbsolute,
                                 "erf max abs error \(worst) at x = \(worstX): \(worstY) vs \(erf(Double(worstX)))")
        // Odd symmetry and saturation.
        let sym: [Float] = [0.1, 0.5, 1, 2.5, 3.9, 4, 5, 100]
        let pos = mapVector(sym, VectorMath.erf), neg = mapVector(sym.map { -$0 }, VectorMath.erf)
        for i in sym.indices { XCTAssertEqual(pos[i], -neg[i], "erf odd at \(sym[i])") }
        XCTAssertEqual(mapVector([0], VectorMath.erf), [0])
        XCTAssertEqual(Double(pos.last!), 1, accuracy: 1e-7)
    }

    func testGeluDenseSweep() {
        let xs = sweep(-10, 10, 1_000_000)
        let ys = mapVector(xs, VectorMath.gelu)
        var worst = 0.0, worstAbs = 0.0, worstX: Float = 0, worstY: Float = 0
        for (x, y) in zip(xs, ys) {
            let err = abs(Double(y) - geluD(Double(x)))
            worstAbs = max(worstAbs, err)
            let scaled = err / (1 + abs(Double(x)))
            if !(scaled <= worst) { worst = scaled; worstX = x; worstY = y }
        }
        // Sign and bound: gelu(x) <= 0 for x < 0 and 0 <= gelu(x) <= x for x > 0 (they fail
        // when erf overshoots ±1: unclamped, gelu(x) came out positive, up to 6.7e-7, for
        // x in [-5.66, -5.14], and gelu(5.3243) > 5.3243).
        if let i = xs.indices.first(where: { xs[$0] < 0 ? ys[$0] > 0 : (ys[$0] < 0 || ys[$0] > xs[$0]) }) {
            XCTFail("gelu(\(xs[i])) = \(ys[i]) has the wrong sign or exceeds x")
        }
        print("VectorMath.gelu on [-10, 10]: max abs error \(worstAbs), max abs error/(1+|x|) \(worst) at x = \(worstX) (got \(worstY), ref \(geluD(Double(worstX))))")
        XCTAssertLessThanOrEqual(worst, Accuracy.geluScaled,
                                 "gelu max |err|/(1+|x|) \(worst) at x = \(worstX): \(worstY) vs \(geluD(Double(worstX))); max abs error \(worstAbs)")
    }

    func testSiluDenseSweep() {
        let xs = sweep(-80, 80, 800_000).filter { $0 != 0 }
        let ys = mapVector(xs, VectorMath.silu)
        var worst = 0.0, worstX: Float = 0, worstY: Float = 0
        for (x, y) in zip(xs, ys) {
            let ref = siluD(Double(x))
            let rel = abs(Double(y) - ref) / abs(ref)
            if !(rel <= worst) { worst = rel; worstX = x; worstY = y }
        }
        print("VectorMath.silu max relative error on [-80, 80]: \(worst) at x = \(worstX)")
        XCTAssertLessThanOrEqual(worst, Accuracy.siluRelative, "silu max rel error \(worst) at x = \(worstX): \(worstY) vs \(siluD(Double(worstX)))")
        // Far tails: no NaN, -> 0 from below on the left, -> x on the right.
        let tails: [Float] = [-1e4, -200, -100, -89, 89, 100, 1e4]
        for (x, y) in zip(tails, mapVector(tails, VectorMath.silu)) {
            XCTAssertFalse(y.isNaN, "silu(\(x)) NaN")
            if x < 0 { XCTAssertTrue(y <= 0 && y > -1e-30, "silu(\(x)) = \(y)") } else { XCTAssertEqual(y, x, "silu(\(x))") }
        }
    }

    /// map handles lengths that are not multiples of 8 and in-place use (dst == src).
    func testMapTailsAndInPlace() {
        var rng = SplitMix64(seed: 200)
        for n in [0, 1, 3, 7, 8, 9, 17, 33] {
            let xs = rng.floats(n, -3, 3)
            XCTAssertEqual(mapVector(xs) { $0 * 2 + 1 }, xs.map { $0 * 2 + 1 }, "n \(n)")
            var inPlace = xs
            inPlace.withUnsafeMutableBufferPointer { p in
                if let b = p.baseAddress { VectorMath.map(b, b, n) { $0 - 0.5 } }
            }
            XCTAssertEqual(inPlace, xs.map { $0 - 0.5 }, "in place n \(n)")
        }
    }
}

final class ActivationTests: XCTestCase {
    let shapes: [[Int]] = [[1], [7], [3, 5, 7, 5], [1, 13, 9, 9], [3, 33, 17], [5, 4099]]

    func testSiLU() {
        var rng = SplitMix64(seed: 210)
        for shape in shapes {
            let x = rng.tensor(shape, -12, 12)
            let ref = doubles(x).map(siluD)
            let y = SiLU.forward(x)
            XCTAssertEqual(y.shape, shape)
            assertClose(y, ref, atol: 1e-30, rtol: Accuracy.siluRelative, "SiLU \(shape)")
        }
    }

    func testGELU() {
        var rng = SplitMix64(seed: 211)
        for shape in shapes {
            let x = rng.tensor(shape, -8, 8)
            let xs = doubles(x)
            let y = GELU.forward(x)
            XCTAssertEqual(y.shape, shape)
            assertClose(y, xs.map(geluD), atol: 0, rtol: 0, atolPerElement: xs.map { Accuracy.geluScaled * (1 + abs($0)) },
                        "GELU \(shape)")
        }
    }

    func testGEGLU() {
        var rng = SplitMix64(seed: 212)
        for shape in [[1, 1, 2 * 3], [3, 7, 2 * 13], [1, 33, 2 * 5], [2, 9, 2 * 17], [7, 2 * 8], [2, 2]] {
            let x = rng.tensor(shape, -5, 5)
            let xs = doubles(x)
            let d2 = shape.last!, d = d2 / 2, rows = x.count / d2
            var ref = [Double](), bound = [Double]()
            for r in 0..<rows {
                for j in 0..<d {
                    let h = xs[r * d2 + j], g = xs[r * d2 + d + j]
                    ref.append(h * geluD(g))
                    // gelu's error times |h|, plus the product's rounding.
                    bound.append(abs(h) * Accuracy.geluScaled * (1 + abs(g)) + u32 * abs(h * geluD(g)))
                }
            }
            let y = GEGLU.forward(x)
            XCTAssertEqual(y.shape, Array(shape.dropLast()) + [d])
            assertClose(y, ref, atol: 0, rtol: 0, atolPerElement: bound, "GEGLU \(shape)")
        }
    }
}

final class SoftmaxTests: XCTestCase {
    /// Double reference softmax over the last axis, with a per-element error bound.
    ///
    /// The kernel computes p_j = exp(x_j - max) / Σ_k exp(x_k - max) in float32. The subtraction
    /// rounds (δ_j <= u |x_j - max|; exact only when x_j and max are within a factor 2), exp adds
    /// expRelative, the float sum of M terms γ_M, the reciprocal and the product 2u. To first
    /// order the relative error of p_j is therefore at most
    ///   u |x_j - max| + Σ_k p_k u |x_k - max| + 2 expRelative + γ_M + 2u.
    /// Values whose exponent falls below exp's clamp (-87.3) come out ~1e-38 instead of
    /// smaller, hence atol 1e-37.
    func reference(_ x: Tensor) -> (ref: [Double], bound: [Double]) {
        let m = x.shape.last!, xs = doubles(x)
        var out = [Double](), bound = [Double]()
        for r in 0..<(x.count / m) {
            let row = xs[(r * m)..<(r * m + m)]
            let mx = row.max()!
            let e = row.map { exp($0 - mx) }
            let s = e.reduce(0, +)
            let p = e.map { $0 / s }
            let spread = zip(p, row).reduce(0.0) { $0 + $1.0 * u32 * abs($1.1 - mx) }
            let rel = spread + 2 * Accuracy.expRelative + gamma(m) + 2 * u32
            out += p
            bound += zip(p, row).map { $0.0 * (rel + u32 * abs($0.1 - mx)) }
        }
        return (out, bound)
    }

    func check(_ x: Tensor, _ label: String, line: UInt = #line) {
        let m = x.shape.last!
        let y = Softmax.forward(x)
        XCTAssertEqual(y.shape, x.shape, line: line)
        let (ref, bound) = reference(x)
        assertClose(y, ref, atol: 1e-37, rtol: 0, atolPerElement: bound, label, line: line)
        // Each row sums to 1 within the same tolerance (plus the Double sum here).
        let ys = doubles(y)
        for r in 0..<(x.count / m) {
            let s = ys[(r * m)..<(r * m + m)].reduce(0, +)
            let tol = bound[(r * m)..<(r * m + m)].reduce(0, +) + 1e-12
            XCTAssertEqual(s, 1, accuracy: tol, "\(label) row \(r) sum", line: line)
        }
    }

    func testOddShapes() {
        var rng = SplitMix64(seed: 220)
        for shape in [[1, 1], [5, 1], [3, 7, 1], [7, 3], [3, 7, 33], [13, 5], [2, 17], [4, 8], [2, 9], [3, 1000]] {
            check(rng.tensor(shape, -4, 4), "Softmax \(shape)")
        }
    }

    func testLengthOneIsExactlyOne() {
        var rng = SplitMix64(seed: 221)
        let x = rng.tensor([3, 7, 1], -1e4, 1e4)
        assertExact(Softmax.forward(x), [Float](repeating: 1, count: 21), "Softmax length 1")
    }

    func testLargeOffsets() {
        var rng = SplitMix64(seed: 222)
        for offset in [1e4, -1e4, 3e4] {
            for shape in [[3, 7], [5, 33], [2, 13], [1, 1]] {
                let vals = rng.floats(Tensor.count(of: shape), offset - 8, offset + 8)
                check(Tensor(shape: shape, values: vals), "Softmax \(shape) offset \(offset)")
            }
        }
    }

    /// Rows whose entries span far more than exp's range: most probabilities underflow.
    func testWideRange() {
        var rng = SplitMix64(seed: 223)
        check(rng.tensor([5, 33], -300, 300), "Softmax wide")
        // Equal maxima share the mass exactly.
        let x = Tensor(shape: [1, 5], values: [2, -1e4, 2, -1e4, 2])
        check(x, "Softmax ties")
    }

    /// Many rows so rowsInPlace runs in parallel chunks.
    func testManyRows() {
        var rng = SplitMix64(seed: 224)
        check(rng.tensor([3, 333, 9], -6, 6), "Softmax many rows")
    }
}
