/// Nearest-neighbour 2x upsampling, NCHW.
public enum Upsample2x {
    /// x: [N, C, H, W] -> [N, C, 2H, 2W].
    public static func forward(_ x: Tensor) -> Tensor {
        Profiler.shared.measure("upsample") {
            let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let y = Tensor(uninitialized: [n, c, 2 * h, 2 * w])
            let xp = x.data, yp = y.data
            Parallel.forRanges(n * c, minChunk: 4) { r in
                for plane in r {
                    let src = xp + plane * h * w, dst = yp + plane * 4 * h * w
                    for iy in 0..<h {
                        let row = dst + 2 * iy * 2 * w
                        let s = src + iy * w
                        var ix = 0
                        // Eight pixels at a time: each into an even and an odd lane.
                        while ix + 8 <= w {
                            let v = UnsafeRawPointer(s + ix).loadUnaligned(as: SIMD8<Float>.self)
                            var pair = SIMD16<Float>()
                            pair.evenHalf = v
                            pair.oddHalf = v
                            UnsafeMutableRawPointer(row + 2 * ix).storeBytes(of: pair, as: SIMD16<Float>.self)
                            ix += 8
                        }
                        while ix < w {
                            row[2 * ix] = s[ix]
                            row[2 * ix + 1] = s[ix]
                            ix += 1
                        }
                        (row + 2 * w).update(from: row, count: 2 * w)
                    }
                }
            }
            return y
        }
    }

    /// gradOutput: [N, C, 2H, 2W] -> [N, C, H, W]: each input pixel receives the sum of its 2x2 copies.
    public static func backward(_ gradOutput: Tensor) -> Tensor {
        Profiler.shared.measure("upsample.backward") {
            let g = gradOutput
            let (n, c, h2, w2) = (g.shape[0], g.shape[1], g.shape[2], g.shape[3])
            precondition(g.rank == 4 && h2 % 2 == 0 && w2 % 2 == 0, "Upsample2x.backward: gradient \(g.shape)")
            let h = h2 / 2, w = w2 / 2
            let dx = Tensor(uninitialized: [n, c, h, w])
            let gp = g.data, dp = dx.data
            Parallel.forRanges(n * c, minChunk: max(1, (1 << 14) / max(h2 * w2, 1))) { r in
                for plane in r {
                    let src = gp + plane * h2 * w2, dst = dp + plane * h * w
                    for iy in 0..<h {
                        let r0 = UnsafeRawPointer(src + 2 * iy * w2), r1 = r0 + w2 * 4
                        let d = dst + iy * w
                        var ix = 0
                        // 8 outputs from 16 floats of each of the two rows: add the rows, then
                        // the even and odd lanes.
                        while ix + 8 <= w {
                            let s = r0.loadUnaligned(fromByteOffset: 8 * ix, as: SIMD16<Float>.self)
                                + r1.loadUnaligned(fromByteOffset: 8 * ix, as: SIMD16<Float>.self)
                            store8(d, ix, s.evenHalf + s.oddHalf)
                            ix += 8
                        }
                        let a = src + 2 * iy * w2, b = a + w2
                        while ix < w {
                            d[ix] = (a[2 * ix] + a[2 * ix + 1]) + (b[2 * ix] + b[2 * ix + 1])
                            ix += 1
                        }
                    }
                }
            }
            return dx
        }
    }
}

/// Concatenation along the channel axis, NCHW.
public enum ConcatChannels {
    /// a: [N, C1, ...], b: [N, C2, ...] -> [N, C1+C2, ...].
    public static func forward(_ a: Tensor, _ b: Tensor) -> Tensor {
        Profiler.shared.measure("concat") {
            let n = a.shape[0]
            precondition(b.shape[0] == n && Array(a.shape.dropFirst(2)) == Array(b.shape.dropFirst(2)), "concat \(a.shape) \(b.shape)")
            let sa = a.count / n, sb = b.count / n
            var shape = a.shape
            shape[1] += b.shape[1]
            let y = Tensor(uninitialized: shape)
            for i in 0..<n {
                (y.data + i * (sa + sb)).update(from: a.data + i * sa, count: sa)
                (y.data + i * (sa + sb) + sa).update(from: b.data + i * sb, count: sb)
            }
            return y
        }
    }

