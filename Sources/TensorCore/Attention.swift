/// Multi-head scaled dot-product attention, softmax(Q K^T / sqrt(d)) V, computed in blocks of
/// queries so that at most `maxScoreElements` scores exist at a time.
public enum Attention {
    /// Upper bound on the score block (floats): 2^20 = 4 MB.
    public static let maxScoreElements = 1 << 20

    /// q: [B, N, H*d], k, v: [B, M, H*d] -> [B, N, H*d].
    public static func forward(q: Tensor, k: Tensor, v: Tensor, heads: Int) -> Tensor {
        let (b, n, c) = (q.shape[0], q.shape[1], q.shape[2])
        let m = k.shape[1]
        precondition(k.shape == [b, m, c] && v.shape == [b, m, c] && c % heads == 0, "Attention: q \(q.shape) k \(k.shape) v \(v.shape)")
        let d = c / heads
        let scale = 1 / Float(d).squareRoot()
        let out = Tensor(uninitialized: [b, n, c])
        let block = max(1, min(n, maxScoreElements / max(m, 1)))
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: block * m)
        defer { scores.deallocate() }
        for bi in 0..<b {
            let qb = q.data + bi * n * c, kb = k.data + bi * m * c, vb = v.data + bi * m * c
            let ob = out.data + bi * n * c
            for h in 0..<heads {
                var start = 0
                while start < n {
                    let rows = min(block, n - start)
                    // scores[rows, M] = scale * Q[start..., h] K[:, h]^T
                    BLAS.sgemm(transB: true, m: rows, n: m, k: d, alpha: scale,
                               a: qb + start * c + h * d, lda: c, b: kb + h * d, ldb: c,
                               c: scores, ldc: m)
                    Softmax.rowsInPlace(scores, rows: rows, length: m)
                    // out[start..., h] = scores V[:, h]
                    BLAS.sgemm(m: rows, n: d, k: m, a: scores, lda: m, b: vb + h * d, ldb: c,
                               c: ob + start * c + h * d, ldc: c)
                    start += rows
                }
            }
        }
        return out
    }
}
