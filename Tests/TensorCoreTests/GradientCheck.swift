import Foundation
import TensorCore
import XCTest

// Gradient checks by central finite differences.
//
// Each test draws float32 inputs and a float32 output gradient w (so the same numbers feed the
// float32 kernels and the Double references exactly), defines L(x) = Σ w · f(x) with a Double
// reference of the forward f, and compares the float32 backward's dL/dx with
//   (L(x + h e_i) - L(x - h e_i)) / (2 h),  h = 1e-6,
// computed in Double. Its own error is about h² |L'''| / 6 (below 1e-11 here) plus the rounding of
// L, ~1e-16 |L| / h = 1e-10 |L|: with |L| at most a few hundred in these tests that is below 1e-7
// of the gradients' scale, far under every tolerance used.
//
// A perturbation of x_i changes only some terms of L (the outputs that depend on x_i), so the
// loss closures sum only those terms: the difference of the two evaluations is the same, and the
// checks stay cheap enough to cover every element.

/// Finite-difference step.
let fdStep = 1e-6

/// Central differences of L at `indices` (all when nil). `loss(i, x)` must equal L(x) up to
/// terms that do not depend on x_i (it may sum only the terms x_i affects).
func centralDifferences(
    _ values: [Double], at indices: [Int]? = nil, h: Double = fdStep, _ loss: (_ index: Int, _ x: [Double]) -> Double
) -> [Double] {
    var x = values
    return (indices ?? Array(values.indices)).map { i in
        let v = x[i]
        // The steps actually taken (v ± h rounds).
        let up = v + h, down = v - h
        x[i] = up
        let lUp = loss(i, x)
        x[i] = down
        let lDown = loss(i, x)
        x[i] = v
        return (lUp - lDown) / (up - down)
    }
}

/// `n` distinct indices below `count` (all of them when count <= n): the first, the last and
/// random ones, sorted.
func sampleIndices(_ count: Int, _ n: Int, _ rng: inout SplitMix64) -> [Int] {
    guard count > n else { return Array(0..<count) }
    var set: Set<Int> = [0, count - 1]
    while set.count < n { set.insert(Int(rng.next() % UInt64(count))) }
    return set.sorted()
}

/// Largest |value|.
func maxAbs(_ xs: [Double]) -> Double { xs.reduce(0) { max($0, abs($1)) } }

/// Compares a float32 gradient with its reference at `indices` (all when nil; `expected` then has
/// one entry per index): |got - expected| <= atol_i + scaledAtol * max|expected| + rtol |expected|,
/// where atol_i = `atol` + `atolPerElement[k]`. On failure reports the worst element (index,
/// got, expected). Guards against vacuous passes: the gradient must exist, the reference must not
/// vanish, and the tolerance must stay below 1% of the reference's largest magnitude.
@discardableResult
func assertGradient(
    _ got: Tensor?, _ expected: [Double], at indices: [Int]? = nil, atol: Double = 0, atolPerElement: [Double]? = nil,
    scaledAtol: Double = 0, rtol: Double, _ label: String, file: StaticString = #filePath, line: UInt = #line
) -> Comparison {
    var c = Comparison()
    guard let got else {
        XCTFail("\(label): no gradient", file: file, line: line)
        return c
    }
    let idx = indices ?? Array(0..<got.count)
    guard idx.count == expected.count, idx.allSatisfy({ $0 < got.count }) else {
        XCTFail("\(label): \(got.count) elements (shape \(got.shape)), \(expected.count) references for \(idx.count) indices",
                file: file, line: line)
        return c
    }
    if let atolPerElement { precondition(atolPerElement.count == expected.count) }
    let scale = maxAbs(expected)
    let base = atol + scaledAtol * scale
    let p = got.data
    var maxGot = 0.0, maxTol = 0.0
    for (k, i) in idx.enumerated() {
        let g = Double(p[i]), e = expected[k]
        let err = abs(g - e)
        let tol = base + (atolPerElement?[k] ?? 0) + rtol * abs(e)
        maxTol = max(maxTol, tol)
        maxGot = max(maxGot, abs(g))
        let ratio = err.isNaN ? .infinity : (tol > 0 ? err / tol : (err == 0 ? 0 : .infinity))
        c.maxAbsError = err.isNaN ? .infinity : max(c.maxAbsError, err)
        if ratio > c.worstRatio || c.worstIndex < 0 {
            c.worstRatio = ratio
            c.worstIndex = k
        }
    }
    XCTAssertGreaterThan(scale, 1e-6, "\(label): the reference gradient vanishes; the check would be vacuous", file: file, line: line)
    XCTAssertGreaterThan(maxGot, 0, "\(label): the gradient is all zeros", file: file, line: line)
    XCTAssertLessThan(maxTol, 0.01 * scale, "\(label): tolerance too loose for the gradient's scale", file: file, line: line)
    guard c.worstIndex >= 0 else { return c }
    let k = c.worstIndex, i = idx[k]
    let tol = base + (atolPerElement?[k] ?? 0) + rtol * abs(expected[k])
    if verbose {
        print("[gradient] \(label): max |err| \(c.maxAbsError) (max |grad| \(scale), relative to it \(c.maxAbsError / max(scale, 1e-300))), "
              + "worst err/tol \(c.worstRatio) at \(multiIndex(i, got.shape)): \(p[i]) vs \(expected[k])")
    }
    if c.worstRatio > 1 {
        XCTFail("\(label): worst element \(multiIndex(i, got.shape)) (flat \(i)) of \(got.shape) = \(p[i]), expected \(expected[k]), "
                + "|err| \(abs(Double(p[i]) - expected[k])) > tol \(tol); max |err| \(c.maxAbsError), max |expected| \(scale)",
                file: file, line: line)
    }
    return c
}

