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

    /// x: [N, C, ...], weight/bias: [C], gradOutput: same shape as x. Returns dL/dx, and dL/dweight,
    /// dL/dbias: [C] when `parameters`. The mean and 1/std are recomputed from x as in forward;
    /// `silu` is the forward's fused SiLU (its derivative is taken at the normalised output).
    ///
    /// With x̂ = (x - mean) rstd and gy = dL/d(x̂ w + b), per (sample, group) of L elements:
    /// dx = rstd (w gy - Σ(w gy) / L - x̂ Σ(w gy x̂) / L), the sums built from the per-channel
    /// Σ gy and Σ gy x̂ (Double), which summed over the batch are dL/dbias and dL/dweight.
    public static func backward(
        _ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float, silu: Bool, gradOutput: Tensor, parameters: Bool
    ) -> (input: Tensor, weight: Tensor?, bias: Tensor?) {
        Profiler.shared.measure("groupnorm.backward") {
            let n = x.shape[0], c = x.shape[1]
            precondition(c % groups == 0 && gradOutput.shape == x.shape && weight.count == c && bias.count == c,
                         "GroupNorm.backward: input \(x.shape), gradient \(gradOutput.shape), \(groups) groups, weight \(weight.shape)")
            let spatial = x.count / (n * c)
            let cg = c / groups
            let dx = Tensor(uninitialized: x.shape)
            // Per (sample, channel): Σ gy, Σ gy x̂.
            let sums = UnsafeMutableBufferPointer<Double>.allocate(capacity: max(2 * n * c, 1))
            defer { sums.deallocate() }
            let sp = sums.baseAddress!
            let xp = x.data, gp = gradOutput.data, dp = dx.data, wp = weight.data, bp = bias.data
            Parallel.forRanges(n * groups) { r in
                for ng in r {
                    let bi = ng / groups, g = ng % groups
                    let base = ng * cg * spatial
                    let (mean, invStd) = meanInvStd(xp + base, cg * spatial, eps: eps)
                    var weighted = 0.0, weightedXhat = 0.0
                    for ci in 0..<cg {
                        let ch = g * cg + ci, off = base + ci * spatial
                        // With SiLU, gy is kept in dx for the second pass.
                        let (sg, sgx) = channelSums(xp + off, gp + off, gyOut: silu ? dp + off : nil, spatial,
                                                    mean: mean, invStd: invStd, weight: wp[ch], bias: bp[ch])
                        sp[2 * (bi * c + ch)] = sg
                        sp[2 * (bi * c + ch) + 1] = sgx
                        weighted += Double(wp[ch]) * sg
                        weightedXhat += Double(wp[ch]) * sgx
                    }
                    let len = Double(cg * spatial)
                    // dx = (rstd w) gy - (rstd² Σ(w gy x̂)/L) (x - mean) - rstd Σ(w gy)/L
                    let slope = F8(repeating: Float(Double(invStd) * Double(invStd) * weightedXhat / len))
                    let shift = F8(repeating: Float(Double(invStd) * weighted / len))
                    let m = F8(repeating: mean)
                    for ci in 0..<cg {
                        let ch = g * cg + ci, off = base + ci * spatial
                        let a = F8(repeating: invStd * wp[ch])
                        let gy = UnsafePointer(silu ? dp + off : gp + off)
                        zipMap(gy, xp + off, dp + off, spatial) { a * $0 - slope * ($1 - m) - shift }
                    }
                }
            }
            guard parameters else { return (dx, nil, nil) }
            let dw = Tensor(uninitialized: [c]), db = Tensor(uninitialized: [c])
            for ch in 0..<c {
                var sg = 0.0, sgx = 0.0
                for bi in 0..<n {
                    sg += sp[2 * (bi * c + ch)]
                    sgx += sp[2 * (bi * c + ch) + 1]
                }
                db.data[ch] = Float(sg)
                dw.data[ch] = Float(sgx)
            }
            return (dx, dw, db)
        }
    }

    /// One channel's (Σ gy, Σ gy x̂) in Double, x̂ = (x - mean) invStd, where gy is g, or with
    /// `gyOut` g silu'(x̂ w + b), which is then stored in gyOut.
    @inline(__always)
    static func channelSums(
        _ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, gyOut: UnsafeMutablePointer<Float>?, _ n: Int,
        mean: Float, invStd: Float, weight: Float, bias: Float
    ) -> (Double, Double) {
        let m = F8(repeating: mean), rs = F8(repeating: invStd), wv = F8(repeating: weight), bv = F8(repeating: bias)
        var sg = SIMDSum(), sgx = SIMDSum()
        var i = 0
        if let gyOut {
            while i + 8 <= n {
                let xh = (load8(x, i) - m) * rs
                let gy = load8(g, i) * SiLU.derivative(xh * wv + bv)
                store8(gyOut, i, gy)
                sg.add(gy)
                sgx.add(gy * xh)
                i += 8
            }
            if i < n {
                // Zero-padded lanes have g = 0, so gy = 0 there.
                let xh = (loadPartial(x + i, n - i) - m) * rs
                let gy = loadPartial(g + i, n - i) * SiLU.derivative(xh * wv + bv)
                storePartial(gyOut + i, n - i, gy)
                sg.add(gy)
                sgx.add(gy * xh)
            }
        } else {
            while i + 8 <= n {
                let gy = load8(g, i)
                sg.add(gy)
                sgx.add(gy * ((load8(x, i) - m) * rs))
                i += 8
            }
            if i < n {
                let gy = loadPartial(g + i, n - i)
                sg.add(gy)
                sgx.add(gy * ((loadPartial(x + i, n - i) - m) * rs))
            }
        }
        return (sg.total, sgx.total)
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

    /// x: [..., C], weight/bias: [C], gradOutput: same shape as x. Returns dL/dx, and dL/dweight,
    /// dL/dbias: [C] when `parameters`.
    ///
    /// Per row, with x̂ = (x - mean) rstd recomputed from x: dx = rstd (w g - Σ(w g)/C - x̂ Σ(w g x̂)/C)
    /// (row sums in Double); dweight = Σ_rows g x̂ and dbias = Σ_rows g, summed in float over at
    /// most 64 rows and then in Double.
    public static func backward(
        _ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, gradOutput: Tensor, parameters: Bool
    ) -> (input: Tensor, weight: Tensor?, bias: Tensor?) {
        Profiler.shared.measure("layernorm.backward") {
            let c = x.shape.last!
            precondition(gradOutput.shape == x.shape && weight.count == c && bias.count == c,
                         "LayerNorm.backward: input \(x.shape), gradient \(gradOutput.shape), weight \(weight.shape)")
            let rows = x.count / max(c, 1)
            let dx = Tensor(uninitialized: x.shape)
            let minChunk = max(16, (1 << 14) / max(c, 1))
            let chunks = Parallel.chunks(rows, minChunk: minChunk)
            // Per chunk: float block sums [2C] and Double totals [2C] of g x̂ and g.
            let scratch = Tensor(uninitialized: [parameters ? max(chunks * 2 * c, 1) : 1])
            let totals = UnsafeMutableBufferPointer<Double>.allocate(capacity: parameters ? max(chunks * 2 * c, 1) : 1)
            defer { totals.deallocate() }
            totals.initialize(repeating: 0)
            let xp = x.data, gp = gradOutput.data, dp = dx.data, wp = weight.data
            let sp = scratch.data, tp = totals.baseAddress!
            let invC = 1 / Double(c)
            Parallel.forChunks(rows, minChunk: minChunk) { chunk, r in
                let sgx = sp + chunk * 2 * c, sg = sgx + c
                let tgx = tp + chunk * 2 * c
                var pending = 0
                if parameters { sgx.initialize(repeating: 0, count: 2 * c) }
                for i in r {
                    let xi = xp + i * c, gi = gp + i * c, di = dp + i * c
                    let (mean, invStd) = meanInvStd(xi, c, eps: eps)
                    let m = F8(repeating: mean), rs = F8(repeating: invStd)
                    var swg = SIMDSum(), swgx = SIMDSum()
                    var j = 0
                    while j + 8 <= c {
                        let gv = load8(gi, j), xh = (load8(xi, j) - m) * rs
                        let wg = gv * load8(wp, j)
                        swg.add(wg)
                        swgx.add(wg * xh)
                        if parameters {
                            store8(sgx, j, load8(sgx, j) + gv * xh)
                            store8(sg, j, load8(sg, j) + gv)
                        }
                        j += 8
                    }
                    if j < c {
                        let t = c - j
                        let gv = loadPartial(gi + j, t), xh = (loadPartial(xi + j, t) - m) * rs
                        let wg = gv * loadPartial(wp + j, t)
                        swg.add(wg)
                        swgx.add(wg * xh)
                        if parameters {
                            storePartial(sgx + j, t, loadPartial(sgx + j, t) + gv * xh)
                            storePartial(sg + j, t, loadPartial(sg + j, t) + gv)
                        }
                    }
                    let shift = F8(repeating: Float(Double(invStd) * swg.total * invC))
                    let slope = F8(repeating: Float(Double(invStd) * Double(invStd) * swgx.total * invC))
                    // dx = rstd w g - rstd² Σ(w g x̂)/C (x - mean) - rstd Σ(w g)/C
                    j = 0
                    while j + 8 <= c {
                        store8(di, j, rs * load8(wp, j) * load8(gi, j) - slope * (load8(xi, j) - m) - shift)
                        j += 8
                    }
                    if j < c {
                        let t = c - j
                        storePartial(di + j, t, rs * loadPartial(wp + j, t) * loadPartial(gi + j, t)
                                     - slope * (loadPartial(xi + j, t) - m) - shift)
                    }
                    if parameters {
                        pending += 1
                        if pending == 64 || i == r.upperBound - 1 {
                            for j in 0..<(2 * c) { tgx[j] += Double(sgx[j]) }
                            sgx.update(repeating: 0, count: 2 * c)
                            pending = 0
                        }
                    }
                }
            }
            guard parameters else { return (dx, nil, nil) }
            let dw = Tensor(uninitialized: [c]), db = Tensor(uninitialized: [c])
            for j in 0..<c {
                var a = 0.0, b = 0.0
                for k in 0..<chunks {
                    a += tp[k * 2 * c + j]
                    b += tp[k * 2 * c + c + j]
                }
                dw.data[j] = Float(a)
                db.data[j] = Float(b)
            }
            return (dx, dw, db)
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
