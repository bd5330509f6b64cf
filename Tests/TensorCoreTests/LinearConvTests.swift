@testable import TensorCore
import XCTest

/// γ_n = n u / (1 - n u): Higham's bound on the relative error of an n-term float32 sum of
/// products in any order (with or without FMA). A reduction's error is at most γ_n Σ|terms|,
/// so that is the per-element absolute tolerance used for matmul-like kernels (the "atol scaled
/// by reduction length"); rtol 1e-5 covers the final rounding with a wide margin.
func gamma(_ n: Int) -> Double { Double(n) * u32 / (1 - Double(n) * u32) }

/// Plain reference for Linear: y[r, o] = b[o] + Σ_i x[r, i] w[o, i], in Double, with the
/// matching error bounds γ_{in+1} (Σ|x w| + |b|).
func linearReference(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> (ref: [Double], bound: [Double]) {
    let inF = w.shape[1], outF = w.shape[0], rows = x.count / inF
    let xs = doubles(x), ws = doubles(w), bs = b.map(doubles)
    var ref = [Double](repeating: 0, count: rows * outF), bound = ref
    for r in 0..<rows {
        for o in 0..<outF {
            var s = bs?[o] ?? 0, mag = abs(bs?[o] ?? 0)
            for i in 0..<inF {
                s += xs[r * inF + i] * ws[o * inF + i]
                mag += abs(xs[r * inF + i] * ws[o * inF + i])
            }
            ref[r * outF + o] = s
            bound[r * outF + o] = gamma(inF + 1) * mag
        }
    }
    return (ref, bound)
}

/// Plain reference for Conv2d (cross-correlation, zero padding), NCHW, in Double, with the
/// error bound γ_{C k k + 1} (Σ|x w| + |b|) per output.
func convReference(_ x: Tensor, _ w: Tensor, _ b: Tensor?, stride: Int, padding: Int) -> (ref: [Double], bound: [Double], shape: [Int]) {
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, k) = (w.shape[0], w.shape[2])
    let ho = (h + 2 * padding - k) / stride + 1, wo = (wd + 2 * padding - k) / stride + 1
    let xs = doubles(x), ws = doubles(w), bs = b.map(doubles)
    var ref = [Double](repeating: 0, count: n * o * ho * wo), bound = ref
    for bi in 0..<n {
        for oc in 0..<o {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var s = bs?[oc] ?? 0, mag = abs(bs?[oc] ?? 0)
                    for ci in 0..<c {
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let iy = oy * stride + ky - padding, ix = ox * stride + kx - padding
                                guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                                let p = xs[((bi * c + ci) * h + iy) * wd + ix] * ws[((oc * c + ci) * k + ky) * k + kx]
                                s += p
                                mag += abs(p)
                            }
                        }
                    }
                    let idx = ((bi * o + oc) * ho + oy) * wo + ox
                    ref[idx] = s
                    bound[idx] = gamma(c * k * k + 1) * mag
                }
            }
        }
    }
    return (ref, bound, [n, o, ho, wo])
}

final class LinearTests: XCTestCase {
    func check(xShape: [Int], inF: Int, outF: Int, bias: Bool, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let x = rng.tensor(xShape)
        let w = rng.tensor([outF, inF])
        let b = bias ? rng.tensor([outF]) : nil
        let y = Linear.forward(x, weight: w, bias: b)
        XCTAssertEqual(y.shape, Array(xShape.dropLast()) + [outF], line: line)
        let (ref, bound) = linearReference(x, w, b)
        assertClose(y, ref, atol: 0, rtol: 1e-5, atolPerElement: bound,
                    "Linear x\(xShape) in \(inF) out \(outF) bias \(bias)", line: line)
    }

    func test2DWithBias() {
        check(xShape: [7, 13], inF: 13, outF: 5, bias: true, seed: 1)
        check(xShape: [1, 3], inF: 3, outF: 17, bias: true, seed: 2)
        check(xShape: [33, 17], inF: 17, outF: 9, bias: true, seed: 3)
    }

    func test2DWithoutBias() {
        check(xShape: [7, 13], inF: 13, outF: 5, bias: false, seed: 4)
        check(xShape: [1, 5], inF: 5, outF: 3, bias: false, seed: 5)
        check(xShape: [33, 17], inF: 17, outF: 9, bias: false, seed: 6)
    }

