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
}