/// A Double array and the float32 tensor holding the same values.
struct Sample {
    let tensor: Tensor
    let values: [Double]

    init(_ rng: inout SplitMix64, _ shape: [Int], _ lo: Double = -1, _ hi: Double = 1) {
        tensor = rng.tensor(shape, lo, hi)
        values = doubles(tensor)
    }

    init(_ tensor: Tensor) {
        self.tensor = tensor
        values = doubles(tensor)
    }

    var shape: [Int] { tensor.shape }
}

// MARK: - Double references of the forwards, on Double inputs (perturbed by less than a float ulp)

/// One output of a convolution (cross-correlation, zero padding): y[s, oc, oy, ox] for
/// x: [N, C, H, W], w: [O, C, k, k].
func convOutput(
    _ x: [Double], _ w: [Double], _ b: [Double]?, c: Int, h: Int, wd: Int, k: Int, stride: Int, padding: Int,
    sample s: Int, oc: Int, oy: Int, ox: Int
) -> Double {
    var acc = b?[oc] ?? 0
    for ci in 0..<c {
        let xb = ((s * c + ci) * h) * wd, wb = (oc * c + ci) * k * k
        for ky in 0..<k {
            let iy = oy * stride + ky - padding
            guard iy >= 0, iy < h else { continue }
            for kx in 0..<k {
                let ix = ox * stride + kx - padding
                guard ix >= 0, ix < wd else { continue }
                acc += x[xb + iy * wd + ix] * w[wb + ky * k + kx]
            }
        }
    }
    return acc
}

/// Double GroupNorm (optionally followed by SiLU) of one (sample, group): the group's
/// cg*spatial outputs in order, for x: [N, C, spatial].
func groupNormGroup(
    _ x: [Double], _ w: [Double], _ b: [Double], c: Int, spatial: Int, groups: Int, eps: Double, silu: Bool, sample s: Int, group g: Int
) -> [Double] {
    let cg = c / groups, base = (s * c + g * cg) * spatial, len = cg * spatial
    var mean = 0.0
    for i in 0..<len { mean += x[base + i] }
    mean /= Double(len)
    var v = 0.0
    for i in 0..<len { v += (x[base + i] - mean) * (x[base + i] - mean) }
    let inv = 1 / (v / Double(len) + eps).squareRoot()
    return (0..<len).map { i in
        let ch = g * cg + i / spatial
        let y = (x[base + i] - mean) * inv * w[ch] + b[ch]
        return silu ? siluD(y) : y
    }
}

/// Double LayerNorm of row r of x: [rows, C].
func layerNormRow(_ x: [Double], _ w: [Double], _ b: [Double], c: Int, eps: Double, row r: Int) -> [Double] {
    let base = r * c
    var mean = 0.0
    for j in 0..<c { mean += x[base + j] }
    mean /= Double(c)
    var v = 0.0
    for j in 0..<c { v += (x[base + j] - mean) * (x[base + j] - mean) }
    let inv = 1 / (v / Double(c) + eps).squareRoot()
    return (0..<c).map { j in (x[base + j] - mean) * inv * w[j] + b[j] }
}

