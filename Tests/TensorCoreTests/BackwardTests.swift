import Foundation
import XCTest
@testable import TensorCore

/// Backward kernels against central finite differences of L = Σ w · f(x) (see GradientCheck.swift).
///
/// Tolerances: matrix products get Higham's bound γ_n Σ|terms| per element (n the length of the
/// reduction; a rigorous bound for float32 sums in any order), the other kernels a bound in units
/// of the gradient's largest magnitude justified per test. Every test also asserts that the
/// gradients do not vanish and that the tolerance stays far below their scale. Set
/// TENSORCORE_TESTS_VERBOSE=1 to print the worst error of every comparison.
final class BackwardTests: XCTestCase {
    // MARK: Linear

    func checkLinear(xShape: [Int], inF: Int, outF: Int, bias: Bool, sampled: Bool = false, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let x = Sample(&rng, xShape), w = Sample(&rng, [outF, inF]), b = Sample(&rng, [outF])
        let g = Sample(&rng, Array(xShape.dropLast()) + [outF])
        let rows = x.tensor.count / inF
        let r = Linear.backward(x.tensor, weight: w.tensor, gradOutput: g.tensor, input: true, parameters: true, hasBias: bias)
        XCTAssertEqual(r.input?.shape, xShape, line: line)
        XCTAssertEqual(r.weight?.shape, [outF, inF], line: line)
        XCTAssertEqual(r.bias?.shape, bias ? [outF] : nil, line: line)
        let (xs, ws, bs, gs) = (x.values, w.values, b.values, g.values)
        // Row r, output o of x W^T + b; L's terms touched by x[r, :] are row r, by W[o, :] or b[o] column o.
        func y(_ xs: [Double], _ ws: [Double], _ bs: [Double], _ r: Int, _ o: Int) -> Double {
            var s = bs[o]
            for i in 0..<inF { s += xs[r * inF + i] * ws[o * inF + i] }
            return s
        }
        let an = linearGradients(xs, ws, gs, rows: rows, inF: inF, outF: outF)
        let xi = sampled ? sampleIndices(xs.count, 64, &rng) : nil, wi = sampled ? sampleIndices(ws.count, 64, &rng) : nil
        let fdX = centralDifferences(xs, at: xi) { i, xs in
            let row = i / inF
            return (0..<outF).reduce(0.0) { $0 + gs[row * outF + $1] * y(xs, ws, bs, row, $1) }
        }
        let fdW = centralDifferences(ws, at: wi) { i, ws in
            let o = i / inF
            return (0..<rows).reduce(0.0) { $0 + gs[$1 * outF + o] * y(xs, ws, bs, $1, o) }
        }
        let fdB = centralDifferences(bs) { o, bs in (0..<rows).reduce(0.0) { $0 + gs[$1 * outF + o] * y(xs, ws, bs, $1, o) } }
        // sgemm sums `outF` (dx) or `rows` (dW) products: |err| <= γ_n Σ|terms|; the bias sums
        // `rows` values (float blocks of 64, then Double). scaledAtol 1e-8 covers the finite
        // differences' own error (~1e-10 of the gradient's scale).
        let label = "Linear x\(xShape) in \(inF) out \(outF) bias \(bias)"
        func pick(_ a: [Double], _ idx: [Int]?) -> [Double] { idx.map { $0.map { a[$0] } } ?? a }
        assertGradient(r.input, fdX, at: xi, atolPerElement: pick(an.dxMag, xi).map { gamma(outF) * $0 }, scaledAtol: 1e-8, rtol: 0,
                       "\(label) dx", line: line)
        assertGradient(r.weight, fdW, at: wi, atolPerElement: pick(an.dwMag, wi).map { gamma(rows) * $0 }, scaledAtol: 1e-8, rtol: 0,
                       "\(label) dW", line: line)
        if bias {
            assertGradient(r.bias, fdB, atolPerElement: an.dbMag.map { gamma(rows) * $0 }, scaledAtol: 1e-8, rtol: 0, "\(label) db", line: line)
        }
        if sampled {
            // Every element against the analytic Double gradient (validated by the samples above).
            assertGradient(r.input, an.dx, atolPerElement: an.dxMag.map { gamma(outF) * $0 }, rtol: 0, "\(label) dx (analytic)", line: line)
            assertGradient(r.weight, an.dw, atolPerElement: an.dwMag.map { gamma(rows) * $0 }, rtol: 0, "\(label) dW (analytic)", line: line)
        }
        // Partial requests give the same numbers and nothing else.
        let only = Linear.backward(x.tensor, weight: w.tensor, gradOutput: g.tensor, input: true, parameters: false, hasBias: bias)
        XCTAssertNil(only.weight, line: line)
        XCTAssertNil(only.bias, line: line)
        if let a = only.input, let b = r.input { assertExact(a, b.scalars, "\(label) dx alone", line: line) }
        let params = Linear.backward(x.tensor, weight: w.tensor, gradOutput: g.tensor, input: false, parameters: true, hasBias: bias)
        XCTAssertNil(params.input, line: line)
        if let a = params.weight, let b = r.weight { assertExact(a, b.scalars, "\(label) dW alone", line: line) }
    }

    func testLinear() {
        checkLinear(xShape: [7, 13], inF: 13, outF: 5, bias: true, seed: 1000)
        checkLinear(xShape: [1, 3], inF: 3, outF: 17, bias: false, seed: 1001)
        checkLinear(xShape: [3, 7, 13], inF: 13, outF: 9, bias: true, seed: 1002)
        checkLinear(xShape: [1, 33, 5], inF: 5, outF: 17, bias: true, seed: 1003)
    }

    /// Products above BLAS.parallelThreshold (400 x 32 x 170 = 2.2 M multiply-adds) split over the
    /// cores, and 400 x 170 gradients make the bias sums run in two chunks.
    func testLinearParallel() {
        XCTAssertGreaterThanOrEqual(400 * 32 * 170, BLAS.parallelThreshold)
        checkLinear(xShape: [2, 200, 32], inF: 32, outF: 170, bias: true, sampled: true, seed: 1004)
    }

    // MARK: Conv2d

