import Foundation
import TensorCore
import XCTest

/// Plain Double reference for multi-head attention, softmax(Q K^T / sqrt(d)) V per head, with
/// a per-output error bound (first order):
///   scores: |δs_j| <= scale γ_d Σ_e |q_e k_e| + u |s_j|   (sgemm, then alpha)
///   softmax: relative error of p_j <= 2 max|δs| + u |s_j - max| + Σ_k p_k u |s_k - max|
///            + 2 expRelative + γ_M + 2u   (see SoftmaxTests.reference)
///   output: Σ_j p_j v_j in float32 adds γ_M Σ p_j |v_j|
/// so |δo| <= Σ_j p_j |v_j| (c + u |s_j - max|) + γ_M Σ_j p_j |v_j|, c the row constant.
/// Keys that `visible(sample, query, key)` rejects have probability 0 (and no error).
func attentionReference(
    q: Tensor, k: Tensor, v: Tensor, heads: Int, visible: (Int, Int, Int) -> Bool = { _, _, _ in true }
) -> (ref: [Double], bound: [Double]) {
    let (b, n, c) = (q.shape[0], q.shape[1], q.shape[2])
    let m = k.shape[1], d = c / heads
    let scale = 1 / Double(d).squareRoot()
    let qs = doubles(q), ks = doubles(k), vs = doubles(v)
    var ref = [Double](repeating: 0, count: b * n * c), bound = ref
    var s = [Double](repeating: 0, count: m), p = s, shiftErr = s
    for bi in 0..<b {
        for h in 0..<heads {
            for i in 0..<n {
                let qo = (bi * n + i) * c + h * d
                var scoreErr = 0.0
                for j in 0..<m {
                    let ko = (bi * m + j) * c + h * d
                    var dot = 0.0, mag = 0.0
                    for e in 0..<d {
                        dot += qs[qo + e] * ks[ko + e]
                        mag += abs(qs[qo + e] * ks[ko + e])
                    }
                    s[j] = visible(bi, i, j) ? dot * scale : -.infinity
                    if visible(bi, i, j) { scoreErr = max(scoreErr, scale * gamma(d) * mag + u32 * abs(s[j])) }
                }
                let mx = s.max()!
                var total = 0.0
                for j in 0..<m { p[j] = visible(bi, i, j) ? exp(s[j] - mx) : 0; total += p[j] }
                var spread = 0.0
                for j in 0..<m {
                    p[j] /= total
                    shiftErr[j] = visible(bi, i, j) ? u32 * abs(s[j] - mx) : 0
                    spread += p[j] * shiftErr[j]
                }
                let rel = 2 * scoreErr + spread + 2 * Accuracy.expRelative + 2 * gamma(m) + 2 * u32
                for e in 0..<d {
                    var o = 0.0, err = 0.0
                    for j in 0..<m {
                        let vj = vs[(bi * m + j) * c + h * d + e]
                        o += p[j] * vj
                        err += p[j] * abs(vj) * (rel + shiftErr[j])
                    }
                    ref[qo + e] = o
                    bound[qo + e] = err
                }
            }
        }
    }
    return (ref, bound)
}

final class AttentionTests: XCTestCase {
    func check(b: Int, n: Int, m: Int, heads: Int, headDim: Int, range: Double = 1, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let c = heads * headDim
        let q = rng.tensor([b, n, c], -range, range)
        let k = rng.tensor([b, m, c], -range, range)
        let v = rng.tensor([b, m, c])
        let y = Attention.forward(q: q, k: k, v: v, heads: heads)
        XCTAssertEqual(y.shape, [b, n, c], line: line)
        let (ref, bound) = attentionReference(q: q, k: k, v: v, heads: heads)
        assertClose(y, ref, atol: 1e-7, rtol: 0, atolPerElement: bound,
                    "Attention b \(b) n \(n) m \(m) heads \(heads) d \(headDim)", line: line)
    }

    func testSelfAttention() {
        for (heads, d) in [(1, 3), (2, 8), (5, 3), (5, 8), (2, 3)] {
            for (b, n) in [(1, 1), (1, 7), (3, 33), (3, 7)] {
                check(b: b, n: n, m: n, heads: heads, headDim: d, seed: UInt64(300 + heads * 10 + d + n * 100 + b))
            }
        }
    }

    /// Self attention with q, k and v all the same tensor.
    func testSelfAttentionSharedInput() {
        var rng = SplitMix64(seed: 301)
        let x = rng.tensor([3, 7, 10])
        let y = Attention.forward(q: x, k: x, v: x, heads: 2)
        let (ref, bound) = attentionReference(q: x, k: x, v: x, heads: 2)
        assertClose(y, ref, atol: 1e-7, rtol: 0, atolPerElement: bound, "Attention q = k = v")
    }

    func testCrossAttention() {
        for (heads, d) in [(1, 3), (2, 8), (5, 3), (5, 8)] {
            for (b, n, m) in [(1, 7, 1), (1, 1, 7), (3, 33, 7), (3, 7, 33), (1, 33, 77)] {
                check(b: b, n: n, m: m, heads: heads, headDim: d, seed: UInt64(400 + heads * 10 + d + n * 100 + m * 1000 + b))
            }
        }
    }

