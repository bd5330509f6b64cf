/// Element-wise arithmetic.
public enum Elementwise {
    /// f applied to every element, 8 at a time, spread over the cores.
    @inlinable
    public static func map(_ x: Tensor, _ f: (SIMD8<Float>) -> SIMD8<Float>) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        let xp = x.data, yp = y.data
        Parallel.forRanges(x.count, minChunk: 1 << 14) { r in
            VectorMath.map(xp + r.lowerBound, yp + r.lowerBound, r.count, f)
        }
        return y
    }

    /// f(a, b) for every pair of elements (same element count; the result has a's shape),
    /// 8 at a time, spread over the cores.
    @inlinable @inline(__always)
    static func zip(_ a: Tensor, _ b: Tensor, _ f: (F8, F8) -> F8) -> Tensor {
        precondition(a.count == b.count, "zip \(a.shape) \(b.shape)")
        let y = Tensor(uninitialized: a.shape)
        let ap = a.data, bp = b.data, yp = y.data
        Parallel.forRanges(a.count, minChunk: 1 << 14) { r in
            let o = r.lowerBound
            zipMap(ap + o, bp + o, yp + o, r.count, f)
        }
        return y
    }

    /// a + b (same shape).
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        Profiler.shared.measure("elementwise") {
            precondition(a.shape == b.shape, "add \(a.shape) \(b.shape)")
            let y = Tensor(uninitialized: a.shape)
            let ap = a.data, bp = b.data, yp = y.data
            Parallel.forRanges(a.count, minChunk: 1 << 15) { r in
                for i in r { yp[i] = ap[i] + bp[i] }
            }
            return y
        }
    }

    /// x: [N, C, ...] plus a per-(sample, channel) value b: [N, C].
    public static func addPerChannel(_ x: Tensor, _ b: Tensor) -> Tensor {
        Profiler.shared.measure("elementwise") {
            let (n, c) = (x.shape[0], x.shape[1])
            precondition(b.shape == [n, c], "addPerChannel \(x.shape) \(b.shape)")
            let s = x.count / (n * c)
            let y = Tensor(uninitialized: x.shape)
            let xp = x.data, bp = b.data, yp = y.data
            Parallel.forRanges(n * c, minChunk: 4) { r in
                for nc in r {
                    let v = bp[nc]
                    VectorMath.map(xp + nc * s, yp + nc * s, s) { $0 + v }
                }
            }
            return y
        }
    }

    /// Per-sample blend (1 - m) * a + m * b, with m: [N] and a, b: [N, ...].
    public static func blend(_ a: Tensor, _ b: Tensor, mix m: [Float]) -> Tensor {
        Profiler.shared.measure("elementwise") {
            precondition(a.shape == b.shape && m.count == a.shape[0], "blend \(a.shape) \(b.shape) \(m.count)")
            let per = a.count / max(a.shape[0], 1)
            let y = Tensor(uninitialized: a.shape)
            let ap = a.data, bp = b.data, yp = y.data
            m.withUnsafeBufferPointer { mp in
                Parallel.forRanges(a.count, minChunk: 1 << 15) { r in
                    forEachSampleSegment(r, per: per) { i, lo, n in
                        let mi = mp[i], keep = 1 - mi
                        zipMap(ap + lo, bp + lo, yp + lo, n) { keep * $0 + mi * $1 }
                    }
                }
            }
            return y
        }
    }

    /// Gradient of blend (1-m)*a + m*b per sample: (da, db, dm) with dm_i = sum over sample i of (b-a)*g (accumulate in Double).
    /// a, b, gradOutput: [N, ...], m: [N] -> da, db: [N, ...], dm: [N].
    public static func blendBackward(_ a: Tensor, _ b: Tensor, mix m: [Float], gradOutput g: Tensor) -> (a: Tensor, b: Tensor, mix: [Float]) {
        Profiler.shared.measure("elementwise.backward") {
            precondition(a.shape == b.shape && g.shape == a.shape && m.count == a.shape[0],
                         "blendBackward \(a.shape) \(b.shape) \(g.shape) \(m.count)")
            let n = m.count, per = a.count / max(n, 1)
            let da = Tensor(uninitialized: a.shape), db = Tensor(uninitialized: a.shape)
            let ap = a.data, bp = b.data, gp = g.data, dap = da.data, dbp = db.data
            // One partial sum per (chunk, sample): chunks may share a sample.
            let chunks = Parallel.chunks(a.count, minChunk: 1 << 15)
            let partial = UnsafeMutableBufferPointer<Double>.allocate(capacity: max(chunks * n, 1))
            defer { partial.deallocate() }
            partial.initialize(repeating: 0)
            m.withUnsafeBufferPointer { mp in
                Parallel.forChunks(a.count, minChunk: 1 << 15) { chunk, r in
                    forEachSampleSegment(r, per: per) { i, lo, len in
                        let mi = F8(repeating: mp[i]), keep = 1 - mi
                        var acc = SIMDSum()
                        var j = 0
                        while j + 8 <= len {
                            let o = lo + j
                            let gv = load8(gp, o), d = load8(bp, o) - load8(ap, o)
                            store8(dap, o, keep * gv)
                            store8(dbp, o, mi * gv)
                            acc.add(d * gv)
                            j += 8
                        }
                        if j < len {
                            let o = lo + j, t = len - j
                            let gv = loadPartial(gp + o, t), d = loadPartial(bp + o, t) - loadPartial(ap + o, t)
                            storePartial(dap + o, t, keep * gv)
                            storePartial(dbp + o, t, mi * gv)
                            acc.add(d * gv)
                        }
                        partial[chunk * n + i] += acc.total
                    }
                }
            }
            var dm = [Float](repeating: 0, count: n)
            for i in 0..<n {
                var s = 0.0
                for c in 0..<chunks { s += partial[c * n + i] }
                dm[i] = Float(s)
            }
            return (da, db, dm)
        }
    }

    /// g: [N, C, ...] -> [N, C], sums over the trailing axes (gradient of addPerChannel's b).
    /// Sums are accumulated in Double.
    public static func sumTrailing(_ g: Tensor) -> Tensor {
        Profiler.shared.measure("elementwise.backward") {
            let (n, c) = (g.shape[0], g.shape[1])
            let s = g.count / max(n * c, 1)
            let y = Tensor(uninitialized: [n, c])
            let gp = g.data, yp = y.data
            Parallel.forRanges(n * c, minChunk: max(1, (1 << 14) / max(s, 1))) { r in
                for nc in r { yp[nc] = Float(sumDouble(gp + nc * s, s)) }
            }
            return y
        }
    }

    /// acc += x in place (same count), vectorised and parallel: gradient accumulation.
    /// acc: any shape, x: the same number of elements.
    public static func addInPlace(_ acc: Tensor, _ x: Tensor) {
        Profiler.shared.measure("elementwise.backward") {
            precondition(acc.count == x.count, "addInPlace \(acc.shape) \(x.shape)")
            let ap = acc.data, xp = x.data
            Parallel.forRanges(acc.count, minChunk: 1 << 15) { r in
                let o = r.lowerBound
                zipMap(ap + o, xp + o, ap + o, r.count) { $0 + $1 }
            }
        }
    }

    /// a * b element-wise (same shape).
    public static func multiply(_ a: Tensor, _ b: Tensor) -> Tensor {
        Profiler.shared.measure("elementwise") {
            precondition(a.shape == b.shape, "multiply \(a.shape) \(b.shape)")
            let y = Tensor(uninitialized: a.shape)
            let ap = a.data, bp = b.data, yp = y.data
            Parallel.forRanges(a.count, minChunk: 1 << 15) { r in
                let o = r.lowerBound
                zipMap(ap + o, bp + o, yp + o, r.count) { $0 * $1 }
            }
            return y
        }
    }

    /// Column sums of a row-major [rows, cols] matrix -> [cols] (the gradient of a bias added to
    /// every row). Rows are added 8 columns at a time in float, 64 rows at a time, and those
    /// block sums are accumulated in Double; rows are split over the cores.
    static func columnSums(_ g: UnsafePointer<Float>, rows: Int, cols: Int) -> Tensor {
        let y = Tensor(uninitialized: [cols])
        let minChunk = max(64, (1 << 15) / max(cols, 1))
        let chunks = Parallel.chunks(rows, minChunk: minChunk)
        let partial = UnsafeMutableBufferPointer<Double>.allocate(capacity: max(chunks * cols, 1))
        defer { partial.deallocate() }
        partial.initialize(repeating: 0)
        let scratch = Tensor(uninitialized: [max(chunks * cols, 1)])
        let pp = partial.baseAddress!, sp = scratch.data
        Parallel.forChunks(rows, minChunk: minChunk) { chunk, r in
            let f = sp + chunk * cols, total = pp + chunk * cols
            var lo = r.lowerBound
            while lo < r.upperBound {
                let hi = min(r.upperBound, lo + 64)
                f.update(from: g + lo * cols, count: cols)
                for row in (lo + 1)..<max(lo + 1, hi) { zipMap(UnsafePointer(f), g + row * cols, f, cols) { $0 + $1 } }
                for j in 0..<cols { total[j] += Double(f[j]) }
                lo = hi
            }
        }
        for j in 0..<cols {
            var s = 0.0
            for c in 0..<chunks { s += pp[c * cols + j] }
            y.data[j] = Float(s)
        }
        return y
    }

    /// Splits the flat range `r` of a tensor with `per` elements per sample at sample
    /// boundaries: body(sample, first flat index, length).
    @inline(__always)
    static func forEachSampleSegment(_ r: Range<Int>, per: Int, _ body: (_ sample: Int, _ lo: Int, _ count: Int) -> Void) {
        guard per > 0 else { return }
        var lo = r.lowerBound
        while lo < r.upperBound {
            let i = lo / per
            let hi = min(r.upperBound, (i + 1) * per)
            body(i, lo, hi - lo)
            lo = hi
        }
    }

    /// x + s.
    public static func addScalar(_ x: Tensor, _ s: Float) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        VectorMath.map(x.data, y.data, x.count) { $0 + s }
        return y
    }

    /// x * s.
    public static func scale(_ x: Tensor, _ s: Float) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        VectorMath.map(x.data, y.data, x.count) { $0 * s }
        return y
    }
}