/// Double softmax of row r of x: [rows, M].
func softmaxRow(_ x: [Double], m: Int, row r: Int) -> [Double] {
    let row = x[(r * m)..<(r * m + m)]
    let mx = row.max()!
    let e = row.map { exp($0 - mx) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
}

/// Double attention output of query i, head h of sample s: d values, for q: [B, N, C],
/// k, v: [B, M, C], C = heads * d. Keys j with `visible(j)` false get probability 0.
func attentionRow(
    _ q: [Double], _ k: [Double], _ v: [Double], n: Int, m: Int, c: Int, heads: Int, sample s: Int, query i: Int, head h: Int,
    visible: (Int) -> Bool = { _ in true }
) -> [Double] {
    let d = c / heads
    let scale = 1 / Double(d).squareRoot()
    let qo = (s * n + i) * c + h * d
    let keys = (0..<m).filter(visible)
    var scores = [Double](repeating: 0, count: m)
    for j in keys {
        let ko = (s * m + j) * c + h * d
        var dot = 0.0
        for e in 0..<d { dot += q[qo + e] * k[ko + e] }
        scores[j] = dot * scale
    }
    let mx = keys.map { scores[$0] }.max()!
    var total = 0.0
    for j in keys { scores[j] = exp(scores[j] - mx); total += scores[j] }
    var out = [Double](repeating: 0, count: d)
    for j in keys {
        let p = scores[j] / total, vo = (s * m + j) * c + h * d
        for e in 0..<d { out[e] += p * v[vo + e] }
    }
    return out
}

// MARK: - Analytic Double gradients (for the large cases, where finite differences of every
// element would be slow; they are checked against finite differences on a sample there and in
// full in the small cases)

/// Gradients of L = Σ g · (x W^T + b) and the per-element magnitudes Σ|terms| of each sum.
func linearGradients(_ x: [Double], _ w: [Double], _ g: [Double], rows: Int, inF: Int, outF: Int)
    -> (dx: [Double], dxMag: [Double], dw: [Double], dwMag: [Double], db: [Double], dbMag: [Double]) {
    var dx = [Double](repeating: 0, count: rows * inF), dxMag = dx
    var dw = [Double](repeating: 0, count: outF * inF), dwMag = dw
    var db = [Double](repeating: 0, count: outF), dbMag = db
    for r in 0..<rows {
        for o in 0..<outF {
            let gv = g[r * outF + o]
            db[o] += gv
            dbMag[o] += abs(gv)
            for i in 0..<inF {
                dx[r * inF + i] += gv * w[o * inF + i]
                dxMag[r * inF + i] += abs(gv * w[o * inF + i])
                dw[o * inF + i] += gv * x[r * inF + i]
                dwMag[o * inF + i] += abs(gv * x[r * inF + i])
            }
        }
    }
    return (dx, dxMag, dw, dwMag, db, dbMag)
}

/// Gradients of L = Σ g · conv(x, w, b) and the per-element magnitudes Σ|terms|.
func convGradients(
    _ x: [Double], _ w: [Double], _ g: [Double], n: Int, c: Int, h: Int, wd: Int, o: Int, k: Int, stride: Int, padding: Int
) -> (dx: [Double], dxMag: [Double], dw: [Double], dwMag: [Double], db: [Double], dbMag: [Double]) {
    let ho = (h + 2 * padding - k) / stride + 1, wo = (wd + 2 * padding - k) / stride + 1
    var dx = [Double](repeating: 0, count: x.count), dxMag = dx
    var dw = [Double](repeating: 0, count: w.count), dwMag = dw
    var db = [Double](repeating: 0, count: o), dbMag = db
    for s in 0..<n {
        for oc in 0..<o {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let gv = g[((s * o + oc) * ho + oy) * wo + ox]
                    db[oc] += gv
                    dbMag[oc] += abs(gv)
                    for ci in 0..<c {
                        for ky in 0..<k {
                            let iy = oy * stride + ky - padding
                            guard iy >= 0, iy < h else { continue }
                            for kx in 0..<k {
                                let ix = ox * stride + kx - padding
                                guard ix >= 0, ix < wd else { continue }
                                let xi = ((s * c + ci) * h + iy) * wd + ix, wi = ((oc * c + ci) * k + ky) * k + kx
                                dx[xi] += gv * w[wi]
                                dxMag[xi] += abs(gv * w[wi])
                                dw[wi] += gv * x[xi]
                                dwMag[wi] += abs(gv * x[xi])
                            }
                        }
                    }
                }
            }
        }
    }
    return (dx, dxMag, dw, dwMag, db, dbMag)
}