    func checkConv(n: Int, c: Int, h: Int, w wd: Int, o: Int, k: Int, stride: Int, padding: Int, bias: Bool,
                   sampled: Bool = false, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let x = Sample(&rng, [n, c, h, wd]), w = Sample(&rng, [o, c, k, k]), b = Sample(&rng, [o])
        let ho = Conv2d.outputSize(h, kernel: k, stride: stride, padding: padding)
        let wo = Conv2d.outputSize(wd, kernel: k, stride: stride, padding: padding)
        let g = Sample(&rng, [n, o, ho, wo])
        let r = Conv2d.backward(x.tensor, weight: w.tensor, stride: stride, padding: padding, gradOutput: g.tensor,
                                input: true, parameters: true, hasBias: bias)
        let label = "Conv2d x[\(n),\(c),\(h),\(wd)] o \(o) k \(k) s \(stride) p \(padding) bias \(bias)"
        XCTAssertEqual(r.input?.shape, x.shape, label, line: line)
        XCTAssertEqual(r.weight?.shape, w.shape, label, line: line)
        XCTAssertEqual(r.bias?.shape, bias ? [o] : nil, label, line: line)
        let (xs, ws, bs, gs) = (x.values, w.values, b.values, g.values)
        func y(_ xs: [Double], _ ws: [Double], _ bs: [Double], _ s: Int, _ oc: Int, _ oy: Int, _ ox: Int) -> Double {
            convOutput(xs, ws, bs, c: c, h: h, wd: wd, k: k, stride: stride, padding: padding, sample: s, oc: oc, oy: oy, ox: ox)
        }
        /// L's terms of output channel oc (all that W[oc] and b[oc] touch).
        func channelLoss(_ xs: [Double], _ ws: [Double], _ bs: [Double], _ oc: Int) -> Double {
            var l = 0.0
            for s in 0..<n {
                for oy in 0..<ho {
                    for ox in 0..<wo { l += gs[((s * o + oc) * ho + oy) * wo + ox] * y(xs, ws, bs, s, oc, oy, ox) }
                }
            }
            return l
        }
        // Large cases: 64 sampled inputs, 24 sampled weights (each weight's loss spans a whole output channel).
        let xi = sampled ? sampleIndices(xs.count, 64, &rng) : nil, wi = sampled ? sampleIndices(ws.count, 24, &rng) : nil
        let fdX = centralDifferences(xs, at: xi) { i, xs in
            // x[s, ·, iy, ix] reaches the outputs whose window covers it, in every channel.
            let s = i / (c * h * wd), iy = (i / wd) % h, ix = i % wd
            var l = 0.0
            for oy in 0..<ho where (0..<k).contains(iy + padding - oy * stride) {
                for ox in 0..<wo where (0..<k).contains(ix + padding - ox * stride) {
                    for oc in 0..<o { l += gs[((s * o + oc) * ho + oy) * wo + ox] * y(xs, ws, bs, s, oc, oy, ox) }
                }
            }
            return l
        }
        let fdW = centralDifferences(ws, at: wi) { i, ws in channelLoss(xs, ws, bs, i / (c * k * k)) }
        let fdB = centralDifferences(bs) { oc, bs in channelLoss(xs, ws, bs, oc) }
        // dW: products summed over N Ho Wo terms (one product, or per-image products added with
        // beta = 1): γ_{N Ho Wo} Σ|terms|. dx: W^T g sums O terms, then col2im adds up to k² of
        // those: γ_{O + k²} Σ|terms|; where dx is a Winograd convolution of g (3x3, stride 1,
        // large planes), 4 γ_{9 O + 1} Σ|terms| as in WinogradTests. db: per-plane float blocks of
        // 512 then Double, γ_{N Ho Wo} Σ|g|. scaledAtol 1e-8 covers the finite differences' own error.
        let an = convGradients(xs, ws, gs, n: n, c: c, h: h, wd: wd, o: o, k: k, stride: stride, padding: padding)
        let winograd = k == 3 && stride == 1 && padding == 1 && Winograd3x3.applies(channels: o, outChannels: c, plane: ho * wo)
        let gx = winograd ? 4 * gamma(9 * o + 1) : gamma(o + k * k), gw = gamma(n * ho * wo)
        func pick(_ a: [Double], _ idx: [Int]?) -> [Double] { idx.map { $0.map { a[$0] } } ?? a }
        assertGradient(r.input, fdX, at: xi, atolPerElement: pick(an.dxMag, xi).map { gx * $0 }, scaledAtol: 1e-8, rtol: 0,
                       "\(label) dx", line: line)
        assertGradient(r.weight, fdW, at: wi, atolPerElement: pick(an.dwMag, wi).map { gw * $0 }, scaledAtol: 1e-8, rtol: 0,
                       "\(label) dW", line: line)
        if bias {
            assertGradient(r.bias, fdB, atolPerElement: an.dbMag.map { gw * $0 }, scaledAtol: 1e-8, rtol: 0, "\(label) db", line: line)
        }
        if sampled {
            assertGradient(r.input, an.dx, atolPerElement: an.dxMag.map { gx * $0 }, rtol: 0, "\(label) dx (analytic)", line: line)
            assertGradient(r.weight, an.dw, atolPerElement: an.dwMag.map { gw * $0 }, rtol: 0, "\(label) dW (analytic)", line: line)
        }
        let only = Conv2d.backward(x.tensor, weight: w.tensor, stride: stride, padding: padding, gradOutput: g.tensor,
                                   input: true, parameters: false, hasBias: bias)
        XCTAssertNil(only.weight, line: line)
        XCTAssertNil(only.bias, line: line)
        if let a = only.input, let b = r.input { assertExact(a, b.scalars, "\(label) dx alone", line: line) }
        let params = Conv2d.backward(x.tensor, weight: w.tensor, stride: stride, padding: padding, gradOutput: g.tensor,
                                     input: false, parameters: true, hasBias: bias)
        XCTAssertNil(params.input, line: line)
        if let a = params.weight, let b = r.weight { assertExact(a, b.scalars, "\(label) dW alone", line: line) }
    }

    func testConv3x3() {
        checkConv(n: 3, c: 6, h: 5, w: 7, o: 4, k: 3, stride: 1, padding: 1, bias: true, seed: 1100)
        checkConv(n: 1, c: 3, h: 7, w: 5, o: 5, k: 3, stride: 1, padding: 1, bias: false, seed: 1101)
        checkConv(n: 3, c: 2, h: 6, w: 9, o: 3, k: 3, stride: 1, padding: 0, bias: true, seed: 1102)
        checkConv(n: 1, c: 2, h: 1, w: 2, o: 3, k: 3, stride: 1, padding: 1, bias: true, seed: 1103)
    }

    func testConvStride2() {
        // Odd (7x5 -> 4x3) and even (8x6 -> 4x3) planes; unpadded 9x9 -> 4x4.
        checkConv(n: 1, c: 3, h: 7, w: 5, o: 5, k: 3, stride: 2, padding: 1, bias: true, seed: 1110)
        checkConv(n: 3, c: 4, h: 8, w: 6, o: 3, k: 3, stride: 2, padding: 1, bias: true, seed: 1111)
        checkConv(n: 1, c: 2, h: 9, w: 9, o: 3, k: 3, stride: 2, padding: 0, bias: false, seed: 1112)
    }

    func testConv1x1AndOtherKernels() {
        checkConv(n: 1, c: 5, h: 5, w: 7, o: 4, k: 1, stride: 1, padding: 0, bias: true, seed: 1120)   // direct, unfolded
        checkConv(n: 3, c: 5, h: 5, w: 7, o: 4, k: 1, stride: 1, padding: 0, bias: true, seed: 1121)   // direct, folded
        checkConv(n: 3, c: 3, h: 7, w: 5, o: 2, k: 1, stride: 2, padding: 0, bias: false, seed: 1122)  // 1x1 through im2col
        checkConv(n: 1, c: 2, h: 6, w: 7, o: 3, k: 5, stride: 1, padding: 2, bias: true, seed: 1123)
    }