@usableFromInline typealias F8 = SIMD8<Float>

/// 8 floats at p + i (any alignment).
@inlinable @inline(__always)
func load8(_ p: UnsafePointer<Float>, _ i: Int) -> F8 {
    UnsafeRawPointer(p).loadUnaligned(fromByteOffset: i * 4, as: F8.self)
}

@inlinable @inline(__always)
func load8(_ p: UnsafeMutablePointer<Float>, _ i: Int) -> F8 { load8(UnsafePointer(p), i) }

@inlinable @inline(__always)
func store8(_ p: UnsafeMutablePointer<Float>, _ i: Int, _ v: F8) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, toByteOffset: i * 4, as: F8.self)
}

/// The first `n` (< 8) floats at p, the other lanes zero.
@inlinable @inline(__always)
func loadPartial(_ p: UnsafePointer<Float>, _ n: Int) -> F8 {
    var v = F8(repeating: 0)
    for j in 0..<n { v[j] = p[j] }
    return v
}

@inlinable @inline(__always)
func loadPartial(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> F8 { loadPartial(UnsafePointer(p), n) }

/// Stores the first `n` (< 8) lanes of v at p.
@inlinable @inline(__always)
func storePartial(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ v: F8) {
    for j in 0..<n { p[j] = v[j] }
}

/// dst[i] = f(a[i], b[i]) for n floats, 8 at a time; dst may alias a or b.
@inlinable @inline(__always)
func zipMap(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ f: (F8, F8) -> F8) {
    var i = 0
    while i + 8 <= n {
        store8(dst, i, f(load8(a, i), load8(b, i)))
        i += 8
    }
    if i < n { storePartial(dst + i, n - i, f(loadPartial(a + i, n - i), loadPartial(b + i, n - i))) }
}

@inlinable @inline(__always)
func zipMap(_ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ f: (F8, F8) -> F8) {
    zipMap(UnsafePointer(a), UnsafePointer(b), dst, n, f)
}

/// A sum of SIMD8 float vectors kept in float lanes for at most 64 additions (512 elements)
/// and then moved into a Double total, so long reductions keep Double accuracy at SIMD speed.
@usableFromInline
struct SIMDSum {
    @usableFromInline var lanes = F8(repeating: 0)
    @usableFromInline var pending = 0
    @usableFromInline var sum = 0.0

    @inlinable init() {}

    @inlinable @inline(__always)
    mutating func add(_ v: F8) {
        lanes += v
        pending += 1
        if pending == 64 { flush() }
    }

    @inlinable @inline(__always)
    mutating func flush() {
        sum += Double(lanes.sum())
        lanes = .zero
        pending = 0
    }

    /// The Double total of everything added.
    @inlinable var total: Double { sum + Double(lanes.sum()) }
}

/// Σ p[i] over n floats, accumulated as in `SIMDSum`.
@inlinable @inline(__always)
func sumDouble(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = SIMDSum()
    var i = 0
    while i + 8 <= n { acc.add(load8(p, i)); i += 8 }
    if i < n { acc.add(loadPartial(p + i, n - i)) }
    return acc.total
}

/// Σ a[i] b[i] over n floats, accumulated as in `SIMDSum`.
@inlinable @inline(__always)
func dotDouble(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = SIMDSum()
    var i = 0
    while i + 8 <= n { acc.add(load8(a, i) * load8(b, i)); i += 8 }
    if i < n { acc.add(loadPartial(a + i, n - i) * loadPartial(b + i, n - i)) }
    return acc.total
}

/// diffusers' sinusoidal timestep embedding (`get_timestep_embedding`), computed in Double.
public enum TimestepEmbedding {
    /// timesteps: [N] -> [N, dim].
    public static func sinusoidal(_ timesteps: [Float], dim: Int, flipSinToCos: Bool, freqShift: Float, maxPeriod: Double = 10000) -> Tensor {
        let half = dim / 2
        let y = Tensor(zeros: [timesteps.count, dim])
        for (i, t) in timesteps.enumerated() {
            let row = y.data + i * dim
            for j in 0..<half {
                let exponent = -Foundation_log(maxPeriod) * Double(j) / (Double(half) - Double(freqShift))
                let arg = Double(t) * Foundation_exp(exponent)
                let s = Float(Foundation_sin(arg)), c = Float(Foundation_cos(arg))
                if flipSinToCos {
                    row[j] = c
                    row[half + j] = s
                } else {
                    row[j] = s
                    row[half + j] = c
                }
            }
        }
        return y
    }
}