    func test3DWithAndWithoutBias() {
        check(xShape: [3, 7, 13], inF: 13, outF: 5, bias: true, seed: 7)
        check(xShape: [3, 7, 13], inF: 13, outF: 5, bias: false, seed: 8)
        check(xShape: [1, 33, 5], inF: 5, outF: 17, bias: true, seed: 9)
        check(xShape: [3, 1, 17], inF: 17, outF: 3, bias: false, seed: 10)
    }

    /// Many rows, so the bias fill runs through Parallel.forRanges in several chunks.
    func testManyRowsWithBias() {
        check(xShape: [2, 333, 13], inF: 13, outF: 7, bias: true, seed: 11)
    }

    /// The output must not depend on whatever the uninitialised output buffer held: running the
    /// no-bias path twice gives identical results.
    func testNoBiasIsDeterministic() {
        var rng = SplitMix64(seed: 12)
        let x = rng.tensor([5, 9]), w = rng.tensor([3, 9])
        let a = Linear.forward(x, weight: w, bias: nil), b = Linear.forward(x, weight: w, bias: nil)
        assertExact(a, b.scalars, "Linear repeat")
    }
}

final class Conv2dTests: XCTestCase {
    func check(n: Int, c: Int, h: Int, w: Int, o: Int, k: Int, stride: Int, padding: Int, bias: Bool,
               seed: UInt64, columnBudget: Int = Conv2d.columnBudget, foldColumnBudget: Int = Conv2d.foldColumnBudget, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let x = rng.tensor([n, c, h, w])
        let wt = rng.tensor([o, c, k, k])
        let b = bias ? rng.tensor([o]) : nil
        let y = Conv2d.forward(x, weight: wt, bias: b, stride: stride, padding: padding, winograd: nil, columnBudget: columnBudget,
                               foldColumnBudget: foldColumnBudget)
        let (ref, bound, shape) = convReference(x, wt, b, stride: stride, padding: padding)
        XCTAssertEqual(y.shape, shape, "output shape", line: line)
        XCTAssertEqual(Conv2d.outputSize(h, kernel: k, stride: stride, padding: padding), shape[2], line: line)
        guard y.shape == shape else { return }
        assertClose(y, ref, atol: 0, rtol: 1e-5, atolPerElement: bound,
                    "Conv2d x[\(n),\(c),\(h),\(w)] o \(o) k \(k) s \(stride) p \(padding) bias \(bias)", line: line)
    }

    func test3x3Stride1Pad1() {
        check(n: 1, c: 3, h: 7, w: 5, o: 5, k: 3, stride: 1, padding: 1, bias: true, seed: 20)
        check(n: 3, c: 5, h: 9, w: 9, o: 13, k: 3, stride: 1, padding: 1, bias: true, seed: 21)
        check(n: 3, c: 13, h: 7, w: 5, o: 3, k: 3, stride: 1, padding: 1, bias: false, seed: 22)
        check(n: 1, c: 17, h: 1, w: 1, o: 5, k: 3, stride: 1, padding: 1, bias: true, seed: 23)
        check(n: 1, c: 3, h: 2, w: 9, o: 3, k: 3, stride: 1, padding: 1, bias: false, seed: 24)
    }

    /// Columns in bands of output rows: a budget of one row's columns (or less: still one row), a
    /// few rows with a short last band, stride 2, and batches of large planes (no folding). More
    /// than `fewOutputsLimit` output channels where 3x3 stride 1 would compute directly.
    func testColumnBands() {
        check(n: 1, c: 3, h: 7, w: 5, o: 9, k: 3, stride: 1, padding: 1, bias: true, seed: 25, columnBudget: 27 * 5)
        check(n: 1, c: 3, h: 7, w: 5, o: 10, k: 3, stride: 1, padding: 1, bias: false, seed: 26, columnBudget: 1)
        check(n: 2, c: 4, h: 9, w: 6, o: 3, k: 3, stride: 2, padding: 1, bias: true, seed: 27, columnBudget: 36 * 3 * 2)
        check(n: 2, c: 2, h: 40, w: 33, o: 11, k: 3, stride: 1, padding: 1, bias: true, seed: 28, columnBudget: 18 * 33 * 7)
        check(n: 1, c: 2, h: 8, w: 8, o: 3, k: 2, stride: 2, padding: 0, bias: false, seed: 29, columnBudget: 8 * 4)
    }