    /// Sizes where both products (O x Ckk x columns multiply-adds) pass BLAS.parallelThreshold
    /// and im2col / col2im split over workers: a batch folded into one product (32x32 planes),
    /// per-image products with beta = 1 accumulation (33x35 planes, above
    /// Conv2d.foldPlaneLimit), a 1x1 convolution on x and dx directly, and a folded stride-2 one.
    func testConvParallel() {
        for (o, ck, columns) in [(64, 18, 2 * 1024), (52, 36, 33 * 35), (40, 48, 33 * 35), (32, 72, 3 * 17 * 18)] {
            XCTAssertGreaterThanOrEqual(o * ck * columns, BLAS.parallelThreshold)
        }
        XCTAssertGreaterThan(33 * 35, Conv2d.foldPlaneLimit)
        checkConv(n: 2, c: 2, h: 32, w: 32, o: 64, k: 3, stride: 1, padding: 1, bias: true, sampled: true, seed: 1130)
        checkConv(n: 2, c: 4, h: 33, w: 35, o: 52, k: 3, stride: 1, padding: 1, bias: true, sampled: true, seed: 1131)
        checkConv(n: 1, c: 48, h: 33, w: 35, o: 40, k: 1, stride: 1, padding: 0, bias: true, sampled: true, seed: 1132)
        checkConv(n: 3, c: 8, h: 33, w: 35, o: 32, k: 3, stride: 2, padding: 1, bias: false, sampled: true, seed: 1133)
    }

    /// 3x3, stride 1, padding 1 on planes of at least 1024 with 16 or more channels each way: the
    /// input gradient is computed as a Winograd convolution of g with the flipped weights.
    func testConvWinogradInputGradient() {
        XCTAssertTrue(Winograd3x3.applies(channels: 17, outChannels: 16, plane: 32 * 33))
        checkConv(n: 2, c: 16, h: 32, w: 33, o: 17, k: 3, stride: 1, padding: 1, bias: true, sampled: true, seed: 1140)
        XCTAssertFalse(Winograd3x3.applies(channels: 17, outChannels: 8, plane: 32 * 33))
        checkConv(n: 1, c: 8, h: 32, w: 33, o: 17, k: 3, stride: 1, padding: 1, bias: false, sampled: true, seed: 1141)
    }

    // MARK: Normalisation

    func checkGroupNorm(shape: [Int], groups: Int, silu: Bool, eps: Float = 1e-5, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let n = shape[0], c = shape[1], spatial = Tensor.count(of: shape) / (n * c), cg = c / groups
        // Inputs off centre (mean ~0.5), weights and biases away from 0.
        let x = Sample(&rng, shape, -0.5, 1.5), w = Sample(&rng, [c], 0.5, 1.5), b = Sample(&rng, [c], -0.5, 0.5)
        let g = Sample(&rng, shape)
        let r = GroupNorm.backward(x.tensor, groups: groups, weight: w.tensor, bias: b.tensor, eps: eps, silu: silu,
                                   gradOutput: g.tensor, parameters: true)
        let label = "GroupNorm \(shape) groups \(groups) silu \(silu)"
        XCTAssertEqual(r.input.shape, shape, line: line)
        let (xs, ws, bs, gs) = (x.values, w.values, b.values, g.values)
        func groupLoss(_ xs: [Double], _ ws: [Double], _ bs: [Double], _ s: Int, _ gi: Int) -> Double {
            let out = groupNormGroup(xs, ws, bs, c: c, spatial: spatial, groups: groups, eps: Double(eps), silu: silu, sample: s, group: gi)
            let base = (s * c + gi * cg) * spatial
            return out.indices.reduce(0.0) { $0 + gs[base + $1] * out[$1] }
        }
        let fdX = centralDifferences(xs) { i, xs in groupLoss(xs, ws, bs, i / (c * spatial), (i / spatial) % c / cg) }
        let fdW = centralDifferences(ws) { ch, ws in (0..<n).reduce(0.0) { $0 + groupLoss(xs, ws, bs, $1, ch / cg) } }
        let fdB = centralDifferences(bs) { ch, bs in (0..<n).reduce(0.0) { $0 + groupLoss(xs, ws, bs, $1, ch / cg) } }
        // dx = rstd (w gy - mean(w gy) - x̂ mean(w gy x̂)): x̂ and rstd carry a few ulp from the float
        // mean and variance, gy (with SiLU) a few more from exp; the group sums are Double. So
        // |err| is a few ulp of rstd |w g| (1 + |x̂|), rstd ~ 1.7 here: 1e-6 of the largest
        // gradient is ~16 ulp of it. The parameter gradients sum N x spatial such terms per
        // channel in Double: the same relative bound.
        assertGradient(r.input, fdX, scaledAtol: 1e-6, rtol: 1e-6, "\(label) dx", line: line)
        assertGradient(r.weight, fdW, scaledAtol: 1e-6, rtol: 1e-6, "\(label) dweight", line: line)
        assertGradient(r.bias, fdB, scaledAtol: 1e-6, rtol: 1e-6, "\(label) dbias", line: line)
        let only = GroupNorm.backward(x.tensor, groups: groups, weight: w.tensor, bias: b.tensor, eps: eps, silu: silu,
                                      gradOutput: g.tensor, parameters: false)
        XCTAssertNil(only.weight, line: line)
        XCTAssertNil(only.bias, line: line)
        assertExact(only.input, r.input.scalars, "\(label) dx alone", line: line)
    }

    func testGroupNorm() {
        for silu in [false, true] {
            checkGroupNorm(shape: [1, 6, 5, 7], groups: 3, silu: silu, seed: 1200)
            checkGroupNorm(shape: [3, 6, 5, 7], groups: 3, silu: silu, seed: 1201)
            checkGroupNorm(shape: [2, 4, 3], groups: 1, silu: silu, seed: 1202)
            checkGroupNorm(shape: [3, 5, 2, 2], groups: 5, silu: silu, seed: 1203)
        }
    }

    /// 16 (sample, group) items over the workers with channel planes of 99 floats (vector loops
    /// and tails), and channel planes of 575 floats (the Double flush every 512).
    func testGroupNormParallel() {
        checkGroupNorm(shape: [2, 16, 9, 11], groups: 8, silu: true, seed: 1210)
        checkGroupNorm(shape: [1, 4, 23, 25], groups: 4, silu: false, eps: 1e-6, seed: 1211)
    }

    func checkLayerNorm(shape: [Int], eps: Float = 1e-5, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let c = shape.last!, rows = Tensor.count(of: shape) / c
        let x = Sample(&rng, shape, -0.5, 1.5), w = Sample(&rng, [c], 0.5, 1.5), b = Sample(&rng, [c], -0.5, 0.5)
        let g = Sample(&rng, shape)
        let r = LayerNorm.backward(x.tensor, weight: w.tensor, bias: b.tensor, eps: eps, gradOutput: g.tensor, parameters: true)
        let label = "LayerNorm \(shape)"
        XCTAssertEqual(r.input.shape, shape, line: line)
        let (xs, ws, bs, gs) = (x.values, w.values, b.values, g.values)
        func rowLoss(_ xs: [Double], _ ws: [Double], _ bs: [Double], _ row: Int) -> Double {
            let out = layerNormRow(xs, ws, bs, c: c, eps: Double(eps), row: row)
            return out.indices.reduce(0.0) { $0 + gs[row * c + $1] * out[$1] }
        }
        let fdX = centralDifferences(xs) { i, xs in rowLoss(xs, ws, bs, i / c) }
        let fdW = centralDifferences(ws) { _, ws in (0..<rows).reduce(0.0) { $0 + rowLoss(xs, ws, bs, $1) } }
        let fdB = centralDifferences(bs) { _, bs in (0..<rows).reduce(0.0) { $0 + rowLoss(xs, ws, bs, $1) } }
        // As GroupNorm: a few ulp of rstd |w g| (1 + |x̂|) for dx. dweight and dbias sum `rows`
        // terms in float blocks of 64 rows (then Double): up to γ_64 ~ 4e-6 of Σ|terms|, which
        // with random signs is ~sqrt(rows) times the result's scale, hence 1e-5.
        assertGradient(r.input, fdX, scaledAtol: 1e-6, rtol: 1e-6, "\(label) dx", line: line)
        assertGradient(r.weight, fdW, scaledAtol: 1e-5, rtol: 1e-6, "\(label) dweight", line: line)
        assertGradient(r.bias, fdB, scaledAtol: 1e-5, rtol: 1e-6, "\(label) dbias", line: line)
        let only = LayerNorm.backward(x.tensor, weight: w.tensor, bias: b.tensor, eps: eps, gradOutput: g.tensor, parameters: false)
        XCTAssertNil(only.weight, line: line)
        XCTAssertNil(only.bias, line: line)
        assertExact(only.input, r.input.scalars, "\(label) dx alone", line: line)
    }

