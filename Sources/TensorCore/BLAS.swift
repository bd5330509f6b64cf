import COpenBLAS

/// Row-major single-precision matrix multiply through OpenBLAS:
/// `C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C`.
///
/// OpenBLAS runs single-threaded; large products are split into column (or row) panels computed
/// on `Parallel.workers` threads. This keeps OpenBLAS's idle threads from spinning against the
/// element-wise kernels that run on the same cores between matrix products.
public enum BLAS {
    /// Products smaller than this many multiply-accumulates run on one thread; so does any call
    /// with `singleThread` (for callers that parallelise over independent products themselves).
    public static let parallelThreshold = 1 << 21

    private static let singleThreaded: Void = { openblas_set_num_threads(1) }()

    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, singleThread: Bool = false
    ) {
        guard m > 0, n > 0 else { return }
        _ = singleThreaded
        let workers = Parallel.workers
        if singleThread || workers == 1 || m * n * k < parallelThreshold {
            call(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        if n >= m {
            // Column panels: C[:, j0..<j1] = op(A) op(B)[:, j0..<j1]; multiples of 16 columns.
            let panels = min(workers, max(1, n / 16))
            Parallel.forRanges(panels) { r in
                for p in r {
                    let j0 = (n * p / panels) & ~15, j1 = p == panels - 1 ? n : (n * (p + 1) / panels) & ~15
                    guard j1 > j0 else { continue }
                    let bp = transB ? b + j0 * ldb : b + j0
                    call(transA, transB, m, j1 - j0, k, alpha, a, lda, bp, ldb, beta, c + j0, ldc)
                }
            }
        } else {
            let panels = min(workers, max(1, m / 16))
            Parallel.forRanges(panels) { r in
                for p in r {
                    let i0 = (m * p / panels) & ~15, i1 = p == panels - 1 ? m : (m * (p + 1) / panels) & ~15
                    guard i1 > i0 else { continue }
                    let ap = transA ? a + i0 : a + i0 * lda
                    call(transA, transB, i1 - i0, n, k, alpha, ap, lda, b, ldb, beta, c + i0 * ldc, ldc)
                }
            }
        }
    }

    @inline(__always)
    private static func call(
        _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
        _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
        _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }
}
