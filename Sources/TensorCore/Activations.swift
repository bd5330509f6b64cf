/// SiLU: x * sigmoid(x).
public enum SiLU {
    public static func forward(_ x: Tensor) -> Tensor { Elementwise.map(x, VectorMath.silu) }
}

/// Exact GELU: x/2 * (1 + erf(x / sqrt 2)).
public enum GELU {
    public static func forward(_ x: Tensor) -> Tensor { Elementwise.map(x, VectorMath.gelu) }
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

    /// Replaces a row by exp(x - max(x)) and returns the sum of the new values (the softmax
    /// before its normalisation, which callers may apply later to fewer numbers).
    @inline(__always)
    static func unnormalizedRow(_ p: UnsafeMutablePointer<Float>, _ m: Int) -> Float {
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
        let mv = SIMD8<Float>(repeating: maxValue)
        var acc = SIMD8<Float>(repeating: 0)
        j = 0
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