    /// Small planes fold several samples into one product, at most `foldColumnBudget` floats of
    /// columns: 2 of 5 samples per product (a short last one), 1 per product, all 5; 1x1, 3x3 and
    /// stride 2.
    func testFoldedSampleGroups() {
        let perSample = 4 * 9 * 6 * 5
        check(n: 5, c: 4, h: 6, w: 5, o: 9, k: 3, stride: 1, padding: 1, bias: true, seed: 40, foldColumnBudget: 2 * perSample)
        check(n: 5, c: 4, h: 6, w: 5, o: 9, k: 3, stride: 1, padding: 1, bias: false, seed: 41, foldColumnBudget: 1)
        check(n: 5, c: 4, h: 6, w: 5, o: 9, k: 3, stride: 1, padding: 1, bias: true, seed: 42, foldColumnBudget: 5 * perSample)
        check(n: 5, c: 6, h: 6, w: 5, o: 3, k: 1, stride: 1, padding: 0, bias: true, seed: 43, foldColumnBudget: 6 * 30 * 2)
        check(n: 3, c: 4, h: 8, w: 7, o: 10, k: 3, stride: 2, padding: 1, bias: true, seed: 44, foldColumnBudget: 36 * 12 * 2)
    }

    /// 3x3 stride-1 convolutions with at most `fewOutputsLimit` output channels (computed
    /// directly): several row bands with a short last one, rows of whole vectors and a remainder,
    /// a batch, one and eight output channels.
    func testFewOutputChannels() {
        XCTAssertEqual(Conv2d.fewOutputsLimit, 8)
        check(n: 2, c: 5, h: 21, w: 37, o: 3, k: 3, stride: 1, padding: 1, bias: true, seed: 34)
        check(n: 1, c: 9, h: 8, w: 16, o: 8, k: 3, stride: 1, padding: 1, bias: false, seed: 35)
        check(n: 3, c: 2, h: 17, w: 3, o: 1, k: 3, stride: 1, padding: 1, bias: true, seed: 36)
    }

    func test3x3Stride2Pad1OddAndEvenSizes() {
        // Odd sizes (9x9 -> 5x5, 7x5 -> 4x3) and even sizes (8x6 -> 4x3, 10x10 -> 5x5).
        check(n: 1, c: 3, h: 9, w: 9, o: 5, k: 3, stride: 2, padding: 1, bias: true, seed: 30)
        check(n: 3, c: 5, h: 7, w: 5, o: 13, k: 3, stride: 2, padding: 1, bias: true, seed: 31)
        check(n: 3, c: 13, h: 8, w: 6, o: 3, k: 3, stride: 2, padding: 1, bias: false, seed: 32)
        check(n: 1, c: 5, h: 10, w: 10, o: 17, k: 3, stride: 2, padding: 1, bias: false, seed: 33)
        check(n: 1, c: 3, h: 1, w: 2, o: 3, k: 3, stride: 2, padding: 1, bias: true, seed: 34)
    }

    func test1x1DirectPath() {
        check(n: 1, c: 3, h: 7, w: 5, o: 5, k: 1, stride: 1, padding: 0, bias: true, seed: 40)
        check(n: 3, c: 13, h: 9, w: 9, o: 17, k: 1, stride: 1, padding: 0, bias: true, seed: 41)
        check(n: 3, c: 17, h: 7, w: 5, o: 3, k: 1, stride: 1, padding: 0, bias: false, seed: 42)
    }

    /// Other configurations that go through im2col: 1x1 with padding or stride, unpadded 3x3.
    func testOtherIm2colConfigurations() {
        check(n: 3, c: 5, h: 7, w: 5, o: 3, k: 1, stride: 2, padding: 0, bias: true, seed: 50)
        check(n: 1, c: 3, h: 7, w: 5, o: 5, k: 1, stride: 1, padding: 1, bias: false, seed: 51)
        check(n: 3, c: 3, h: 9, w: 7, o: 5, k: 3, stride: 1, padding: 0, bias: true, seed: 52)
        check(n: 1, c: 3, h: 9, w: 9, o: 5, k: 3, stride: 2, padding: 0, bias: false, seed: 53)
        check(n: 1, c: 3, h: 6, w: 7, o: 5, k: 5, stride: 1, padding: 2, bias: true, seed: 54)
    }

    /// A spatially large case whose im2col rows (c k k = 117) split across workers.
    func testLargerPlaneBatch3() {
        check(n: 3, c: 13, h: 33, w: 17, o: 5, k: 3, stride: 1, padding: 1, bias: true, seed: 60)
        check(n: 3, c: 13, h: 33, w: 17, o: 5, k: 3, stride: 2, padding: 1, bias: true, seed: 61)
    }
}
