/// 2-D convolution (cross-correlation), square kernels, NCHW.
public enum Conv2d {
    /// Output size along one axis.
    public static func outputSize(_ n: Int, kernel: Int, stride: Int, padding: Int) -> Int {
        (n + 2 * padding - kernel) / stride + 1
    }

    /// Output planes up to this many pixels are computed for the whole batch in one product.
    public static let foldPlaneLimit = 1024

    /// Most floats of the columns of folded samples (small planes) in one product: 2^18 = 1 MB,
    /// about a core's L2 cache. Folding a whole large batch made the columns tens of MB, and
    /// writing them cost more than the product itself (the example teacher's UNet, batch 16).
    public static let foldColumnBudget = 1 << 18

    /// Most floats of unfolded columns (im2col) that forward holds at a time: 2^23 = 32 MB.
    public static let columnBudget = 1 << 23

    /// x: [N, C, H, W], weight: [O, C, k, k], bias: [O] -> [N, O, Ho, Wo].
    /// `winograd` supplies the transformed weights for the Winograd path (see `Winograd3x3`).
    public static func forward(
        _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, winograd: (() -> Tensor)? = nil
    ) -> Tensor {
        forward(x, weight: weight, bias: bias, stride: stride, padding: padding, winograd: winograd, columnBudget: columnBudget)
    }

