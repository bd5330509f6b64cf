/// Multi-head scaled dot-product attention, softmax(Q K^T / sqrt(d)) V, computed in blocks of
/// queries so that at most `maxScoreElements` scores exist at a time.
public enum Attention {
    /// Upper bound on the score block of one worker (floats): 2^22 = 16 MB.
    public static let maxScoreElements = 1 << 22

    /// q: [B, N, H*d], k, v: [B, M, H*d] -> [B, N, H*d].
    ///
    /// Work items are (sample, head, query block); each worker computes its items with
    /// single-threaded matrix products into its own score buffer.
    public static func forward(q: Tensor, k: Tensor, v: Tensor, heads: Int) -> Tensor {
        Profiler.shared.measure("attention", flops: 4.0 * Double(q.count) * Double(k.shape[1])) {
            let (b, n, c) = (q.shape[0], q.shape[1], q.shape[2])
            let m = k.shape[1]
            precondition(k.shape == [b, m, c] && v.shape == [b, m, c] && c % heads == 0, "Attention: q \(q.shape) k \(k.shape) v \(v.shape)")
            let d = c / heads
            let scale = 1 / Float(d).squareRoot()
            let out = Tensor(uninitialized: [b, n, c])
            let workers = Parallel.workers
            // Query blocks: bounded by the score buffer, and enough items to keep every worker busy.
            var block = max(1, min(n, maxScoreElements / max(m, 1)))
            while block > 64 && b * heads * ((n + block - 1) / block) < 4 * workers { block = (block + 1) / 2 }
            let blocks = (n + block - 1) / block
            let items = b * heads * blocks
            let buffers = (0..<Parallel.chunks(items)).map { _ in Tensor(uninitialized: [block * m]) }
            let sums = (0..<Parallel.chunks(items)).map { _ in Tensor(uninitialized: [block]) }
            let qp = q.data, kp = k.data, vp = v.data, op = out.data
            Parallel.forChunks(items) { chunk, range in
                let scores = buffers[chunk].data, rowSums = sums[chunk].data
                for item in range {
                    let bi = item / (heads * blocks), h = (item / blocks) % heads, blk = item % blocks
                    let start = blk * block, rows = min(block, n - start)
                    let qb = qp + bi * n * c, kb = kp + bi * m * c, vb = vp + bi * m * c, ob = op + bi * n * c
                    // scores[rows, M] = scale * Q[start..., h] K[:, h]^T
                    BLAS.sgemm(transB: true, m: rows, n: m, k: d, alpha: scale,
                               a: qb + start * c + h * d, lda: c, b: kb + h * d, ldb: c,
                               c: scores, ldc: m, singleThread: true)
                    for r in 0..<rows { rowSums[r] = Softmax.unnormalizedRow(scores + r * m, m) }
                    // out[start..., h] = exp-scores V[:, h], then divided by each row's sum.
                    let o = ob + start * c + h * d
                    BLAS.sgemm(m: rows, n: d, k: m, a: scores, lda: m, b: vb + h * d, ldb: c,
                               c: o, ldc: c, singleThread: true)
                    for r in 0..<rows {
                        let inv = 1 / rowSums[r]
                        VectorMath.map(o + r * c, o + r * c, d) { $0 * inv }
                    }
                }
            }
            return out
        }
    }
}
