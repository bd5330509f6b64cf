/// SiLU: x * sigmoid(x).
public enum SiLU {
    public static func forward(_ x: Tensor) -> Tensor { Elementwise.map(x, VectorMath.silu) }

    /// x, gradOutput: same shape -> dL/dx = g * s (1 + x (1 - s)), s = sigmoid(x).
    public static func backward(_ x: Tensor, gradOutput: Tensor) -> Tensor {
        precondition(x.shape == gradOutput.shape, "SiLU.backward: x \(x.shape) vs gradient \(gradOutput.shape)")
        return Profiler.shared.measure("silu.backward") { Elementwise.zip(x, gradOutput) { $1 * derivative($0) } }
    }

    /// d silu / dx = s (1 + x (1 - s)) with s = sigmoid(x).
    @inlinable @inline(__always)
    static func derivative(_ x: F8) -> F8 {
        let s = 1 / (1 + VectorMath.exp(-x))
        return s * (1 + x * (1 - s))
    }
}

/// Exact GELU: x/2 * (1 + erf(x / sqrt 2)).
public enum GELU {
    public static func forward(_ x: Tensor) -> Tensor { Elementwise.map(x, VectorMath.gelu) }

    /// x, gradOutput: same shape -> dL/dx = g * (Φ(x) + x φ(x)).
    public static func backward(_ x: Tensor, gradOutput: Tensor) -> Tensor {
        precondition(x.shape == gradOutput.shape, "GELU.backward: x \(x.shape) vs gradient \(gradOutput.shape)")
        return Profiler.shared.measure("gelu.backward") { Elementwise.zip(x, gradOutput) { $1 * derivative($0) } }
    }

    /// d gelu / dx = Φ(x) + x φ(x) = (1 + erf(x / sqrt 2)) / 2 + x exp(-x²/2) / sqrt(2 pi).
    @inlinable @inline(__always)
    static func derivative(_ x: F8) -> F8 {
        let cdf = 0.5 * (1 + VectorMath.erf(x * 0.70710678118654752))
        return cdf + x * VectorMath.exp(-0.5 * x * x) * 0.39894228040143268
    }
}

/// ReLU: max(x, 0).
public enum ReLU {
    /// x -> same shape.
    public static func forward(_ x: Tensor) -> Tensor {
        Elementwise.map(x) { $0.replacing(with: 0, where: $0 .< 0) }
    }

    /// x, gradOutput: same shape -> dL/dx = g where x > 0, else 0.
    public static func backward(_ x: Tensor, gradOutput: Tensor) -> Tensor {
        precondition(x.shape == gradOutput.shape, "ReLU.backward: x \(x.shape) vs gradient \(gradOutput.shape)")
        return Profiler.shared.measure("relu.backward") {
            Elementwise.zip(x, gradOutput) { F8(repeating: 0).replacing(with: $1, where: $0 .> 0) }
        }
    }
}

/// GEGLU's gating: the last axis splits into (hidden, gate); out = hidden * gelu(gate).
public enum GEGLU {
    /// x: [..., 2D] -> [..., D].
    public static func forward(_ x: Tensor) -> Tensor {
        Profiler.shared.measure("geglu") {
            let d2 = x.shape.last!
            precondition(d2 % 2 == 0, "GEGLU: odd last axis \(d2)")
            let d = d2 / 2
            let rows = x.count / d2
            let y = Tensor(uninitialized: Array(x.shape.dropLast()) + [d])
            let xp = x.data, yp = y.data
            Parallel.forRanges(rows, minChunk: 8) { r in
                for i in r {
                    let h = xp + i * d2, g = h + d, o = yp + i * d
                    VectorMath.map(g, o, d, VectorMath.gelu)
                    var j = 0
                    let rh = UnsafeRawPointer(h), ro = UnsafeMutableRawPointer(o)
                    while j + 8 <= d {
                        let v = rh.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                            * ro.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                        ro.storeBytes(of: v, toByteOffset: j * 4, as: SIMD8<Float>.self)
                        j += 8
                    }
                    while j < d { o[j] *= h[j]; j += 1 }
                }
            }
            return y
        }
    }

    /// x: [..., 2D] (hidden, gate), gradOutput: [..., D] -> [..., 2D]:
    /// d hidden = g * gelu(gate), d gate = g * hidden * gelu'(gate).
    public static func backward(_ x: Tensor, gradOutput: Tensor) -> Tensor {
        Profiler.shared.measure("geglu.backward") {
            let d2 = x.shape.last!
            let d = d2 / 2
            precondition(d2 % 2 == 0 && gradOutput.shape == Array(x.shape.dropLast()) + [d],
                         "GEGLU.backward: x \(x.shape) vs gradient \(gradOutput.shape)")
            let rows = x.count / d2
            let dx = Tensor(uninitialized: x.shape)
            let xp = x.data, gp = gradOutput.data, dp = dx.data
            Parallel.forRanges(rows, minChunk: max(1, (1 << 13) / max(d, 1))) { r in
                for i in r {
                    let h = xp + i * d2, gate = h + d, g = gp + i * d, dh = dp + i * d2, dgate = dh + d
                    var j = 0
                    // gelu(t) = t Φ(t), gelu'(t) = Φ(t) + t φ(t): one erf for both.
                    @inline(__always) func grads(_ gv: F8, _ hv: F8, _ t: F8) -> (F8, F8) {
                        let cdf = 0.5 * (1 + VectorMath.erf(t * 0.70710678118654752))
                        let pdf = VectorMath.exp(-0.5 * t * t) * 0.39894228040143268
                        return (gv * (t * cdf), gv * hv * (cdf + t * pdf))
                    }
                    while j + 8 <= d {
                        let (a, b) = grads(load8(g, j), load8(h, j), load8(gate, j))
                        store8(dh, j, a)
                        store8(dgate, j, b)
                        j += 8
                    }
                    if j < d {
                        let n = d - j
                        let (a, b) = grads(loadPartial(g + j, n), loadPartial(h + j, n), loadPartial(gate + j, n))
                        storePartial(dh + j, n, a)
                        storePartial(dgate + j, n, b)
                    }
                }
            }
            return dx
        }
    }
}

