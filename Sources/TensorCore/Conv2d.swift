/// 2-D convolution (cross-correlation), square kernels, NCHW.
public enum Conv2d {
    /// Output size along one axis.
    public static func outputSize(_ n: Int, kernel: Int, stride: Int, padding: Int) -> Int {
        (n + 2 * padding - kernel) / stride + 1
    }

    /// Output planes up to this many pixels are computed for the whole batch in one product.
    public static let foldPlaneLimit = 1024

    /// x: [N, C, H, W], weight: [O, C, k, k], bias: [O] -> [N, O, Ho, Wo].
    /// `winograd` supplies the transformed weights for the Winograd path (see `Winograd3x3`).
    public static func forward(
        _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, winograd: (() -> Tensor)? = nil
    ) -> Tensor {
        Profiler.shared.measure("conv\(weight.shape[2])x\(weight.shape[2])s\(stride) \(x.shape[1])->\(weight.shape[0]) @\(x.shape[2])", flops: flops(x, weight, stride, padding)) {
            let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let o = weight.shape[0], k = weight.shape[2]
            precondition(weight.shape[1] == c && weight.shape[3] == k, "Conv2d: input \(x.shape) vs weight \(weight.shape)")
            let ho = outputSize(h, kernel: k, stride: stride, padding: padding)
            let wo = outputSize(w, kernel: k, stride: stride, padding: padding)
            if k == 3 && stride == 1 && padding == 1 && Winograd3x3.applies(channels: c, outChannels: o, plane: ho * wo) {
                return Winograd3x3.forward(x, weight: weight, bias: bias, transformed: winograd?())
            }
            let y = Tensor(uninitialized: [n, o, ho, wo])
            let plane = ho * wo
            let direct = k == 1 && stride == 1 && padding == 0
            let ck = c * k * k
            // Small planes: the batch's columns go into one product ([ck, n*plane]), which keeps
            // the matrix product efficient at the deepest levels; the result is then scattered.
            let fold = n > 1 && plane <= foldPlaneLimit
            let samplesPerProduct = fold ? n : 1
            let cols = samplesPerProduct * plane
            let colBuffer = direct && !fold ? nil : Tensor(uninitialized: [ck * cols])
            let outBuffer = fold ? Tensor(uninitialized: [o * cols]) : nil
            for b in Swift.stride(from: 0, to: n, by: samplesPerProduct) {
                let target = outBuffer?.data ?? y.data + b * o * plane
                if let bias {
                    let bp = bias.data
                    Parallel.forRanges(o, minChunk: 16) { r in
                        for oc in r { (target + oc * cols).initialize(repeating: bp[oc], count: cols) }
                    }
                }
                let src: UnsafePointer<Float>
                if let col = colBuffer?.data {
                    Profiler.shared.measure("conv.im2col") {
                        for s in 0..<samplesPerProduct {
                            let xb = x.data + (b + s) * c * h * w
                            if direct {
                                for ci in 0..<c { (col + ci * cols + s * plane).update(from: xb + ci * plane, count: plane) }
                            } else {
                                im2col(xb, c: c, h: h, w: w, k: k, stride: stride, padding: padding, ho: ho, wo: wo,
                                       into: col + s * plane, rowStride: cols)
                            }
                        }
                    }
                    src = UnsafePointer(col)
                } else {
                    src = UnsafePointer(x.data + b * c * h * w)
                }
                BLAS.sgemm(m: o, n: cols, k: ck, a: weight.data, lda: ck, b: src, ldb: cols,
                           beta: bias == nil ? 0 : 1, c: target, ldc: cols)
            }
            if let out = outBuffer?.data {
                // out: [o, n, plane] -> y: [n, o, plane]
                for b in 0..<n {
                    for oc in 0..<o { (y.data + (b * o + oc) * plane).update(from: out + oc * cols + b * plane, count: plane) }
                }
            }
            return y
        }
    }

    static func flops(_ x: Tensor, _ weight: Tensor, _ stride: Int, _ padding: Int) -> Double {
        let k = weight.shape[2]
        let ho = outputSize(x.shape[2], kernel: k, stride: stride, padding: padding)
        let wo = outputSize(x.shape[3], kernel: k, stride: stride, padding: padding)
        return 2 * Double(x.shape[0]) * Double(weight.count) * Double(ho * wo)
    }

    /// Unfolds one image x: [C, H, W] into col: [C*k*k, Ho*Wo] (zero padding), whose rows are
    /// `rowStride` floats apart (Ho*Wo unless several images share the rows).
    static func im2col(
        _ x: UnsafePointer<Float>, c: Int, h: Int, w: Int, k: Int, stride: Int, padding: Int,
        ho: Int, wo: Int, into col: UnsafeMutablePointer<Float>, rowStride: Int? = nil
    ) {
        let plane = rowStride ?? ho * wo
        Parallel.forRanges(c * k * k, minChunk: 8) { rows in
            for row in rows {
                let ci = row / (k * k), ky = (row / k) % k, kx = row % k
                let dst = col + row * plane
                let xc = x + ci * h * w
                for oy in 0..<ho {
                    let iy = oy * stride + ky - padding
                    let d = dst + oy * wo
                    if iy < 0 || iy >= h {
                        d.initialize(repeating: 0, count: wo)
                        continue
                    }
                    let xr = xc + iy * w
                    if stride == 1 {
                        // ix = ox + kx - padding; the valid ox range is contiguous.
                        let off = kx - padding
                        let lo = min(wo, max(0, -off)), hi = max(lo, min(wo, w - off))
                        for ox in 0..<lo { d[ox] = 0 }
                        for ox in lo..<hi { d[ox] = xr[ox + off] }
                        for ox in hi..<wo { d[ox] = 0 }
                    } else {
                        for ox in 0..<wo {
                            let ix = ox * stride + kx - padding
                            d[ox] = ix >= 0 && ix < w ? xr[ix] : 0
                        }
                    }
                }
            }
        }
    }
}