    func testLayerNorm() {
        checkLayerNorm(shape: [3, 7, 37], seed: 1300)
        checkLayerNorm(shape: [1, 5], seed: 1301)
        checkLayerNorm(shape: [4, 3, 16], seed: 1302)
        checkLayerNorm(shape: [2, 9], eps: 1e-6, seed: 1303)
    }

    /// 3700 rows of 9: two chunks of rows, each with many 64-row blocks for the parameter sums.
    func testLayerNormParallel() {
        checkLayerNorm(shape: [2, 1850, 9], seed: 1310)
    }

    // MARK: Activations

    /// Element-wise f: L = Σ g f(x), so dL/dx_i is the difference of the term g_i f(x_i) alone.
    func checkElementwise(
        _ shape: [Int], _ lo: Double, _ hi: Double, seed: UInt64, _ label: String,
        backward: (Tensor, Tensor) -> Tensor, f: (Double) -> Double,
        atolPerUnitG: Double, rtol: Double, line: UInt = #line
    ) {
        var rng = SplitMix64(seed: seed)
        let x = Sample(&rng, shape, lo, hi), g = Sample(&rng, shape)
        let dx = backward(x.tensor, g.tensor)
        XCTAssertEqual(dx.shape, shape, line: line)
        let gs = g.values
        let fd = centralDifferences(x.values) { i, xs in gs[i] * f(xs[i]) }
        assertGradient(dx, fd, atolPerElement: gs.map { atolPerUnitG * abs($0) }, scaledAtol: 1e-9, rtol: rtol,
                       "\(label) \(shape)", line: line)
    }

    static let activationShapes: [[Int]] = [[1], [5, 7], [3, 5, 7, 5], [3, 7, 41, 41]]  // the last: 35301 floats, 3 chunks

    func testSiLU() {
        // silu' = s (1 + x (1 - s)), s from the vector exp (2e-7 relative): a few 1e-7 of |g|,
        // absolute near silu's stationary point where 1 + x (1 - s) cancels.
        for (i, shape) in Self.activationShapes.enumerated() {
            checkElementwise(shape, -10, 10, seed: 1400 + UInt64(i), "SiLU", backward: { SiLU.backward($0, gradOutput: $1) },
                             f: siluD, atolPerUnitG: 1e-6, rtol: 1e-6)
        }
    }

    func testGELU() {
        // gelu' = Φ(x) + x φ(x): erf's 5e-7 absolute error halves in Φ; exp's relative error
        // times |x φ(x)| <= 0.25 adds 5e-8.
        for (i, shape) in Self.activationShapes.enumerated() {
            checkElementwise(shape, -6, 6, seed: 1410 + UInt64(i), "GELU", backward: { GELU.backward($0, gradOutput: $1) },
                             f: geluD, atolPerUnitG: 1e-6, rtol: 1e-6)
        }
    }

    func testReLU() {
        // Exact: g or 0. Values within 1e-3 of the kink are moved away so that x ± h keep the sign.
        for (i, shape) in Self.activationShapes.enumerated() {
            var rng = SplitMix64(seed: 1420 + UInt64(i))
            var xs = rng.floats(Tensor.count(of: shape), -1, 1).map { abs($0) < 1e-3 ? $0 + 0.01 : $0 }
            xs[0] = abs(xs[0]) + 0.01  // at least one positive input
            let x = Tensor(shape: shape, values: xs), g = rng.tensor(shape)
            let gs = doubles(g)
            let fd = centralDifferences(xs.map(Double.init)) { i, xs in gs[i] * max(xs[i], 0) }
            assertGradient(ReLU.backward(x, gradOutput: g), fd, scaledAtol: 1e-9, rtol: 1e-9, "ReLU \(shape)")
            let y = ReLU.forward(x)
            assertExact(y, xs.map { max($0, 0) }, "ReLU.forward \(shape)")
        }
        // At the kink the gradient is 0 (as PyTorch), and -0 passes nothing.
        let x = Tensor(shape: [3], values: [0, -0.0, 1e-30]), g = Tensor(shape: [3], values: [2, 3, 4])
        assertExact(ReLU.backward(x, gradOutput: g), [0, 0, 4], "ReLU at 0")
    }

    func testGEGLU() {
        for (i, shape) in [[1, 2 * 3], [3, 7, 2 * 13], [2, 9, 2 * 8], [3, 500, 2 * 13]].enumerated() {  // the last: 1500 rows, two chunks
            var rng = SplitMix64(seed: 1430 + UInt64(i))
            let x = Sample(&rng, shape, -4, 4)
            let d2 = shape.last!, d = d2 / 2
            let g = Sample(&rng, Array(shape.dropLast()) + [d])
            let dx = GEGLU.backward(x.tensor, gradOutput: g.tensor)
            XCTAssertEqual(dx.shape, shape)
            let gs = g.values, xs = x.values
            // Element j of row r's hidden or gate half feeds output (r, j) only.
            let fd = centralDifferences(xs) { i, xs in
                let r = i / d2, j = i % d2 % d
                return gs[r * d + j] * xs[r * d2 + j] * geluD(xs[r * d2 + d + j])
            }
            // d hidden = g gelu(gate): gelu's error (3e-7 (1 + |gate|)) times |g|; d gate =
            // g h gelu'(gate): gelu''s 3e-7 times |g h|; plus the products' rounding.
            let bound = (0..<xs.count).map { i -> Double in
                let r = i / d2, j = i % d2 % d, gv = abs(gs[r * d + j])
                return i % d2 < d ? 2 * Accuracy.geluScaled * (1 + abs(xs[r * d2 + d + j])) * gv : 1e-6 * gv * abs(xs[r * d2 + j])
            }
            assertGradient(dx, fd, atolPerElement: bound, scaledAtol: 1e-9, rtol: 1e-6, "GEGLU \(shape)")
        }
    }