/// Softmax over the last axis.
public enum Softmax {
    /// x: [..., M] -> same shape.
    public static func forward(_ x: Tensor) -> Tensor {
        let y = x.copy()
        let m = x.shape.last!
        rowsInPlace(y.data, rows: x.count / m, length: m)
        return y
    }

    /// y = softmax output over the last axis, gradOutput: same shape -> dL/dx = y (g - Σ_j g_j y_j)
    /// per row (the row sums in Double).
    public static func backward(output y: Tensor, gradOutput: Tensor) -> Tensor {
        Profiler.shared.measure("softmax.backward") {
            precondition(y.shape == gradOutput.shape, "Softmax.backward: output \(y.shape) vs gradient \(gradOutput.shape)")
            let m = y.shape.last!
            let dx = Tensor(uninitialized: y.shape)
            let yp = y.data, gp = gradOutput.data, dp = dx.data
            Parallel.forRanges(y.count / max(m, 1), minChunk: max(1, (1 << 13) / max(m, 1))) { r in
                for i in r {
                    let yi = yp + i * m, gi = gp + i * m
                    let dot = F8(repeating: Float(dotDouble(yi, gi, m)))
                    zipMap(yi, gi, dp + i * m, m) { $0 * ($1 - dot) }
                }
            }
            return dx
        }
    }

    /// Softmax of each of `rows` rows of `length` floats, in place.
    public static func rowsInPlace(_ p: UnsafeMutablePointer<Float>, rows: Int, length m: Int) {
        Parallel.forRanges(rows, minChunk: 4) { r in
            for i in r { row(p + i * m, m) }
        }
    }

    @inline(__always)
    static func row(_ p: UnsafeMutablePointer<Float>, _ m: Int) {
        let inv = 1 / unnormalizedRow(p, m)
        VectorMath.map(p, p, m) { $0 * inv }
    }

    /// `row` for a row whose masked entries hold -infinity: they become exactly 0.
    @inline(__always)
    static func maskedRow(_ p: UnsafeMutablePointer<Float>, _ m: Int) {
        let inv = 1 / unnormalizedMaskedRow(p, m)
        VectorMath.map(p, p, m) { $0 * inv }
    }

    /// The largest of a row's `m` values (-infinity for none).
    @inline(__always)
    static func rowMax(_ p: UnsafeMutablePointer<Float>, _ m: Int) -> Float {
        let raw = UnsafeMutableRawPointer(p)
        var mx = SIMD8<Float>(repeating: -.infinity)
        var j = 0
        while j + 8 <= m {
            let v = raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
            mx = mx.replacing(with: v, where: v .> mx)
            j += 8
        }
        var maxValue = mx.max()
        while j < m { maxValue = max(maxValue, p[j]); j += 1 }
        return maxValue
    }

    /// `unnormalizedRow` for a row whose masked entries hold -infinity: those become exactly 0
    /// (exp's clamp alone would leave 2^-126) and add nothing to the sum. Some entry must be finite.
    @inline(__always)
    static func unnormalizedMaskedRow(_ p: UnsafeMutablePointer<Float>, _ m: Int) -> Float {
        let maxValue = rowMax(p, m)
        precondition(maxValue > -.infinity, "Softmax: a row with every entry masked")
        let mv = SIMD8<Float>(repeating: maxValue), masked = SIMD8<Float>(repeating: -.infinity)
        @inline(__always) func e(_ x: SIMD8<Float>) -> SIMD8<Float> {
            VectorMath.exp(x - mv).replacing(with: 0, where: x .== masked)
        }
        let raw = UnsafeMutableRawPointer(p)
        var acc = SIMD8<Float>(repeating: 0)
        var j = 0
        while j + 8 <= m {
            let y = e(raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self))
            raw.storeBytes(of: y, toByteOffset: j * 4, as: SIMD8<Float>.self)
            acc += y
            j += 8
        }
        var total = acc.sum()
        if j < m {
            VectorMath.map(p + j, p + j, m - j, e)
            while j < m { total += p[j]; j += 1 }
        }
        return total
    }

    /// Replaces a row by exp(x - max(x)) and returns the sum of the new values (the softmax
    /// before its normalisation, which callers may apply later to fewer numbers).
    @inline(__always)
    static func unnormalizedRow(_ p: UnsafeMutablePointer<Float>, _ m: Int) -> Float {
        let raw = UnsafeMutableRawPointer(p)
        let mv = SIMD8<Float>(repeating: rowMax(p, m))
        var acc = SIMD8<Float>(repeating: 0)
        var j = 0
        while j + 8 <= m {
            let e = VectorMath.exp(raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self) - mv)
            raw.storeBytes(of: e, toByteOffset: j * 4, as: SIMD8<Float>.self)
            acc += e
            j += 8
        }
        var total = acc.sum()
        if j < m {
            VectorMath.map(p + j, p + j, m - j) { VectorMath.exp($0 - mv) }
            while j < m { total += p[j]; j += 1 }
        }
        return total
    }
}