    /// `forward` with the column bounds as parameters (tests use small bounds to get many bands
    /// and several folded products with a short last one).
    static func forward(
        _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, winograd: (() -> Tensor)?, columnBudget: Int,
        foldColumnBudget: Int = foldColumnBudget
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
            if k == 3 && stride == 1 && padding == 1 && o <= fewOutputsLimit {
                return forwardFewOutputs(x, weight: weight, bias: bias)
            }
            let y = Tensor(uninitialized: [n, o, ho, wo])
            let plane = ho * wo
            let direct = k == 1 && stride == 1 && padding == 0
            let ck = c * k * k
            // Small planes: the columns of several samples go into one product ([ck, g*plane], as
            // many samples g as `foldColumnBudget` allows), which keeps the matrix product efficient
            // at the deepest levels; the result is then scattered.
            let fold = n > 1 && plane <= foldPlaneLimit
            let samplesPerProduct = fold ? max(1, min(n, foldColumnBudget / max(ck * plane, 1))) : 1
            // Large planes: the columns of one band of output rows at a time (at most
            // `columnBudget` floats), each band's product writing its rows of the output.
            let bandRows = fold || direct ? ho : max(1, min(ho, columnBudget / max(ck * wo, 1)))
            let colBuffer = direct && !fold ? nil : Tensor(uninitialized: [ck * samplesPerProduct * bandRows * wo])
            let outBuffer = fold ? Tensor(uninitialized: [o * samplesPerProduct * plane]) : nil
            for b in Swift.stride(from: 0, to: n, by: samplesPerProduct) {
                let g = min(samplesPerProduct, n - b)
                for oy0 in Swift.stride(from: 0, to: ho, by: bandRows) {
                    let rows = oy0..<min(ho, oy0 + bandRows)
                    let cols = g * rows.count * wo
                    // The band's output: [o, cols] with rows `ldc` apart.
                    let target = outBuffer?.data ?? y.data + b * o * plane + oy0 * wo
                    let ldc = fold ? cols : plane
                    if let bias {
                        let bp = bias.data
                        Parallel.forRanges(o, minChunk: max(1, (1 << 14) / cols)) { r in
                            for oc in r { (target + oc * ldc).initialize(repeating: bp[oc], count: cols) }
                        }
                    }
                    let src: UnsafePointer<Float>
                    if let col = colBuffer?.data {
                        Profiler.shared.measure("conv.im2col") {
                            if direct {
                                for s in 0..<g {
                                    let xb = x.data + (b + s) * c * h * w
                                    for ci in 0..<c { (col + ci * cols + s * plane).update(from: xb + ci * plane, count: plane) }
                                }
                            } else {
                                im2col(x.data + b * c * h * w, samples: g, c: c, h: h, w: w, k: k, stride: stride,
                                       padding: padding, ho: ho, wo: wo, rows: rows, into: col, rowStride: cols)
                            }
                        }
                        src = UnsafePointer(col)
                    } else {
                        src = UnsafePointer(x.data + b * c * h * w)
                    }
                    BLAS.sgemm(m: o, n: cols, k: ck, a: weight.data, lda: ck, b: src, ldb: cols,
                               beta: bias == nil ? 0 : 1, c: target, ldc: ldc)
                }
                if let out = outBuffer?.data {
                    // out: [o, g, plane] -> y[b ..< b+g]: [g, o, plane]
                    let cols = g * plane
                    for s in 0..<g {
                        for oc in 0..<o { (y.data + ((b + s) * o + oc) * plane).update(from: out + oc * cols + s * plane, count: plane) }
                    }
                }
            }
            return y
        }
    }

    /// x: [N, C, H, W], weight: [O, C, k, k], gradOutput: [N, O, Ho, Wo] (stride and zero padding
    /// as in forward). Returns dL/dx: [N, C, H, W] (when `input`), dL/dW: [O, C, k, k] and dL/db:
    /// [O] (when `parameters`; bias only when `hasBias`).
    ///
    /// By im2col: per image (or, for small planes, the whole batch folded into one product as in
    /// forward) the columns col: [C k k, Ho Wo] give dW += g col^T; then the same buffer receives
    /// W^T g, which col2im adds back into the overlapping input patches. The bias gradient sums g
    /// per channel in Double. Exception: the input gradient of a 3x3, stride 1, padding 1
    /// convolution is the same convolution of g with the weights flipped in space and transposed
    /// in channels, which takes the Winograd path where forward would (large planes).
    public static func backward(
        _ x: Tensor, weight: Tensor, stride: Int, padding: Int, gradOutput: Tensor,
        input: Bool, parameters: Bool, hasBias: Bool
    ) -> (input: Tensor?, weight: Tensor?, bias: Tensor?) {
        let passes = Double((input ? 1 : 0) + (parameters ? 1 : 0))
        return Profiler.shared.measure("conv\(weight.shape[2])x\(weight.shape[2])s\(stride).backward \(x.shape[1])->\(weight.shape[0]) @\(x.shape[2])",
                                       flops: passes * flops(x, weight, stride, padding)) {
            let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let o = weight.shape[0], k = weight.shape[2]
            let ho = outputSize(h, kernel: k, stride: stride, padding: padding)
            let wo = outputSize(w, kernel: k, stride: stride, padding: padding)
            precondition(weight.shape == [o, c, k, k] && gradOutput.shape == [n, o, ho, wo],
                         "Conv2d.backward: input \(x.shape), weight \(weight.shape), gradient \(gradOutput.shape)")
            let plane = ho * wo, ck = c * k * k
            // The input gradient by Winograd (a convolution of g: O -> C channels), or by columns below.
            let dataByWinograd = input && k == 3 && stride == 1 && padding == 1
                && Winograd3x3.applies(channels: o, outChannels: c, plane: plane)
            let dataByColumns = input && !dataByWinograd
            let dx: Tensor? = dataByWinograd ? Winograd3x3.forward(gradOutput, weight: flippedTransposed(weight), bias: nil)
                : input ? Tensor(uninitialized: x.shape) : nil
            let direct = k == 1 && stride == 1 && padding == 0
            let fold = n > 1 && plane <= foldPlaneLimit
            let samplesPerProduct = fold ? n : 1
            let cols = samplesPerProduct * plane
            let dw = parameters ? Tensor(uninitialized: weight.shape) : nil
            if dw == nil && !dataByColumns { return (dx, nil, nil) }
            // Columns of x (for dW), then W^T g (for dx); 1x1 unfolded products use x and dx directly.
            let colBuffer = direct && !fold ? nil : Tensor(uninitialized: [ck * cols])
            // Folded batches: g rearranged [N, O, plane] -> [O, N plane] as the forward product's output.
            let gFold = fold ? Tensor(uninitialized: [o * cols]) : nil
            let gp = gradOutput.data
            if let gf = gFold?.data {
                Parallel.forRanges(o, minChunk: max(1, (1 << 14) / cols)) { r in
                    for oc in r {
                        for b in 0..<n { (gf + oc * cols + b * plane).update(from: gp + (b * o + oc) * plane, count: plane) }
                    }
                }
            }
            for b in Swift.stride(from: 0, to: n, by: samplesPerProduct) {
                let gb = UnsafePointer(gFold?.data ?? gp + b * o * plane)
                if let dw {
                    let src: UnsafePointer<Float>
                    if let col = colBuffer?.data {
                        if direct {
                            for s in 0..<samplesPerProduct {
                                let xb = x.data + (b + s) * c * h * w
                                for ci in 0..<c { (col + ci * cols + s * plane).update(from: xb + ci * plane, count: plane) }
                            }
                        } else {
                            im2col(x.data + b * c * h * w, samples: samplesPerProduct, c: c, h: h, w: w, k: k, stride: stride,
                                   padding: padding, ho: ho, wo: wo, into: col, rowStride: cols)
                        }
                        src = UnsafePointer(col)
                    } else {
                        src = UnsafePointer(x.data + b * c * h * w)
                    }
                    // dW[O, ck] (+)= g[O, cols] col[ck, cols]^T
                    BLAS.sgemm(transB: true, m: o, n: ck, k: cols, a: gb, lda: cols, b: src, ldb: cols,
                               beta: b == 0 ? 0 : 1, c: dw.data, ldc: ck)
                }
                if dataByColumns, let dx {
                    let dxb = dx.data + b * c * h * w
                    // dcol[ck, cols] = W^T[ck, O] g[O, cols]
                    let target = colBuffer?.data ?? dxb
                    BLAS.sgemm(transA: true, m: ck, n: cols, k: o, a: weight.data, lda: ck, b: gb, ldb: cols,
                               c: target, ldc: cols)
                    if let col = colBuffer?.data {
                        col2im(col, samples: samplesPerProduct, c: c, h: h, w: w, k: k, stride: stride, padding: padding,
                               ho: ho, wo: wo, rowStride: cols, into: dxb)
                    }
                }
            }
            var db: Tensor?
            if parameters && hasBias {
                let t = Tensor(uninitialized: [o])
                let tp = t.data
                Parallel.forRanges(o, minChunk: max(1, (1 << 14) / max(n * plane, 1))) { r in
                    for oc in r {
                        var total = 0.0
                        for b in 0..<n { total += sumDouble(gp + (b * o + oc) * plane, plane) }
                        tp[oc] = Float(total)
                    }
                }
                db = t
            }
            return (dx, dw, db)
        }
    }

    /// weight: [O, C, k, k] -> [C, O, k, k] with each kernel rotated by 180 degrees: the weights of
    /// the convolution that maps a stride-1 convolution's output gradient to its input gradient.
    static func flippedTransposed(_ weight: Tensor) -> Tensor {
        let (o, c, k) = (weight.shape[0], weight.shape[1], weight.shape[2])
        let f = Tensor(uninitialized: [c, o, k, k])
        let src = weight.data, dst = f.data, kk = k * k
        Parallel.forRanges(c, minChunk: max(1, (1 << 14) / max(o * kk, 1))) { r in
            for ci in r {
                for oc in 0..<o {
                    let s = src + (oc * c + ci) * kk, d = dst + (ci * o + oc) * kk
                    for i in 0..<kk { d[i] = s[kk - 1 - i] }
                }
            }
        }
        return f
    }

    /// Adds columns back into images, the adjoint of `im2col`: for each of `samples` images,
    /// col rows [C*k*k] of `rowStride` floats, the image's Ho*Wo entries at offset s*Ho*Wo, are
    /// summed into dx: [samples, C, H, W] (overwritten). Parallel over (image, channel): each
    /// worker writes whole planes of its own.
    static func col2im(
        _ col: UnsafePointer<Float>, samples: Int, c: Int, h: Int, w: Int, k: Int, stride: Int, padding: Int,
        ho: Int, wo: Int, rowStride: Int, into dx: UnsafeMutablePointer<Float>
    ) {
        let plane = ho * wo
        Parallel.forRanges(samples * c, minChunk: max(1, (1 << 13) / max(k * k * plane, 1))) { r in
            for item in r {
                let s = item / c, ci = item % c
                let dst = dx + item * h * w
                dst.initialize(repeating: 0, count: h * w)
                for ky in 0..<k {
                    for kx in 0..<k {
                        let src = col + ((ci * k + ky) * k + kx) * rowStride + s * plane
                        for oy in 0..<ho {
                            let iy = oy * stride + ky - padding
                            guard iy >= 0 && iy < h else { continue }
                            let d = dst + iy * w, sr = src + oy * wo
                            if stride == 1 {
                                // ix = ox + off over the contiguous valid range of ox.
                                let off = kx - padding
                                let lo = min(wo, max(0, -off)), hi = max(lo, min(wo, w - off))
                                zipMap(UnsafePointer(d + lo + off), sr + lo, d + lo + off, hi - lo) { $0 + $1 }
                            } else {
                                // ix = ox * stride + off is in [0, w) for ox in lo..<hi.
                                let off = kx - padding
                                let lo = min(wo, off >= 0 ? 0 : (-off + stride - 1) / stride)
                                let hi = max(lo, min(wo, w - off <= 0 ? 0 : (w - off - 1) / stride + 1))
                                var ix = lo * stride + off
                                for ox in lo..<hi {
                                    d[ix] += sr[ox]
                                    ix += stride
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    static func flops(_ x: Tensor, _ weight: Tensor, _ stride: Int, _ padding: Int) -> Double {
        let k = weight.shape[2]
        let ho = outputSize(x.shape[2], kernel: k, stride: stride, padding: padding)
        let wo = outputSize(x.shape[3], kernel: k, stride: stride, padding: padding)
        return 2 * Double(x.shape[0]) * Double(weight.count) * Double(ho * wo)
    }

    /// Unfolds `samples` images x: [samples, C, H, W] into col: [C*k*k, samples*rows.count*Wo]
    /// (zero padding), the columns of output rows `rows` (all Ho by default), sample after sample
    /// within a row; rows are `rowStride` floats apart (samples*rows.count*Wo by default). One
    /// parallel loop over every (sample, row) with chunks of at least about 4096 floats.
    static func im2col(
        _ x: UnsafePointer<Float>, samples: Int = 1, c: Int, h: Int, w: Int, k: Int, stride: Int, padding: Int,
        ho: Int, wo: Int, rows outRows: Range<Int>? = nil, into col: UnsafeMutablePointer<Float>, rowStride: Int? = nil
    ) {
        let outRows = outRows ?? 0..<ho
        let span = outRows.count * wo
        let plane = rowStride ?? samples * span
        let rowCount = c * k * k
        Parallel.forRanges(rowCount * samples, minChunk: max(8, 4096 / max(span, 1))) { items in
            for item in items {
                let row = item % rowCount, sample = item / rowCount
                let ci = row / (k * k), ky = (row / k) % k, kx = row % k
                let dst = col + row * plane + sample * span
                let xc = x + (sample * c + ci) * h * w
                for oy in outRows {
                    let iy = oy * stride + ky - padding
                    let d = dst + (oy - outRows.lowerBound) * wo
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