    func testSoftmax() {
        // The backward takes the float32 forward output y: dx = y (g - Σ g y). y's relative
        // error is ~1e-6 for these lengths (see SoftmaxTests), so |err| <~ 1e-6 y (|g| + |Σ g y|):
        // 2e-6 of the largest gradient (plus 1e-5 relative) leaves a margin.
        for (i, shape) in [[1, 1], [5, 1], [3, 7, 33], [13, 5], [2, 300], [4, 500, 9]].enumerated() {  // the last: 2000 rows, two chunks
            var rng = SplitMix64(seed: 1440 + UInt64(i))
            let x = Sample(&rng, shape, -4, 4), g = Sample(&rng, shape)
            let m = shape.last!
            let y = Softmax.forward(x.tensor)
            let dx = Softmax.backward(output: y, gradOutput: g.tensor)
            XCTAssertEqual(dx.shape, shape)
            let gs = g.values
            let fd = centralDifferences(x.values) { i, xs in
                let r = i / m, p = softmaxRow(xs, m: m, row: r)
                return p.indices.reduce(0.0) { $0 + gs[r * m + $1] * p[$1] }
            }
            if m == 1 {
                // Softmax of one value is constant: the gradient is exactly zero.
                XCTAssertTrue(dx.scalars.allSatisfy { $0 == 0 }, "Softmax \(shape): \(dx.scalars)")
                XCTAssertLessThan(maxAbs(fd), 1e-9)
                continue
            }
            assertGradient(dx, fd, scaledAtol: 2e-6, rtol: 1e-5, "Softmax \(shape)")
        }
    }

    // MARK: Attention

    func checkAttention(b: Int, n: Int, m: Int, heads: Int, d: Int, range: Double = 1, scoreLimit: Int? = nil,
                        mask: AttentionMask? = nil, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let c = heads * d
        let q = Sample(&rng, [b, n, c], -range, range), k = Sample(&rng, [b, m, c], -range, range)
        let v = Sample(&rng, [b, m, c]), g = Sample(&rng, [b, n, c])
        let out = Attention.forward(q: q.tensor, k: k.tensor, v: v.tensor, heads: heads, mask: mask)
        let r = scoreLimit.map {
            Attention.backward(q: q.tensor, k: k.tensor, v: v.tensor, heads: heads, mask: mask, output: out, gradOutput: g.tensor,
                               scoreLimit: $0)
        } ?? Attention.backward(q: q.tensor, k: k.tensor, v: v.tensor, heads: heads, mask: mask, output: out, gradOutput: g.tensor)
        let label = "Attention b \(b) n \(n) m \(m) heads \(heads) d \(d) range \(range) limit \(scoreLimit.map(String.init) ?? "default")"
            + (mask.map { " \($0)" } ?? "")
        XCTAssertEqual(r.q.shape, [b, n, c], line: line)
        XCTAssertEqual(r.k.shape, [b, m, c], line: line)
        XCTAssertEqual(r.v.shape, [b, m, c], line: line)
        let (qs, ks, vs, gs) = (q.values, k.values, v.values, g.values)
        func rowLoss(_ qs: [Double], _ ks: [Double], _ vs: [Double], _ s: Int, _ i: Int, _ h: Int) -> Double {
            let o = attentionRow(qs, ks, vs, n: n, m: m, c: c, heads: heads, sample: s, query: i, head: h) { j in
                mask?.attends(sample: s, query: i, key: j, keys: m) ?? true
            }
            return o.indices.reduce(0.0) { $0 + gs[(s * n + i) * c + h * d + $1] * o[$1] }
        }
        // q[s, i, head h] reaches output row (s, i, h); k and v rows reach every query of (s, h).
        let fdQ = centralDifferences(qs) { idx, qs in rowLoss(qs, ks, vs, idx / (n * c), idx / c % n, idx % c / d) }
        let fdK = centralDifferences(ks) { idx, ks in (0..<n).reduce(0.0) { $0 + rowLoss(qs, ks, vs, idx / (m * c), $1, idx % c / d) } }
        let fdV = centralDifferences(vs) { idx, vs in (0..<n).reduce(0.0) { $0 + rowLoss(qs, ks, vs, idx / (m * c), $1, idx % c / d) } }
        // Float32 recomputation of the scores (γ_d), softmax (~1e-6 relative, see
        // AttentionTests) and four more products of length d, M or the block's rows: each
        // gradient element is a sum of O(M) terms of the gradients' scale with ~1e-6 relative
        // error, and dS = P (dP - D) cancels when dP ≈ D. 1e-5 of the largest gradient
        // (plus 1e-5 relative) bounds that with a margin for the sizes here.
        if m > 1 {
            assertGradient(r.q, fdQ, scaledAtol: 1e-5, rtol: 1e-5, "\(label) dq", line: line)
            assertGradient(r.k, fdK, scaledAtol: 1e-5, rtol: 1e-5, "\(label) dk", line: line)
        } else {
            assertOneKeyGradientsVanish(r, q: qs, k: ks, v: vs, g: gs, b: b, n: n, heads: heads, d: d, fdQ: fdQ, fdK: fdK,
                                        dvScale: maxAbs(fdV), label, line: line)
        }
        assertGradient(r.v, fdV, scaledAtol: 1e-5, rtol: 1e-5, "\(label) dv", line: line)
        // A key no query attends to has probability 0 everywhere: its dk and dv are exact zeros
        // (sums of products with an exact 0), on any machine.
        if let mask {
            for s in 0..<b {
                for j in 0..<m where !(0..<n).contains(where: { mask.attends(sample: s, query: $0, key: j, keys: m) }) {
                    for e in 0..<c {
                        let at = (s * m + j) * c + e
                        XCTAssertTrue(r.k.data[at] == 0 && r.v.data[at] == 0, "\(label): masked key \(j) of sample \(s) has a gradient",
                                      line: line)
                    }
                }
            }
        }
    }

    /// One key: every softmax weight is 1, the output is v, and dq, dk vanish mathematically. In
    /// float32 they are the rounding of dS = P (dP - D) with P = 1 and O = v exactly (exp(0) = 1),
    /// dP = dO v^T an sgemm of length d (|err| <= γ_d Σ_e |dO_e v_e|, whatever the CPU's kernel
    /// and summation order) and D = Σ dO O in Double rounded to float (u |D|): per query,
    /// |dS_i| <= γ_{d+2} Σ_e |dO_ie v_e|. Then dq_ie = scale dS_i k_e and dk_e = scale Σ_i dS_i q_ie,
    /// bounded by the same products of magnitudes; the factor 2 covers their own (1 + γ) roundings.
    /// The bound must stay far below dv's scale (1e-5 of it, the other gradients' tolerance).
    func assertOneKeyGradientsVanish(
        _ r: (q: Tensor, k: Tensor, v: Tensor), q qs: [Double], k ks: [Double], v vs: [Double], g gs: [Double],
        b: Int, n: Int, heads: Int, d: Int, fdQ: [Double], fdK: [Double], dvScale: Double, _ label: String, line: UInt
    ) {
        let c = heads * d, scale = 1 / Double(d).squareRoot()
        var dsBound = [Double](repeating: 0, count: b * n * heads)
        for s in 0..<b {
            for i in 0..<n {
                for h in 0..<heads {
                    let mag = (0..<d).reduce(0.0) { $0 + abs(gs[(s * n + i) * c + h * d + $1] * vs[s * c + h * d + $1]) }
                    dsBound[(s * n + i) * heads + h] = gamma(d + 2) * mag
                }
            }
        }
        let qBound = (0..<(b * n * c)).map { idx in
            let s = idx / (n * c), i = idx / c % n, h = idx % c / d
            return 2 * scale * dsBound[(s * n + i) * heads + h] * abs(ks[s * c + idx % c])
        }
        let kBound = (0..<(b * c)).map { idx in
            let s = idx / c, h = idx % c / d
            return 2 * scale * (0..<n).reduce(0.0) { $0 + dsBound[(s * n + $1) * heads + h] * abs(qs[(s * n + $1) * c + idx % c]) }
        }
        XCTAssertLessThan(max(maxAbs(fdQ), maxAbs(fdK)), 1e-8, "\(label): finite differences of dq, dk do not vanish", line: line)
        XCTAssertLessThan(max(maxAbs(qBound), maxAbs(kBound)), 1e-5 * dvScale, "\(label): bound on dq, dk too loose", line: line)
        assertClose(r.q, Array(repeating: 0, count: qBound.count), atol: 0, rtol: 0, atolPerElement: qBound, "\(label) dq", line: line)
        assertClose(r.k, Array(repeating: 0, count: kBound.count), atol: 0, rtol: 0, atolPerElement: kBound, "\(label) dk", line: line)
    }

