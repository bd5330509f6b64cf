/// y = x W^T + b.
public enum Linear {
    /// x: [..., in], weight: [out, in], bias: [out] -> [..., out].
    public static func forward(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        Profiler.shared.measure("linear", flops: 2.0 * Double(x.count) * Double(weight.shape[0])) {
            let inF = weight.shape[1], outF = weight.shape[0]
            precondition(x.shape.last == inF, "Linear: input \(x.shape) vs weight \(weight.shape)")
            let rows = x.count / inF
            let y = Tensor(uninitialized: Array(x.shape.dropLast()) + [outF])
            if let bias {
                let b = bias.data, yp = y.data
                Parallel.forRanges(rows, minChunk: 64) { r in
                    for i in r { (yp + i * outF).update(from: b, count: outF) }
                }
            }
            BLAS.sgemm(transB: true, m: rows, n: outF, k: inF, a: x.data, lda: inF, b: weight.data, ldb: inF,
                       beta: bias == nil ? 0 : 1, c: y.data, ldc: outF)
            return y
        }
    }

    /// x: [..., in], weight: [out, in], gradOutput: [..., out]. Returns dL/dx (when `input`), dL/dW and dL/db (when `parameters`; bias only when `hasBias`).
    ///
    /// dx = g W: [..., in]; dW = g^T x: [out, in]; db = Σ_rows g: [out] (Double accumulation).
    public static func backward(
        _ x: Tensor, weight: Tensor, gradOutput: Tensor, input: Bool, parameters: Bool, hasBias: Bool
    ) -> (input: Tensor?, weight: Tensor?, bias: Tensor?) {
        Profiler.shared.measure("linear.backward", flops: 2.0 * Double(x.count) * Double(weight.shape[0]) * ((input ? 1 : 0) + (parameters ? 1 : 0))) {
            let inF = weight.shape[1], outF = weight.shape[0]
            precondition(x.shape.last == inF && gradOutput.shape == Array(x.shape.dropLast()) + [outF],
                         "Linear.backward: input \(x.shape), weight \(weight.shape), gradient \(gradOutput.shape)")
            let rows = x.count / inF
            let g = gradOutput.data
            var dx: Tensor?, dw: Tensor?, db: Tensor?
            if input {
                let t = Tensor(uninitialized: x.shape)
                // dx[rows, in] = g[rows, out] W[out, in]
                BLAS.sgemm(m: rows, n: inF, k: outF, a: g, lda: outF, b: weight.data, ldb: inF, c: t.data, ldc: inF)
                dx = t
            }
            if parameters {
                let t = Tensor(uninitialized: [outF, inF])
                if rows == 0 {
                    t.data.initialize(repeating: 0, count: t.count)
                } else {
                    // dW[out, in] = g^T[out, rows] x[rows, in]
                    BLAS.sgemm(transA: true, m: outF, n: inF, k: rows, a: g, lda: outF, b: x.data, ldb: inF, c: t.data, ldc: inF)
                }
                dw = t
                if hasBias { db = Elementwise.columnSums(g, rows: rows, cols: outF) }
            }
            return (dx, dw, db)
        }
    }
}
