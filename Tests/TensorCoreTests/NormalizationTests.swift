import Foundation
import TensorCore
import XCTest

/// Tolerance model for the normalisations. The inputs are float32, so each x carries a
/// representation error of u|x|; y = (x - mean) * invStd * w + b amplifies absolute errors in x
/// and in the (float32) mean by invStd * |w|. A backward-stable kernel therefore has error
/// bounded by a small multiple of u (|x| + |mean|) invStd |w| + u (|b| + |y|). With inputs
/// around 1000 ± 1 this is about 1e-4 — the precision the inputs themselves have relative to
/// their spread — while a catastrophic variance (one-pass E[x²] - E[x]² in float32) or a
/// mean accumulated too coarsely would be off by far more.
let normSlack = 8.0

func siluD(_ y: Double) -> Double { y / (1 + exp(-y)) }

/// Double reference for GroupNorm; returns the reference and the per-element tolerance above.
func groupNormReference(_ x: Tensor, groups: Int, _ w: Tensor, _ b: Tensor, eps: Double, silu: Bool) -> (ref: [Double], bound: [Double]) {
    let n = x.shape[0], c = x.shape[1], s = x.count / (n * c), cg = c / groups
    let xs = doubles(x), ws = doubles(w), bs = doubles(b)
    var ref = [Double](repeating: 0, count: xs.count), bound = ref
    for bi in 0..<n {
        for g in 0..<groups {
            let base = (bi * c + g * cg) * s, len = cg * s
            var mean = 0.0
            for i in 0..<len { mean += xs[base + i] }
            mean /= Double(len)
            var v = 0.0
            for i in 0..<len { v += (xs[base + i] - mean) * (xs[base + i] - mean) }
            v /= Double(len)
            let inv = 1 / (v + eps).squareRoot()
            for i in 0..<len {
                let ch = g * cg + i / s
                let yn = (xs[base + i] - mean) * inv * ws[ch] + bs[ch]
                ref[base + i] = silu ? siluD(yn) : yn
                // SiLU's slope is below 1.1 in magnitude; its own rounding adds a few ulp.
                bound[base + i] = normSlack * u32 * ((abs(xs[base + i]) + abs(mean)) * inv * abs(ws[ch]) + abs(bs[ch]) + abs(yn))
            }
        }
    }
    return (ref, bound)
}

func layerNormReference(_ x: Tensor, _ w: Tensor, _ b: Tensor, eps: Double) -> (ref: [Double], bound: [Double]) {
    let c = x.shape.last!, rows = x.count / c
    let xs = doubles(x), ws = doubles(w), bs = doubles(b)
    var ref = [Double](repeating: 0, count: xs.count), bound = ref
    for r in 0..<rows {
        let row = Array(xs[(r * c)..<(r * c + c)])
        let mean = row.reduce(0, +) / Double(c)
        let v = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
        let inv = 1 / (v + eps).squareRoot()
        for j in 0..<c {
            let y = (row[j] - mean) * inv * ws[j] + bs[j]
            ref[r * c + j] = y
            bound[r * c + j] = normSlack * u32 * ((abs(row[j]) + abs(mean)) * inv * abs(ws[j]) + abs(bs[j]) + abs(y))
        }
    }
    return (ref, bound)
}

final class GroupNormTests: XCTestCase {
    @discardableResult
    func check(shape: [Int], groups: Int, silu: Bool, offset: Double = 0, spread: Double = 1, eps: Float = 1e-5,
               seed: UInt64, line: UInt = #line) -> Comparison {
        var rng = SplitMix64(seed: seed)
        let x = rng.tensor(shape, offset - spread, offset + spread)
        let w = rng.tensor([shape[1]], 0.5, 1.5), b = rng.tensor([shape[1]], -0.5, 0.5)
        let y = GroupNorm.forward(x, groups: groups, weight: w, bias: b, eps: eps, silu: silu)
        XCTAssertEqual(y.shape, shape, line: line)
        let (ref, bound) = groupNormReference(x, groups: groups, w, b, eps: Double(eps), silu: silu)
        return assertClose(y, ref, atol: 1e-7, rtol: 1e-6, atolPerElement: bound,
                           "GroupNorm \(shape) groups \(groups) silu \(silu) offset \(offset)", line: line)
    }

