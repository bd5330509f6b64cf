import Foundation

/// Matrix products, reductions, losses and the small element-wise functions of the
/// hypernetwork and the objectives. Reductions total in Double.
extension Tape {
    /// a: [M, K] x b: [K, N] -> [M, N].
    public func matmul(_ a: Var, _ b: Var) -> Var {
        let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1])
        precondition(a.shape.count == 2 && b.shape == [k, n], "matmul \(a.shape) x \(b.shape)")
        let (av, bv) = (a.value, b.value)
        let y = Tensor(uninitialized: [m, n])
        BLAS.sgemm(m: m, n: n, k: k, a: av.data, lda: k, b: bv.data, ldb: n, c: y.data, ldc: n)
        return record(y, inputs: [a, b]) { g in
            var ga: Tensor?, gb: Tensor?
            if a.requiresGrad {
                let t = Tensor(uninitialized: [m, k])  // g [M, N] x b^T
                BLAS.sgemm(transB: true, m: m, n: k, k: n, a: g.data, lda: n, b: bv.data, ldb: n, c: t.data, ldc: k)
                ga = t
            }
            if b.requiresGrad {
                let t = Tensor(uninitialized: [k, n])  // a^T x g
                BLAS.sgemm(transA: true, m: k, n: n, k: m, a: av.data, lda: k, b: g.data, ldb: n, c: t.data, ldc: n)
                gb = t
            }
            return [ga, gb]
        }
    }

    /// 1 / (1 + exp(-x)).
    public func sigmoid(_ x: Var) -> Var {
        let y = Tensor(uninitialized: x.shape)
        for i in 0..<y.count { y.data[i] = Tape.sigmoid(x.value.data[i]) }
        return record(y, inputs: [x]) { g in
            let d = Tensor(uninitialized: y.shape)
            for i in 0..<d.count { d.data[i] = g.data[i] * y.data[i] * (1 - y.data[i]) }
            return [d]
        }
    }

    static func sigmoid(_ v: Float) -> Float { 1 / (1 + Foundation.exp(-v)) }

    /// Natural logarithm.
    public func log(_ x: Var) -> Var {
        let xv = x.value
        let y = Tensor(uninitialized: x.shape)
        for i in 0..<y.count { y.data[i] = Foundation.log(xv.data[i]) }
        return record(y, inputs: [x]) { g in
            let d = Tensor(uninitialized: xv.shape)
            for i in 0..<d.count { d.data[i] = g.data[i] / xv.data[i] }
            return [d]
        }
    }

    /// |x| (gradient sign(x), 0 at 0).
    public func abs(_ x: Var) -> Var {
        let xv = x.value
        let y = Tensor(uninitialized: x.shape)
        for i in 0..<y.count { y.data[i] = Swift.abs(xv.data[i]) }
        return record(y, inputs: [x]) { g in
            let d = Tensor(uninitialized: xv.shape)
            for i in 0..<d.count { d.data[i] = xv.data[i] > 0 ? g.data[i] : xv.data[i] < 0 ? -g.data[i] : 0 }
            return [d]
        }
    }

    /// Sum of all elements -> [1].
    public func sum(_ x: Var) -> Var {
        let s = x.shape
        var total = 0.0
        for i in 0..<x.value.count { total += Double(x.value.data[i]) }
        return record(Tensor(shape: [1], values: [Float(total)]), inputs: [x]) { g in
            [Tensor(repeating: g.data[0], shape: s)]
        }
    }

    /// Mean of all elements -> [1].
    public func mean(_ x: Var) -> Var { scale(sum(x), 1 / Float(x.value.count)) }

    /// x: [R, C] -> [C], the mean of the rows.
    public func meanRows(_ x: Var) -> Var {
        let (r, c) = (x.shape[0], x.shape[1])
        var acc = [Double](repeating: 0, count: c)
        for i in 0..<r { for j in 0..<c { acc[j] += Double(x.value.data[i * c + j]) } }
        let y = Tensor(shape: [c], values: acc.map { Float($0 / Double(r)) })
        return record(y, inputs: [x]) { g in
            let d = Tensor(uninitialized: [r, c])
            for i in 0..<r { for j in 0..<c { d.data[i * c + j] = g.data[j] / Float(r) } }
            return [d]
        }
    }

    /// mean((a - b)^2) over all elements -> [1]; b is usually a constant (a teacher's output).
    public func mseLoss(_ a: Var, _ b: Var) -> Var {
        precondition(a.value.count == b.value.count, "mseLoss \(a.shape) vs \(b.shape)")
        let (av, bv) = (a.value, b.value)
        let n = av.count
        let chunks = Parallel.chunks(n, minChunk: 1 << 15)
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { pp in
            let out = pp.baseAddress!
            Parallel.forChunks(n, minChunk: 1 << 15) { c, r in
                var s = 0.0
                for i in r { let d = Double(av.data[i] - bv.data[i]); s += d * d }
                out[c] = s
            }
        }
        let loss = partial.reduce(0, +) / Double(n)
        return record(Tensor(shape: [1], values: [Float(loss)]), inputs: [a, b]) { g in
            let k = 2 * g.data[0] / Float(n)
            let d = Tensor(uninitialized: av.shape)
            Parallel.forRanges(n, minChunk: 1 << 15) { r in
                for i in r { d.data[i] = k * (av.data[i] - bv.data[i]) }
            }
            return [a.requiresGrad ? d : nil, b.requiresGrad ? Elementwise.scale(d, -1).reshaped(bv.shape) : nil]
        }
    }

    /// The value of `hard` with the gradient of `soft` (straight-through estimator).
    public func straightThrough(_ soft: Var, hard: Tensor) -> Var {
        precondition(soft.value.count == hard.count, "straightThrough \(soft.shape) vs \(hard.shape)")
        return record(hard.reshaped(soft.shape), inputs: [soft]) { [$0] }
    }

    /// Rows `indices` of x: [R, C] -> [indices.count, C].
    public func selectRows(_ x: Var, _ indices: [Int]) -> Var {
        let (r, c) = (x.shape[0], x.shape[1])
        let y = Tensor(uninitialized: [indices.count, c])
        for (o, i) in indices.enumerated() {
            precondition(i >= 0 && i < r, "selectRows: row \(i) of \(r)")
            (y.data + o * c).update(from: x.value.data + i * c, count: c)
        }
        return record(y, inputs: [x]) { g in
            let d = Tensor(zeros: [r, c])
            for (o, i) in indices.enumerated() { for j in 0..<c { d.data[i * c + j] += g.data[o * c + j] } }
            return [d]
        }
    }

    /// Column j of x: [R, C] -> [R].
    public func column(_ x: Var, _ j: Int) -> Var {
        let (r, c) = (x.shape[0], x.shape[1])
        let y = Tensor(uninitialized: [r])
        for i in 0..<r { y.data[i] = x.value.data[i * c + j] }
        return record(y, inputs: [x]) { g in
            let d = Tensor(zeros: [r, c])
            for i in 0..<r { d.data[i * c + j] = g.data[i] }
            return [d]
        }
    }
}