    func testAttention() {
        checkAttention(b: 1, n: 5, m: 7, heads: 1, d: 3, seed: 1500)
        checkAttention(b: 3, n: 7, m: 5, heads: 2, d: 4, seed: 1501)
        checkAttention(b: 2, n: 9, m: 9, heads: 2, d: 3, seed: 1502)
        checkAttention(b: 1, n: 1, m: 13, heads: 5, d: 2, seed: 1503)
        checkAttention(b: 2, n: 11, m: 1, heads: 2, d: 3, seed: 1504)
    }

    /// Larger logits (q, k in ±3): peaked rows, where dS = P (dP - D) is dominated by few keys.
    func testAttentionPeaked() {
        checkAttention(b: 2, n: 6, m: 10, heads: 2, d: 4, range: 3, seed: 1510)
    }

    /// Several query blocks per (sample, head): with a small score bound, blocks of 3 or 2
    /// queries (the last one partial). With 2 workers the (sample, head) pairs are split
    /// between workers mid-pair (21 items: pair 1 = items 7..13, split at 10; 15 items: pair 2 =
    /// items 6..8, split at 7), or a worker's items all lie inside one pair (10 blocks of one
    /// pair), which exercises the workers' private dK/dV accumulators.
    func testAttentionQueryBlocks() {
        XCTAssertEqual(Attention.backwardQueryBlock(n: 19, m: 6, batchHeads: 3, scoreLimit: 2 * 6 * 3), 3)
        checkAttention(b: 3, n: 19, m: 6, heads: 1, d: 4, scoreLimit: 2 * 6 * 3, seed: 1520)
        checkAttention(b: 1, n: 8, m: 5, heads: 5, d: 2, scoreLimit: 2 * 5 * 3, seed: 1521)
        checkAttention(b: 1, n: 20, m: 7, heads: 1, d: 3, scoreLimit: 2 * 7 * 2, seed: 1522)
        checkAttention(b: 2, n: 13, m: 11, heads: 3, d: 2, scoreLimit: 2 * 11 * 4, seed: 1523)
    }

    /// Masks (the tolerances as above: a mask only removes terms). Keys beyond a sample's length
    /// or flagged off get no gradient. Where a query sees one key (the causal mask's first query,
    /// a sample of length 1) its dq, and that key's dk, vanish up to rounding far below the
    /// tolerance (see assertOneKeyGradientsVanish). With small score bounds, query blocks start
    /// inside the causal triangle and pairs split between workers.
    func testAttentionMasked() {
        checkAttention(b: 2, n: 7, m: 7, heads: 2, d: 3, mask: .causal, seed: 1530)
        checkAttention(b: 1, n: 19, m: 19, heads: 1, d: 4, scoreLimit: 2 * 19 * 3, mask: .causal, seed: 1531)
        checkAttention(b: 3, n: 5, m: 9, heads: 2, d: 3, mask: .keyLengths([9, 1, 6]), seed: 1532)
        checkAttention(b: 2, n: 13, m: 11, heads: 3, d: 2, scoreLimit: 2 * 11 * 4, mask: .keyLengths([4, 11]), seed: 1533)
        checkAttention(b: 2, n: 9, m: 9, heads: 2, d: 3, mask: AttentionMask(causal: true, keys: .lengths([5, 9])), seed: 1534)
        let flags = [true, false, true, true, false, false, true, true, true, false, true, true,
                     true, true, false, true, true, true, false, false, true, false, true, true]
        checkAttention(b: 2, n: 6, m: 12, heads: 2, d: 3, mask: .keyFlags(flags), seed: 1535)
        checkAttention(b: 2, n: 12, m: 12, heads: 1, d: 4, scoreLimit: 2 * 12 * 3, mask: AttentionMask(causal: true, keys: .flags(flags)),
                       seed: 1536)
    }

    /// The default bound at SD2.1's largest self-attention (4096 tokens, 2 samples x 5 heads):
    /// both score buffers of a worker fit in maxScoreElements, in several query blocks.
    func testAttentionDefaultBlocking() {
        let m = 4096
        let block = Attention.backwardQueryBlock(n: 4096, m: m, batchHeads: 10, scoreLimit: Attention.maxScoreElements)
        XCTAssertLessThanOrEqual(2 * block * m, Attention.maxScoreElements)
        XCTAssertGreaterThan((4096 + block - 1) / block, 1)
    }

    // MARK: Resampling

    func testUpsample2x() {
        for (i, shape) in [[1, 3, 5, 7], [2, 2, 1, 1], [1, 1, 3, 9], [3, 6, 20, 21]].enumerated() {  // the last: 18 planes, two chunks
            var rng = SplitMix64(seed: 1600 + UInt64(i))
            let x = Sample(&rng, shape)
            let (h, w) = (shape[2], shape[3])
            let g = Sample(&rng, [shape[0], shape[1], 2 * h, 2 * w])
            let dx = Upsample2x.backward(g.tensor)
            XCTAssertEqual(dx.shape, shape)
            // Check the forward is what the loss below assumes.
            let y = Upsample2x.forward(x.tensor)
            XCTAssertEqual(y.scalars[2 * w + 1], x.tensor.scalars[0])
            let gs = g.values
            // x[p, iy, ix] is copied to (2iy + a, 2ix + b) of plane p.
            let fd = centralDifferences(x.values) { idx, xs in
                let p = idx / (h * w), iy = idx / w % h, ix = idx % w
                var l = 0.0
                for a in 0..<2 { for b in 0..<2 { l += gs[(p * 2 * h + 2 * iy + a) * 2 * w + 2 * ix + b] * xs[idx] } }
                return l
            }
            // Sums of 4 values: 3 roundings.
            let bound = (0..<x.values.count).map { idx -> Double in
                let p = idx / (h * w), iy = idx / w % h, ix = idx % w
                var s = 0.0
                for a in 0..<2 { for b in 0..<2 { s += abs(gs[(p * 2 * h + 2 * iy + a) * 2 * w + 2 * ix + b]) } }
                return 3 * u32 * s
            }
            assertGradient(dx, fd, atolPerElement: bound, scaledAtol: 1e-9, rtol: 0, "Upsample2x \(shape)")
        }
    }

