/// Group normalisation over NCHW tensors (per sample, per group of channels).
public enum GroupNorm {
    /// x: [N, C, ...], weight/bias: [C] -> same shape. With `silu`, SiLU is applied to the result.
    public static func forward(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float, silu: Bool = false) -> Tensor {
        Profiler.shared.measure("groupnorm") {
            let n = x.shape[0], c = x.shape[1]
            precondition(c % groups == 0, "GroupNorm: \(c) channels, \(groups) groups")
            let spatial = x.count / (n * c)
            let cg = c / groups
            let y = Tensor(uninitialized: x.shape)
            let xp = x.data, yp = y.data, wp = weight.data, bp = bias.data
            Parallel.forRanges(n * groups) { r in
                for ng in r {
                    let g = ng % groups
                    let base = ng * cg * spatial
                    let (mean, invStd) = meanInvStd(xp + base, cg * spatial, eps: eps)
                    for ci in 0..<cg {
                        let ch = g * cg + ci
                        let scale = wp[ch] * invStd
                        let shift = bp[ch] - mean * scale
                        affine(xp + base + ci * spatial, yp + base + ci * spatial, spatial, scale, shift, silu: silu)
                    }
                }
            }
            return y
        }
    }
}

/// Layer normalisation over the last axis.
public enum LayerNorm {
    /// x: [..., C], weight/bias: [C] -> same shape.
    public static func forward(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
        Profiler.shared.measure("layernorm") {
            let c = x.shape.last!
            let rows = x.count / c
            let y = Tensor(uninitialized: x.shape)
            let xp = x.data, yp = y.data, wp = weight.data, bp = bias.data
            Parallel.forRanges(rows, minChunk: 16) { r in
                for i in r {
                    let (mean, invStd) = meanInvStd(xp + i * c, c, eps: eps)
                    let xi = xp + i * c, yi = yp + i * c
                    var j = 0
                    let raw = UnsafeRawPointer(xi), rawY = UnsafeMutableRawPointer(yi)
                    let rawW = UnsafeRawPointer(wp), rawB = UnsafeRawPointer(bp)
                    while j + 8 <= c {
                        let v = raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                        let wv = rawW.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                        let bv = rawB.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                        rawY.storeBytes(of: (v - mean) * invStd * wv + bv, toByteOffset: j * 4, as: SIMD8<Float>.self)
                        j += 8
                    }
                    while j < c {
                        yi[j] = (xi[j] - mean) * invStd * wp[j] + bp[j]
                        j += 1
                    }
                }
            }
            return y
        }
    }
}

/// Mean and 1/sqrt(biased variance + eps) of `n` floats, two passes with Double totals.
@inline(__always)
func meanInvStd(_ p: UnsafePointer<Float>, _ n: Int, eps: Float) -> (Float, Float) {
    let raw = UnsafeRawPointer(p)
    var acc = SIMD8<Float>(repeating: 0)
    var total = 0.0
    var i = 0
    while i + 8 <= n {
        acc += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
        if i % 4096 == 0 {
            total += Double(acc.sum())
            acc = .zero
        }
    }
    total += Double(acc.sum())
    while i < n { total += Double(p[i]); i += 1 }
    let mean = total / Double(n)
    let m = SIMD8<Float>(repeating: Float(mean))
    acc = .zero
    var sq = 0.0
    i = 0
    while i + 8 <= n {
        let d = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - m
        acc += d * d
        i += 8
        if i % 4096 == 0 {
            sq += Double(acc.sum())
            acc = .zero
        }
    }
    sq += Double(acc.sum())
    while i < n { let d = Double(p[i]) - mean; sq += d * d; i += 1 }
    let variance = sq / Double(n)
    return (Float(mean), Float(1 / (variance + Double(eps)).squareRoot()))
}

/// y = x * scale + shift (then SiLU if asked), n floats.
@inline(__always)
func affine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ scale: Float, _ shift: Float, silu: Bool) {
    if silu {
        VectorMath.map(x, y, n) { VectorMath.silu($0 * scale + shift) }
    } else {
        VectorMath.map(x, y, n) { $0 * scale + shift }
    }
}
