/// Vectorised transcendental functions on `SIMD8<Float>`, accurate to a few ulp.
public enum VectorMath {
    public typealias V = SIMD8<Float>

    /// e^x (Cephes-style range reduction and degree-6 polynomial). Returns 0 below about -87.3.
    @inlinable @inline(__always)
    public static func exp(_ x: V) -> V {
        let x = clamp(x, -87.33654, 88.37626)
        // n = round(x / ln 2) by the 1.5 * 2^23 trick; its integer value sits in the low bits.
        let shifted = x * 1.44269504088896341 + 12582912.0
        let n = shifted - 12582912.0
        var r = x - n * 0.693359375
        r = r + n * 2.12194440e-4
        var p = V(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let y = p * r * r + r + 1
        let nInt = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        return y * unsafeBitCast((nInt &+ 127) &<< 23, to: V.self)
    }

    /// erf(x) as a rational approximation on [-4, 4] (±1 outside, as in float precision); max
    /// abs error about 4.2e-7. The result is clamped to [-1, 1]: unclamped, the rational form
    /// overshoots to ±1.0000001 for 3.6 < |x| < 4, which made GELU positive for x ≈ -5.3.
    @inlinable @inline(__always)
    public static func erf(_ x: V) -> V {
        let x = clamp(x, -4, 4)
        let x2 = x * x
        var p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08
        p = x2 * p + -2.10102402082508e-06
        p = x2 * p + -5.69250639462346e-05
        p = x2 * p + -7.34990630326855e-04
        p = x2 * p + -2.95459980854025e-03
        p = x2 * p + -1.60960333262415e-02
        p = x * p
        var q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04
        q = x2 * q + -1.68282697438203e-03
        q = x2 * q + -7.37332916720468e-03
        q = x2 * q + -1.42647390514189e-02
        return clamp(p / q, -1, 1)
    }

    /// x limited to [lo, hi], element-wise.
    @inlinable @inline(__always)
    public static func clamp(_ x: V, _ lo: Float, _ hi: Float) -> V {
        let l = V(repeating: lo), h = V(repeating: hi)
        let y = x.replacing(with: l, where: x .< l)
        return y.replacing(with: h, where: y .> h)
    }

    /// x * sigmoid(x).
    @inlinable @inline(__always)
    public static func silu(_ x: V) -> V {
        x / (1 + exp(-x))
    }

    /// Exact (erf) GELU: x/2 * (1 + erf(x / sqrt 2)).
    @inlinable @inline(__always)
    public static func gelu(_ x: V) -> V {
        x * 0.5 * (1 + erf(x * 0.70710678118654752))
    }

    /// Applies `f` to `n` floats from `src` into `dst` (which may alias `src`), 8 at a time.
    @inlinable @inline(__always)
    public static func map(
        _ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ f: (V) -> V
    ) {
        var i = 0
        let rawSrc = UnsafeRawPointer(src)
        let rawDst = UnsafeMutableRawPointer(dst)
        while i + 8 <= n {
            let v = rawSrc.loadUnaligned(fromByteOffset: i * 4, as: V.self)
            rawDst.storeBytes(of: f(v), toByteOffset: i * 4, as: V.self)
            i += 8
        }
        if i < n {
            var v = V(repeating: 0)
            for j in 0..<(n - i) { v[j] = src[i + j] }
            let r = f(v)
            for j in 0..<(n - i) { dst[i + j] = r[j] }
        }
    }
}