    func testConcatChannels() {
        for (i, (n, c1, c2, h, w)) in [(1, 2, 5, 3, 7), (3, 1, 1, 1, 1), (2, 6, 3, 5, 1), (3, 3, 4, 70, 70)].enumerated() {  // the last: two chunks
            var rng = SplitMix64(seed: 1610 + UInt64(i))
            let a = Sample(&rng, [n, c1, h, w]), b = Sample(&rng, [n, c2, h, w])
            let g = Sample(&rng, [n, c1 + c2, h, w])
            let (da, db) = ConcatChannels.backward(g.tensor, leadingChannels: c1)
            XCTAssertEqual(da.shape, a.shape)
            XCTAssertEqual(db.shape, b.shape)
            let y = ConcatChannels.forward(a.tensor, b.tensor)
            XCTAssertEqual(y.shape, g.shape)
            let gs = g.values, plane = h * w
            // a[s, ch] lands in channel ch, b[s, ch] in channel c1 + ch of sample s.
            let fdA = centralDifferences(a.values) { idx, xs in
                let s = idx / (c1 * plane), rest = idx % (c1 * plane)
                return gs[s * (c1 + c2) * plane + rest] * xs[idx]
            }
            let fdB = centralDifferences(b.values) { idx, xs in
                let s = idx / (c2 * plane), rest = idx % (c2 * plane)
                return gs[s * (c1 + c2) * plane + c1 * plane + rest] * xs[idx]
            }
            // Copies: exact up to the finite differences' own error.
            assertGradient(da, fdA, scaledAtol: 1e-9, rtol: 1e-9, "ConcatChannels a \(a.shape)")
            assertGradient(db, fdB, scaledAtol: 1e-9, rtol: 1e-9, "ConcatChannels b \(b.shape)")
        }
    }

    // MARK: Element-wise

    func testBlendForward() {
        // (1 - m) a + m b in float32: 1 - m, two products and a sum round: 4 ulp of the terms.
        for (i, shape) in [[1, 7], [3, 5, 7], [3, 5, 70, 70]].enumerated() {
            var rng = SplitMix64(seed: 1700 + UInt64(i))
            let a = Sample(&rng, shape), b = Sample(&rng, shape)
            let m = [Float]([0.25, 0, 1].prefix(shape[0]))
            let y = Elementwise.blend(a.tensor, b.tensor, mix: m)
            let per = a.values.count / shape[0]
            let ref = a.values.indices.map { (1 - Double(m[$0 / per])) * a.values[$0] + Double(m[$0 / per]) * b.values[$0] }
            let bound = a.values.indices.map { 4 * u32 * ((1 - Double(m[$0 / per])) * abs(a.values[$0]) + Double(m[$0 / per]) * abs(b.values[$0])) }
            assertClose(y, ref, atol: 0, rtol: 0, atolPerElement: bound, "blend \(shape)")
        }
    }

    func testBlendBackward() {
        // The last: 73500 floats in two chunks, the boundary inside sample 1.
        for (i, shape) in [[1, 7], [3, 5, 7], [2, 3, 1, 1], [3, 5, 70, 70]].enumerated() {
            var rng = SplitMix64(seed: 1710 + UInt64(i))
            let a = Sample(&rng, shape), b = Sample(&rng, shape), g = Sample(&rng, shape)
            let m = [Float]([0.3, 0.875, 0].prefix(shape[0]))
            let r = Elementwise.blendBackward(a.tensor, b.tensor, mix: m, gradOutput: g.tensor)
            XCTAssertEqual(r.a.shape, shape)
            XCTAssertEqual(r.b.shape, shape)
            XCTAssertEqual(r.mix.count, shape[0])
            let per = a.values.count / shape[0], gs = g.values, ms = m.map(Double.init)
            let (avs, bvs) = (a.values, b.values)
            func term(_ j: Int, _ av: Double, _ bv: Double, _ mv: Double) -> Double { gs[j] * ((1 - mv) * av + mv * bv) }
            let fdA = centralDifferences(avs) { j, xs in term(j, xs[j], bvs[j], ms[j / per]) }
            let fdB = centralDifferences(bvs) { j, xs in term(j, avs[j], xs[j], ms[j / per]) }
            let fdM = centralDifferences(ms) { s, xs in (s * per..<(s + 1) * per).reduce(0.0) { $0 + term($1, avs[$1], bvs[$1], xs[s]) } }
            // da = (1 - m) g, db = m g: 2 roundings. dm = Σ (b - a) g: float differences and
            // products (2 roundings each), sums of 8-lane partials over 64 vectors then Double:
            // γ_66 Σ|(b - a) g|.
            assertGradient(r.a, fdA, scaledAtol: 1e-9, rtol: 2 * u32 + 1e-9, "blend da \(shape)")
            if m.contains(where: { $0 != 0 }) {
                assertGradient(r.b, fdB, scaledAtol: 1e-9, rtol: 2 * u32 + 1e-9, "blend db \(shape)")
            }
            let mag = (0..<shape[0]).map { s in (s * per..<(s + 1) * per).reduce(0.0) { $0 + abs((bvs[$1] - avs[$1]) * gs[$1]) } }
            assertGradient(Tensor(shape: [m.count], values: r.mix), fdM, atolPerElement: mag.map { gamma(66) * $0 }, scaledAtol: 1e-8,
                           rtol: 0, "blend dm \(shape)")
        }
    }

    /// sumTrailing is the gradient of addPerChannel's per-(sample, channel) term.
    func testSumTrailing() {
        // The last: planes of 10000 (Double flushes every 512), 6 planes in two chunks.
        for (i, shape) in [[4, 3], [3, 5, 7, 9], [1, 2, 13], [2, 3, 100, 100]].enumerated() {
            var rng = SplitMix64(seed: 1720 + UInt64(i))
            let x = Sample(&rng, shape), g = Sample(&rng, shape)
            let (n, c) = (shape[0], shape[1])
            let bias = Sample(&rng, [n, c])
            let s = x.values.count / (n * c)
            let y = Elementwise.addPerChannel(x.tensor, bias.tensor)
            XCTAssertEqual(y.scalars[s], x.tensor.scalars[s] + bias.tensor.scalars[1])
            let gs = g.values, xs = x.values
            let fd = centralDifferences(bias.values) { nc, bs in (nc * s..<(nc + 1) * s).reduce(0.0) { $0 + gs[$1] * (xs[$1] + bs[nc]) } }
            let db = Elementwise.sumTrailing(g.tensor)
            XCTAssertEqual(db.shape, [n, c])
            // Float 8-lane partials over 64 vectors, then Double: γ_64 Σ|g|.
            let mag = (0..<(n * c)).map { nc in (nc * s..<(nc + 1) * s).reduce(0.0) { $0 + abs(gs[$1]) } }
            assertGradient(db, fd, atolPerElement: mag.map { gamma(64) * $0 }, scaledAtol: 1e-8, rtol: 0, "sumTrailing \(shape)")
        }
    }

    /// multiply(g, b) is the gradient of Σ g (a ⊙ b) with respect to a.
    func testMultiply() {
        for (i, shape) in [[7], [3, 5, 7], [2, 3, 110, 110]].enumerated() {  // the last: 72600 floats, two chunks
            var rng = SplitMix64(seed: 1730 + UInt64(i))
            let a = Sample(&rng, shape), b = Sample(&rng, shape), g = Sample(&rng, shape)
            let gs = g.values, bs = b.values
            let fd = centralDifferences(a.values) { j, xs in gs[j] * xs[j] * bs[j] }
            // One rounding.
            assertGradient(Elementwise.multiply(g.tensor, b.tensor), fd, scaledAtol: 1e-9, rtol: u32 + 1e-9, "multiply \(shape)")
        }
    }

