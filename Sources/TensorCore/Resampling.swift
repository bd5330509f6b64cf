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
                        for ix in 0..<w {
                            row[2 * ix] = s[ix]
                            row[2 * ix + 1] = s[ix]
                        }
                        (row + 2 * w).update(from: row, count: 2 * w)
                    }
                }
            }
            return y
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