    /// gradOutput: [N, C1+C2, ...] -> ([N, C1, ...], [N, C2, ...]) with C1 = `leadingChannels`:
    /// the gradients of forward's a and b.
    public static func backward(_ gradOutput: Tensor, leadingChannels c1: Int) -> (Tensor, Tensor) {
        Profiler.shared.measure("concat.backward") {
            let g = gradOutput
            let n = g.shape[0], c = g.shape[1]
            precondition(g.rank >= 2 && c1 >= 0 && c1 <= c, "ConcatChannels.backward: gradient \(g.shape), leading \(c1)")
            let per = g.count / max(n * c, 1)
            var shapeA = g.shape, shapeB = g.shape
            shapeA[1] = c1
            shapeB[1] = c - c1
            let da = Tensor(uninitialized: shapeA), db = Tensor(uninitialized: shapeB)
            let sa = c1 * per, sb = (c - c1) * per
            let gp = g.data, ap = da.data, bp = db.data
            Parallel.forRanges(n, minChunk: max(1, (1 << 16) / max(sa + sb, 1))) { r in
                for i in r {
                    (ap + i * sa).update(from: gp + i * (sa + sb), count: sa)
                    (bp + i * sb).update(from: gp + i * (sa + sb) + sa, count: sb)
                }
            }
            return (da, db)
        }
    }

    /// The first `channels` channels of x: [N, C, ...] -> [N, channels, ...].
    public static func leading(_ x: Tensor, channels: Int) -> Tensor {
        let n = x.shape[0]
        let per = x.count / (n * x.shape[1])
        var shape = x.shape
        shape[1] = channels
        let y = Tensor(uninitialized: shape)
        for i in 0..<n { (y.data + i * channels * per).update(from: x.data + i * x.shape[1] * per, count: channels * per) }
        return y
    }
}

/// Layout changes between NCHW feature maps and [N, HW, C] token sequences.
public enum Transpose {
    /// x: [N, C, H, W] -> [N, H*W, C].
    public static func channelsLast(_ x: Tensor) -> Tensor {
        Profiler.shared.measure("transpose") {
            let (n, c) = (x.shape[0], x.shape[1])
            let s = x.count / (n * c)
            let y = Tensor(uninitialized: [n, s, c])
            for i in 0..<n { transpose(x.data + i * c * s, rows: c, cols: s, into: y.data + i * c * s) }
            return y
        }
    }

    /// x: [N, H*W, C] -> [N, C, H, W].
    public static func channelsFirst(_ x: Tensor, height: Int, width: Int) -> Tensor {
        Profiler.shared.measure("transpose") {
            let (n, s, c) = (x.shape[0], x.shape[1], x.shape[2])
            precondition(s == height * width, "channelsFirst: \(x.shape) vs \(height)x\(width)")
            let y = Tensor(uninitialized: [n, c, height, width])
            for i in 0..<n { transpose(x.data + i * c * s, rows: s, cols: c, into: y.data + i * c * s) }
            return y
        }
    }

    /// dst[cols, rows] = src[rows, cols]^T, in 32x32 tiles.
    static func transpose(_ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
        let tile = 32
        let rowTiles = (rows + tile - 1) / tile
        Parallel.forRanges(rowTiles) { r in
            for rt in r {
                let r0 = rt * tile, r1 = min(rows, r0 + tile)
                var c0 = 0
                while c0 < cols {
                    let c1 = min(cols, c0 + tile)
                    for i in r0..<r1 {
                        for j in c0..<c1 { dst[j * rows + i] = src[i * cols + j] }
                    }
                    c0 = c1
                }
            }
        }
    }
}
