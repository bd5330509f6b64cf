/// Zero padding of the two spatial axes, NCHW, with a width per side (diffusers' VAE downsampler
/// pads right and bottom only: `F.pad(x, (0, 1, 0, 1))`).
public enum Pad2d {
    /// x: [N, C, H, W] -> [N, C, top + H + bottom, left + W + right], zeros outside x.
    public static func forward(_ x: Tensor, top: Int, bottom: Int, left: Int, right: Int) -> Tensor {
        precondition(x.rank == 4 && top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "Pad2d.forward: \(x.shape) (\(top), \(bottom), \(left), \(right))")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (ho, wo) = (top + h + bottom, left + w + right)
        let y = Tensor(zeros: [n, c, ho, wo])
        let xp = x.data, yp = y.data
        Parallel.forRanges(n * c, minChunk: 4) { r in
            for plane in r {
                let src = xp + plane * h * w, dst = yp + plane * ho * wo + top * wo + left
                for iy in 0..<h { (dst + iy * wo).update(from: src + iy * w, count: w) }
            }
        }
        return y
    }

    /// gradOutput: [N, C, top + H + bottom, left + W + right] -> [N, C, H, W] (the inner window).
    public static func backward(_ gradOutput: Tensor, top: Int, bottom: Int, left: Int, right: Int) -> Tensor {
        let g = gradOutput
        let (n, c, ho, wo) = (g.shape[0], g.shape[1], g.shape[2], g.shape[3])
        let (h, w) = (ho - top - bottom, wo - left - right)
        precondition(g.rank == 4 && h >= 0 && w >= 0, "Pad2d.backward: gradient \(g.shape)")
        let dx = Tensor(uninitialized: [n, c, h, w])
        let gp = g.data, dp = dx.data
        Parallel.forRanges(n * c, minChunk: 4) { r in
            for plane in r {
                let src = gp + plane * ho * wo + top * wo + left, dst = dp + plane * h * w
                for iy in 0..<h { (dst + iy * w).update(from: src + iy * wo, count: w) }
            }
        }
        return dx
    }
}

extension Tape {
    /// x: [N, C, H, W] -> [N, C, top + H + bottom, left + W + right], zero padded.
    public func pad2d(_ x: Var, top: Int = 0, bottom: Int = 0, left: Int = 0, right: Int = 0) -> Var {
        record(Pad2d.forward(x.value, top: top, bottom: bottom, left: left, right: right), inputs: [x]) {
            [Pad2d.backward($0, top: top, bottom: bottom, left: left, right: right)]
        }
    }
}
