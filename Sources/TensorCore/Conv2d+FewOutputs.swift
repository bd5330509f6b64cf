extension Conv2d {
    /// Output channels up to this many take `forwardFewOutputs` (3x3, stride 1, padding 1).
    public static let fewOutputsLimit = 8

    /// Output rows per work item of `forwardFewOutputs`.
    static let fewOutputsBand = 8
    /// Input channels summed per pass of `forwardFewOutputs`.
    static let fewOutputsChannelBlock = 16

    /// x: [N, C, H, W], weight: [O, C, 3, 3] with O <= `fewOutputsLimit`, bias: [O] -> [N, O, H, W]
    /// (stride 1, padding 1), computed directly. im2col would write and read C*9 columns per
    /// pixel for a product whose other side has only O rows (the VAE's last convolutions: 128 -> 3
    /// channels at 512x512 or 768x768, 512 -> 8 at 64x64).
    ///
    /// Per band of output rows, the rows of a block of input channels are copied once into a zero
    /// border; each output vector then sums the block's channel x 3 x 3 products in registers (in
    /// the order channel, ky, kx, with fused multiply-adds) and adds that to the output, which
    /// starts at the bias. Blocks keep the sums short, as a matrix product's blocked sums do.
    static func forwardFewOutputs(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let o = weight.shape[0]
        precondition(weight.shape == [o, c, 3, 3] && o <= fewOutputsLimit, "Conv2d.forwardFewOutputs: weight \(weight.shape)")
        let y = Tensor(uninitialized: [n, o, h, w])
        let band = fewOutputsBand, bands = (h + band - 1) / band
        let block = min(c, fewOutputsChannelBlock)
        // Padded rows: w + 2 floats (zero at both ends), rounded up to whole vectors.
        let pw = (w + 2 + 7) / 8 * 8
        let planeStride = (band + 2) * pw
        let items = n * bands
        let chunks = Parallel.chunks(items)
        let scratch = Tensor(uninitialized: [chunks * block * planeStride])
        let xp = x.data, wp = weight.data, yp = y.data
        Parallel.forChunks(items) { chunk, range in
            let pad = scratch.data + chunk * block * planeStride
            pad.initialize(repeating: 0, count: block * planeStride)
            for item in range {
                let b = item / bands, oy0 = (item % bands) * band
                let rows = min(band, h - oy0)
                let yb = yp + b * o * h * w
                for oc in 0..<o {
                    let bv = bias?.data[oc] ?? 0
                    for r in 0..<rows { (yb + (oc * h + oy0 + r) * w).initialize(repeating: bv, count: w) }
                }
                for c0 in Swift.stride(from: 0, to: c, by: block) {
                    let cb = min(block, c - c0)
                    // Channel j's padded row pr holds input row oy0 - 1 + pr at offset 1.
                    for j in 0..<cb {
                        let xc = xp + (b * c + c0 + j) * h * w
                        for pr in 0..<(rows + 2) {
                            let iy = oy0 - 1 + pr
                            let d = pad + j * planeStride + pr * pw + 1
                            if iy >= 0 && iy < h { d.update(from: xc + iy * w, count: w) } else { d.initialize(repeating: 0, count: w) }
                        }
                    }
                    for oc in 0..<o {
                        let k = wp + (oc * c + c0) * 9
                        for r in 0..<rows {
                            let out = yb + (oc * h + oy0 + r) * w
                            let raw = UnsafeMutableRawPointer(out)
                            var ox = 0
                            while ox + 8 <= w {
                                var s = SIMD8<Float>()
                                for j in 0..<cb {
                                    let kj = k + 9 * j
                                    for ky in 0..<3 {
                                        let row = UnsafeRawPointer(pad + j * planeStride + (r + ky) * pw + ox)
                                        s.addProduct(SIMD8(repeating: kj[3 * ky]), row.loadUnaligned(as: SIMD8<Float>.self))
                                        s.addProduct(SIMD8(repeating: kj[3 * ky + 1]), row.loadUnaligned(fromByteOffset: 4, as: SIMD8<Float>.self))
                                        s.addProduct(SIMD8(repeating: kj[3 * ky + 2]), row.loadUnaligned(fromByteOffset: 8, as: SIMD8<Float>.self))
                                    }
                                }
                                raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: ox * 4, as: SIMD8<Float>.self) + s,
                                               toByteOffset: ox * 4, as: SIMD8<Float>.self)
                                ox += 8
                            }
                            while ox < w {
                                var s: Float = 0
                                for j in 0..<cb {
                                    let kj = k + 9 * j
                                    for ky in 0..<3 {
                                        let row = pad + j * planeStride + (r + ky) * pw + ox
                                        s.addProduct(kj[3 * ky], row[0])
                                        s.addProduct(kj[3 * ky + 1], row[1])
                                        s.addProduct(kj[3 * ky + 2], row[2])
                                    }
                                }
                                out[ox] += s
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
