/// Multi-head scaled dot-product attention, softmax(Q K^T / sqrt(d)) V, computed in blocks of
/// queries so that at most `maxScoreElements` scores exist at a time. With a mask, the scores of
/// masked keys are -infinity and their probabilities exactly 0.
public enum Attention {
    /// Upper bound on the score block of one worker (floats): 2^22 = 16 MB.
    public static let maxScoreElements = 1 << 22

    /// q: [B, N, H*d], k, v: [B, M, H*d] -> [B, N, H*d]; `mask`: the keys each query attends to.
    ///
    /// Work items are (sample, head, query block); each worker computes its items with
    /// single-threaded matrix products into its own score buffer.
    public static func forward(q: Tensor, k: Tensor, v: Tensor, heads: Int, mask: AttentionMask? = nil) -> Tensor {
        Profiler.shared.measure("attention", flops: 4.0 * Double(q.count) * Double(k.shape[1])) {
            let (b, n, c) = (q.shape[0], q.shape[1], q.shape[2])
            let m = k.shape[1]
            precondition(k.shape == [b, m, c] && v.shape == [b, m, c] && c % heads == 0, "Attention: q \(q.shape) k \(k.shape) v \(v.shape)")
            mask?.validate(batch: b, keys: m, "Attention")
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
                    if let mask {
                        for r in 0..<rows {
                            mask.fill(scores + r * m, keys: m, sample: bi, query: start + r)
                            rowSums[r] = Softmax.unnormalizedMaskedRow(scores + r * m, m)
                        }
                    } else {
                        for r in 0..<rows { rowSums[r] = Softmax.unnormalizedRow(scores + r * m, m) }
                    }
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

    /// q: [B, N, H*d], k, v: [B, M, H*d], output: forward's [B, N, H*d], gradOutput: [B, N, H*d],
    /// mask: forward's -> (dL/dq: [B, N, H*d], dL/dk, dL/dv: [B, M, H*d]).
    ///
    /// Flash-attention style: the scores are recomputed per (sample, head, query block), never
    /// stored whole. With P = softmax(scale Q K^T) for the block, D_i = Σ_e dO_ie O_ie and
    /// dP = dO V^T: dV += P^T dO, dS = P (dP - D), dQ = scale dS K, dK += scale dS^T Q.
    /// Each worker holds two [block, M] buffers (P and dP, together at most `maxScoreElements`
    /// floats). dK and dV of a (sample, head) whose query blocks all fall in one worker's items
    /// are accumulated in place; one split between workers accumulates in the workers' own
    /// buffers, added in at the end. Masked keys have P = 0, so dS = 0 there: they receive
    /// nothing from the queries that do not attend to them.
    public static func backward(
        q: Tensor, k: Tensor, v: Tensor, heads: Int, mask: AttentionMask? = nil, output: Tensor, gradOutput: Tensor
    ) -> (q: Tensor, k: Tensor, v: Tensor) {
        backward(q: q, k: k, v: v, heads: heads, mask: mask, output: output, gradOutput: gradOutput, scoreLimit: maxScoreElements)
    }

    /// Queries per block in `backward`: P and dP together within `scoreLimit` floats, and blocks
    /// small enough to give every worker several items.
    static func backwardQueryBlock(n: Int, m: Int, batchHeads: Int, scoreLimit: Int) -> Int {
        var block = max(1, min(n, scoreLimit / max(2 * m, 1)))
        while block > 64 && batchHeads * ((n + block - 1) / block) < 4 * Parallel.workers { block = (block + 1) / 2 }
        return block
    }

    /// `backward` with the score bound as a parameter (tests use small bounds to get many blocks).
    static func backward(
        q: Tensor, k: Tensor, v: Tensor, heads: Int, mask: AttentionMask? = nil, output: Tensor, gradOutput: Tensor, scoreLimit: Int
    ) -> (q: Tensor, k: Tensor, v: Tensor) {
        Profiler.shared.measure("attention.backward", flops: 10.0 * Double(q.count) * Double(k.shape[1])) {
            let (b, n, c) = (q.shape[0], q.shape[1], q.shape[2])
            let m = k.shape[1]
            precondition(k.shape == [b, m, c] && v.shape == [b, m, c] && c % heads == 0
                         && output.shape == q.shape && gradOutput.shape == q.shape,
                         "Attention.backward: q \(q.shape) k \(k.shape) v \(v.shape) output \(output.shape) gradient \(gradOutput.shape)")
            mask?.validate(batch: b, keys: m, "Attention.backward")
            let d = c / heads
            let scale = 1 / Float(d).squareRoot()
            let dq = Tensor(uninitialized: [b, n, c])
            let dk = Tensor(zeros: [b, m, c]), dv = Tensor(zeros: [b, m, c])
            let block = backwardQueryBlock(n: n, m: m, batchHeads: b * heads, scoreLimit: scoreLimit)
            let blocks = (n + block - 1) / block
            let items = b * heads * blocks
            let chunks = Parallel.chunks(items)
            let scoreBuffers = (0..<chunks).map { _ in Tensor(uninitialized: [2 * block * m]) }
            let rowBuffers = (0..<chunks).map { _ in Tensor(uninitialized: [block]) }
            // Two private (dK, dV) accumulators per worker, for the (sample, head) pairs at the
            // ends of its item range, which other workers may share; slotPair says which pair.
            let slots = (0..<chunks).map { _ in Tensor(uninitialized: [4 * m * d]) }
            let slotPair = UnsafeMutableBufferPointer<Int>.allocate(capacity: 2 * chunks)
            defer { slotPair.deallocate() }
            slotPair.initialize(repeating: -1)
            let qp = q.data, kp = k.data, vp = v.data, op = output.data, gp = gradOutput.data
            let dqp = dq.data, dkp = dk.data, dvp = dv.data, pairs = slotPair.baseAddress!
            Parallel.forChunks(items) { chunk, range in
                let probs = scoreBuffers[chunk].data, dProbs = probs + block * m
                let rowD = rowBuffers[chunk].data, slot = slots[chunk].data
                let firstPair = range.lowerBound / blocks
                for item in range {
                    let pair = item / blocks, bi = pair / heads, h = pair % heads, blk = item % blocks
                    let start = blk * block, rows = min(block, n - start)
                    // Where this pair's dK and dV accumulate: in place when every block of the pair
                    // is in this range, else in a private slot.
                    let dkTarget: UnsafeMutablePointer<Float>, dvTarget: UnsafeMutablePointer<Float>, ld: Int
                    if pair * blocks >= range.lowerBound && (pair + 1) * blocks <= range.upperBound {
                        dkTarget = dkp + bi * m * c + h * d
                        dvTarget = dvp + bi * m * c + h * d
                        ld = c
                    } else {
                        let s = pair == firstPair ? 0 : 1
                        dkTarget = slot + s * 2 * m * d
                        dvTarget = dkTarget + m * d
                        ld = d
                        if pairs[2 * chunk + s] != pair {
                            dkTarget.initialize(repeating: 0, count: 2 * m * d)
                            pairs[2 * chunk + s] = pair
                        }
                    }
                    let qb = qp + (bi * n + start) * c + h * d, ob = op + (bi * n + start) * c + h * d
                    let gb = gp + (bi * n + start) * c + h * d
                    let kb = kp + bi * m * c + h * d, vb = vp + bi * m * c + h * d
                    // P[rows, M] = softmax(scale Q K^T), masked
                    BLAS.sgemm(transB: true, m: rows, n: m, k: d, alpha: scale, a: qb, lda: c, b: kb, ldb: c,
                               c: probs, ldc: m, singleThread: true)
                    for r in 0..<rows {
                        if let mask {
                            mask.fill(probs + r * m, keys: m, sample: bi, query: start + r)
                            Softmax.maskedRow(probs + r * m, m)
                        } else {
                            Softmax.row(probs + r * m, m)
                        }
                        rowD[r] = Float(dotDouble(gb + r * c, ob + r * c, d))
                    }
                    // dP[rows, M] = dO V^T
                    BLAS.sgemm(transB: true, m: rows, n: m, k: d, a: gb, lda: c, b: vb, ldb: c,
                               c: dProbs, ldc: m, singleThread: true)
                    // dV[M, d] += P^T dO
                    BLAS.sgemm(transA: true, m: m, n: d, k: rows, a: probs, lda: m, b: gb, ldb: c,
                               beta: 1, c: dvTarget, ldc: ld, singleThread: true)
                    // dS = P (dP - D), in place of P
                    for r in 0..<rows {
                        let dr = F8(repeating: rowD[r])
                        zipMap(UnsafePointer(probs + r * m), dProbs + r * m, probs + r * m, m) { $0 * ($1 - dr) }
                    }
                    // dQ[rows, d] = scale dS K; dK[M, d] += scale dS^T Q
                    BLAS.sgemm(m: rows, n: d, k: m, alpha: scale, a: probs, lda: m, b: kb, ldb: c,
                               c: dqp + (bi * n + start) * c + h * d, ldc: c, singleThread: true)
                    BLAS.sgemm(transA: true, m: m, n: d, k: rows, alpha: scale, a: probs, lda: m, b: qb, ldb: c,
                               beta: 1, c: dkTarget, ldc: ld, singleThread: true)
                }
            }
            // Shared pairs: add the workers' slots.
            for chunk in 0..<chunks {
                for s in 0..<2 where pairs[2 * chunk + s] >= 0 {
                    let pair = pairs[2 * chunk + s], bi = pair / heads, h = pair % heads
                    let src = UnsafePointer(slots[chunk].data + s * 2 * m * d)
                    for (dst, part) in [(dkp, src), (dvp, src + m * d)] {
                        let base = dst + bi * m * c + h * d
                        for j in 0..<m { zipMap(UnsafePointer(base + j * c), part + j * d, base + j * c, d) { $0 + $1 } }
                    }
                }
            }
            return (dq, dk, dv)
        }
    }
}