    /// Larger logits (q, k in ±4, d = 8): peaked distributions, many weights below exp's range.
    func testPeakedScores() {
        check(b: 3, n: 33, m: 17, heads: 2, headDim: 8, range: 4, seed: 450)
        check(b: 1, n: 7, m: 33, heads: 5, headDim: 3, range: 6, seed: 451)
    }

    /// N * M > maxScoreElements (2^22): queries are processed in several blocks, the last one
    /// partial, which must give the same result as one pass.
    func testQueryBlocking() {
        XCTAssertEqual(Attention.maxScoreElements, 1 << 22)
        let n = 2100, m = 2050
        XCTAssertGreaterThan(n * m, Attention.maxScoreElements)
        XCTAssertGreaterThan(n % (Attention.maxScoreElements / m), 0, "last block is partial")
        check(b: 1, n: n, m: m, heads: 1, headDim: 2, range: 2, seed: 460)
    }

    /// Blocking with several heads and a batch: every head and sample reuses the score buffer.
    func testQueryBlockingHeadsAndBatch() {
        check(b: 2, n: 1031, m: 1025, heads: 2, headDim: 1, range: 2, seed: 461)
    }

    // MARK: Masks

    /// The mask's meaning, written out independently of the kernel: query i of sample s sees key
    /// j when j <= i (causal) and the sample offers key j.
    static func visible(_ mask: AttentionMask, keys m: Int) -> (Int, Int, Int) -> Bool {
        { s, i, j in
            if mask.causal && j > i { return false }
            switch mask.keys {
            case .all: return true
            case .lengths(let l): return j < l[s]
            case .flags(let f): return f[s * m + j]
            }
        }
    }

    /// Masked attention against the Double reference, and masked keys' probabilities exactly 0:
    /// giving the keys no query attends to other k and v values (large, so any nonzero weight
    /// would show) leaves every output bit for bit the same.
    func checkMasked(b: Int, n: Int, m: Int, heads: Int, headDim: Int, mask: AttentionMask, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let c = heads * headDim
        let q = rng.tensor([b, n, c], -2, 2), k = rng.tensor([b, m, c], -2, 2), v = rng.tensor([b, m, c])
        let y = Attention.forward(q: q, k: k, v: v, heads: heads, mask: mask)
        let visible = Self.visible(mask, keys: m)
        let label = "masked attention b \(b) n \(n) m \(m) heads \(heads) d \(headDim) \(mask)"
        let (ref, bound) = attentionReference(q: q, k: k, v: v, heads: heads, visible: visible)
        assertClose(y, ref, atol: 1e-7, rtol: 0, atolPerElement: bound, label, line: line)
        // Key j of sample s is unseen when no query sees it; changing it changes nothing. For a
        // causal mask, the last key is seen by the last query only: the other queries' outputs stay.
        let k2 = k.copy(), v2 = v.copy()
        var changed = 0
        for s in 0..<b {
            for j in 0..<m where mask.causal ? j == m - 1 : !(0..<n).contains(where: { visible(s, $0, j) }) {
                changed += 1
                for e in 0..<c {
                    k2.data[(s * m + j) * c + e] = 1e4
                    v2.data[(s * m + j) * c + e] = 1e4
                }
            }
        }
        XCTAssertGreaterThan(changed, 0, "\(label): no masked key to change", line: line)
        let y2 = Attention.forward(q: q, k: k2, v: v2, heads: heads, mask: mask)
        var kept = y.scalars
        if mask.causal {
            for s in 0..<b where n >= m {
                for i in (m - 1)..<n { for e in 0..<c { kept[(s * n + i) * c + e] = y2.data[(s * n + i) * c + e] } }
            }
        }
        assertExact(y2, kept, "\(label): masked keys changed", line: line)
    }

    func testCausalMask() {
        checkMasked(b: 2, n: 7, m: 7, heads: 2, headDim: 3, mask: .causal, seed: 470)
        // Rows of 33: masked entries in full vectors and in the tail.
        checkMasked(b: 1, n: 33, m: 33, heads: 3, headDim: 4, mask: .causal, seed: 471)
        // Several query blocks: queries 38... are offset within their block.
        checkMasked(b: 1, n: 150, m: 150, heads: 1, headDim: 2, mask: .causal, seed: 472)
    }

    func testKeyLengthMask() {
        checkMasked(b: 3, n: 4, m: 9, heads: 2, headDim: 3, mask: .keyLengths([9, 1, 5]), seed: 480)
        checkMasked(b: 2, n: 11, m: 20, heads: 1, headDim: 8, mask: .keyLengths([3, 17]), seed: 481)
        checkMasked(b: 2, n: 9, m: 9, heads: 2, headDim: 2, mask: AttentionMask(causal: true, keys: .lengths([4, 9])), seed: 482)
    }

    func testKeyFlagMask() {
        var rng = SplitMix64(seed: 490)
        let m = 13
        var flags = (0..<(3 * m)).map { _ in rng.unit() < 0.6 }
        for s in 0..<3 { flags[s * m] = true }
        flags[m + 5] = false
        checkMasked(b: 3, n: 6, m: m, heads: 2, headDim: 3, mask: .keyFlags(flags), seed: 491)
        checkMasked(b: 3, n: 13, m: m, heads: 1, headDim: 4, mask: AttentionMask(causal: true, keys: .flags(flags)), seed: 492)
    }
}
