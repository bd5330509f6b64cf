extension Conv2d {
    /// Output channels up to this many take `forwardFewOutputs` (3x3, stride 1, padding 1).
    public static let fewOutputsLimit = 8

    /// Output rows per work item of `forwardFewOutputs`.
    static let fewOutputsBand = 8

    /// x: [N, C, H, W], weight: [O, C, 3, 3] with O <= `fewOutputsLimit`, bias: [O] -> [N, O, H, W]
    /// (stride 1, padding 1), computed directly: for a band of output rows, each input channel's
    /// rows (with a zero border) are read once and their 9 taps added into all O output rows,
    /// which stay in cache. im2col would write and read C*9 columns per pixel for a product whose
    /// other side has only O rows (the VAE decoder's last convolution: 128 -> 3 channels at
    /// 512x512 or 768x768). Each output sums its C*9 products in the order (channel, ky, kx).
    static func forwardFewOutputs(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let o = weight.shape[0]
        precondition(weight.shape == [o, c, 3, 3] && o <= fewOutputsLimit, "Conv2d.forwardFewOutputs: weight \(weight.shape)")
        let y = Tensor(uninitialized: [n, o, h, w])
        let band = fewOutputsBand, bands = (h + band - 1) / band
        // Padded rows: w + 2 floats (zero at both ends), rounded up to whole vectors plus one.
        let pw = (w + 2 + 7) / 8 * 8 + 8
        let items = n * bands
        let chunks = Parallel.chunks(items)
        let scratch = Tensor(uninitialized: [chunks * (band + 2) * pw])
        let xp = x.data, wp = weight.data, yp = y.data
        Parallel.forChunks(items) { chunk, range in
            let pad = scratch.data + chunk * (band + 2) * pw
            pad.initialize(repeating: 0, count: (band + 2) * pw)
            for item in range {
                let b = item / bands, oy0 = (item % bands) * band
                let rows = min(band, h - oy0)
                let yb = yp + b * o * h * w
                for oc in 0..<o {
                    let bv = bias?.data[oc] ?? 0
                    for r in 0..<rows { (yb + (oc * h + oy0 + r) * w).initialize(repeating: bv, count: w) }
                }
                for ci in 0..<c {
                    // Padded row pr holds input row oy0 - 1 + pr at offset 1.
                    let xc = xp + (b * c + ci) * h * w
                    for pr in 0..<(rows + 2) {
                        let iy = oy0 - 1 + pr
                        if iy >= 0 && iy < h {
                            (pad + pr * pw + 1).update(from: xc + iy * w, count: w)
                        } else {
                            (pad + pr * pw + 1).initialize(repeating: 0, count: w)
                        }
                    }
                    for oc in 0..<o {
                        let k = wp + (oc * c + ci) * 9
                        for r in 0..<rows {
                            let out = yb + (oc * h + oy0 + r) * w
                            let raw = UnsafeMutableRawPointer(out)
                            var ox = 0
                            while ox + 8 <= w {
                                var s = raw.loadUnaligned(fromByteOffset: ox * 4, as: SIMD8<Float>.self)
                                for ky in 0..<3 {
                                    let row = UnsafeRawPointer(pad + (r + ky) * pw + ox)
                                    s.addProduct(SIMD8(repeating: k[3 * ky]), row.loadUnaligned(as: SIMD8<Float>.self))
                                    s.addProduct(SIMD8(repeating: k[3 * ky + 1]), row.loadUnaligned(fromByteOffset: 4, as: SIMD8<Float>.self))
                                    s.addProduct(SIMD8(repeating: k[3 * ky + 2]), row.loadUnaligned(fromByteOffset: 8, as: SIMD8<Float>.self))
                                }
                                raw.storeBytes(of: s, toByteOffset: ox * 4, as: SIMD8<Float>.self)
                                ox += 8
                            }
                            while ox < w {
                                var s = out[ox]
                                for ky in 0..<3 {
                                    let row = pad + (r + ky) * pw + ox
                                    s.addProduct(k[3 * ky], row[0])
                                    s.addProduct(k[3 * ky + 1], row[1])
                                    s.addProduct(k[3 * ky + 2], row[2])
                                }
                                out[ox] = s
                                ox += 1
                            }
                        }
                    }
                }
            }
        }
        return y
    }
}