    func testOneGroup() {
        for silu in [false, true] {
            check(shape: [1, 5, 7, 5], groups: 1, silu: silu, seed: 100)
            check(shape: [3, 13, 9, 9], groups: 1, silu: silu, seed: 101)
        }
    }

    func testSeveralGroups() {
        for silu in [false, true] {
            check(shape: [3, 15, 7, 5], groups: 5, silu: silu, seed: 102)
            check(shape: [1, 6, 9, 9], groups: 3, silu: silu, seed: 103)
            check(shape: [3, 34, 7], groups: 17, silu: silu, seed: 104)  // 3-D input, channels per group 2
        }
    }

    func testChannelsEqualGroups() {
        for silu in [false, true] {
            check(shape: [3, 13, 7, 5], groups: 13, silu: silu, seed: 105)
            check(shape: [1, 3, 9, 9], groups: 3, silu: silu, seed: 106)
            check(shape: [1, 5, 1, 1], groups: 1, silu: silu, seed: 107)  // 5 values per group
        }
    }

    /// Group size well above the kernel's 4096-element flush of its float accumulators.
    func testLargeGroups() {
        check(shape: [1, 8, 33, 33], groups: 2, silu: false, seed: 108)
        check(shape: [3, 4, 61, 67], groups: 1, silu: true, seed: 109)
    }

    /// Values 1000 ± 1: the variance (about 1/3) is 3e-7 of the mean square, so a one-pass
    /// float variance would be useless; checks the two-pass variance and the mean's accuracy.
    func testLargeCommonOffset() {
        for silu in [false, true] {
            check(shape: [3, 13, 7, 5], groups: 1, silu: silu, offset: 1000, seed: 110)
            check(shape: [1, 15, 9, 9], groups: 5, silu: silu, offset: 1000, seed: 111)
            check(shape: [1, 4, 61, 67], groups: 1, silu: silu, offset: 1000, seed: 112)
            check(shape: [1, 2, 64, 64], groups: 1, silu: silu, offset: -1000, seed: 113)
        }
    }

    /// A constant group has zero variance; the output is then just the bias (eps keeps it finite).
    func testConstantGroup() {
        let x = Tensor(repeating: 3.25, shape: [1, 3, 7, 5])
        let w = Tensor(shape: [3], values: [1, 2, 3]), b = Tensor(shape: [3], values: [0.5, -1, 2])
        let y = GroupNorm.forward(x, groups: 3, weight: w, bias: b, eps: 1e-5)
        let ref = (0..<y.count).map { Double([0.5, -1, 2][$0 / 35]) }
        assertClose(y, ref, atol: 1e-6, rtol: 0, "GroupNorm constant")
    }
}

final class LayerNormTests: XCTestCase {
    func check(shape: [Int], offset: Double = 0, eps: Float = 1e-5, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let c = shape.last!
        let x = rng.tensor(shape, offset - 1, offset + 1)
        let w = rng.tensor([c], 0.5, 1.5), b = rng.tensor([c], -0.5, 0.5)
        let y = LayerNorm.forward(x, weight: w, bias: b, eps: eps)
        XCTAssertEqual(y.shape, shape, line: line)
        let (ref, bound) = layerNormReference(x, w, b, eps: Double(eps))
        assertClose(y, ref, atol: 1e-7, rtol: 1e-6, atolPerElement: bound,
                    "LayerNorm \(shape) offset \(offset)", line: line)
    }

    func testOddShapes() {
        check(shape: [7, 13], seed: 120)
        check(shape: [3, 7, 5], seed: 121)
        check(shape: [1, 1, 17], seed: 122)
        check(shape: [3, 33, 3], seed: 123)
        check(shape: [2, 9, 320], eps: 1e-6, seed: 124)
        check(shape: [100, 17], seed: 125)  // enough rows to split across workers
    }

    func testLargeCommonOffset() {
        check(shape: [7, 13], offset: 1000, seed: 126)
        check(shape: [3, 33, 17], offset: 1000, seed: 127)
        check(shape: [2, 5000], offset: -1000, seed: 128)  // crosses the 4096-element flush
    }
}