    /// addInPlace accumulates the gradients of a tensor used twice: L = Σ g1 x + Σ g2 silu(x).
    func testAddInPlace() {
        for (i, shape) in [[7], [3, 5, 7], [2, 3, 110, 110]].enumerated() {  // the last: 72600 floats, two chunks
            var rng = SplitMix64(seed: 1740 + UInt64(i))
            let x = Sample(&rng, shape, -4, 4), g1 = Sample(&rng, shape), g2 = Sample(&rng, shape)
            let acc = g1.tensor.copy()
            Elementwise.addInPlace(acc, SiLU.backward(x.tensor, gradOutput: g2.tensor))
            let (g1s, g2s) = (g1.values, g2.values)
            let fd = centralDifferences(x.values) { j, xs in g1s[j] * xs[j] + g2s[j] * siluD(xs[j]) }
            // SiLU's backward (1e-6 |g2| + 1e-6 |g2 silu'|, |silu'| < 1.1: see testSiLU) and one
            // rounding of the sum.
            assertGradient(acc, fd, atolPerElement: g2s.map { 2.2e-6 * abs($0) }, scaledAtol: 1e-9, rtol: u32 + 1e-9, "addInPlace \(shape)")
        }
        // Same count, another shape: the flat elements are added.
        var rng = SplitMix64(seed: 1749)
        let a = rng.tensor([2, 3, 5]), b = rng.tensor([6, 5])
        let expected = zip(a.scalars, b.scalars).map { $0 + $1 }
        Elementwise.addInPlace(a, b)
        assertExact(a, expected, "addInPlace reshaped")
    }

    // MARK: Uninitialised buffers

    /// Recycled buffers filled with NaN first (as in PoisonedPoolTests): an output element a
    /// backward kernel never writes, or reads before writing (a BLAS beta = 1 on garbage, a
    /// col2im that adds into an unzeroed plane), shows up as NaN. Sizes are above the pool's
    /// 16384-float threshold.
    func testBackwardKernelsWriteEveryOutputElement() {
        var rng = SplitMix64(seed: 1800)
        func poison(_ counts: [Int]) {
            var keep: [Tensor] = []
            for c in counts { for _ in 0..<3 { keep.append(Tensor(repeating: .nan, shape: [c])) } }
            keep.removeAll()
        }
        func finite(_ ts: [Tensor?], _ label: String, line: UInt = #line) {
            for (i, t) in ts.enumerated() {
                guard let t else { XCTFail("\(label) #\(i): missing", line: line); continue }
                if let j = t.scalars.firstIndex(where: { !$0.isFinite }) {
                    XCTFail("\(label) #\(i): element \(multiIndex(j, t.shape)) of \(t.shape) is \(t.scalars[j])", line: line)
                }
            }
        }
        do {
            let x = rng.tensor([3, 60, 100]), w = rng.tensor([200, 100]), g = rng.tensor([3, 60, 200])
            poison([x.count, w.count])
            let r = Linear.backward(x, weight: w, gradOutput: g, input: true, parameters: true, hasBias: true)
            finite([r.input, r.weight, r.bias], "Linear")
        }
        for (n, c, h, w, o, k, s, p) in [(2, 32, 17, 19, 64, 3, 1, 1), (1, 32, 33, 35, 16, 3, 1, 1), (2, 32, 33, 35, 17, 3, 1, 1),
                                         (2, 32, 17, 19, 64, 1, 1, 0), (1, 32, 33, 35, 64, 1, 1, 0), (3, 32, 17, 19, 64, 3, 2, 1)] {
            let x = rng.tensor([n, c, h, w]), wt = rng.tensor([o, c, k, k])
            let ho = Conv2d.outputSize(h, kernel: k, stride: s, padding: p), wo = Conv2d.outputSize(w, kernel: k, stride: s, padding: p)
            let g = rng.tensor([n, o, ho, wo])
            poison([x.count, wt.count, n * o * ho * wo, c * k * k * n * ho * wo])
            let r = Conv2d.backward(x, weight: wt, stride: s, padding: p, gradOutput: g, input: true, parameters: true, hasBias: true)
            finite([r.input, r.weight, r.bias], "Conv2d x\(x.shape) w\(wt.shape) s \(s)")
        }
        do {
            let q = rng.tensor([2, 300, 64]), k = rng.tensor([2, 290, 64]), v = rng.tensor([2, 290, 64]), g = rng.tensor([2, 300, 64])
            let out = Attention.forward(q: q, k: k, v: v, heads: 2)
            poison([q.count, k.count, 2 * 300 * 290])
            let r = Attention.backward(q: q, k: k, v: v, heads: 2, output: out, gradOutput: g, scoreLimit: 2 * 290 * 70)
            finite([r.q, r.k, r.v], "Attention")
            let mask = AttentionMask(causal: true, keys: .lengths([290, 100]))
            let masked = Attention.forward(q: q, k: k, v: v, heads: 2, mask: mask)
            poison([q.count, k.count, 2 * 300 * 290])
            let rm = Attention.backward(q: q, k: k, v: v, heads: 2, mask: mask, output: masked, gradOutput: g, scoreLimit: 2 * 290 * 70)
            finite([rm.q, rm.k, rm.v], "masked Attention")
        }
        let x = rng.tensor([2, 8, 33, 35]), g = rng.tensor([2, 8, 33, 35]), cw = rng.tensor([8]), cb = rng.tensor([8])
        poison([x.count])
        let gn = GroupNorm.backward(x, groups: 4, weight: cw, bias: cb, eps: 1e-5, silu: true, gradOutput: g, parameters: true)
        finite([gn.input, gn.weight, gn.bias], "GroupNorm")
        let rows = x.reshaped([2 * 8 * 33, 35]), grows = g.reshaped([2 * 8 * 33, 35])
        let lw = rng.tensor([35]), lb = rng.tensor([35])
        poison([x.count])
        let ln = LayerNorm.backward(rows, weight: lw, bias: lb, eps: 1e-5, gradOutput: grows, parameters: true)
        finite([ln.input, ln.weight, ln.bias], "LayerNorm")
        poison([x.count])
        finite([SiLU.backward(x, gradOutput: g), GELU.backward(x, gradOutput: g), ReLU.backward(x, gradOutput: g)], "activations")
        poison([x.count])
        finite([Softmax.backward(output: Softmax.forward(rows), gradOutput: grows)], "Softmax")
        let gg = rng.tensor([2, 8 * 33, 35])
        poison([x.count])
        finite([GEGLU.backward(rng.tensor([2, 8 * 33, 70]), gradOutput: gg)], "GEGLU")
        poison([x.count / 4, x.count])
        finite([Upsample2x.backward(rng.tensor([2, 8, 66, 70]))], "Upsample2x")
        poison([x.count])
        let (ca, cb2) = ConcatChannels.backward(rng.tensor([2, 16, 33, 35]), leadingChannels: 8)
        finite([ca, cb2], "ConcatChannels")
        poison([x.count])
        let bl = Elementwise.blendBackward(x, g, mix: [0.25, 0.5], gradOutput: g)
        finite([bl.a, bl.b, Tensor(shape: [2], values: bl.mix)], "blendBackward")
        poison([x.count])
        finite([Elementwise.blend(x, g, mix: [0.25, 0.5]), Elementwise.multiply(x, g), Elementwise.sumTrailing(g)], "element-wise")
    }
}
