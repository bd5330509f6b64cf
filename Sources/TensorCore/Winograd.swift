/// 3x3 stride-1 padding-1 convolution by Winograd's F(2x2, 3x3): each 2x2 output tile costs 16
/// multiplies per channel pair instead of 36 (2.25x fewer), computed as 16 independent matrix
/// products [O, C] x [C, tiles]. Used by `Conv2d.forward` for large planes.
public enum Winograd3x3 {
    /// Whether `Conv2d.forward` should use this for an input of `channels` and an output plane of
    /// `plane` pixels (batch folded in).
    public static func applies(channels: Int, outChannels: Int, plane: Int) -> Bool {
        channels >= 16 && outChannels >= 16 && plane >= 1024
    }

    /// The transformed weights G g G^T of weight: [O, C, 3, 3], as [16, O, C]. Layers with fixed
    /// weights compute this once and pass it to `forward`.
    public static func transformedWeights(_ weight: Tensor) -> Tensor {
        let (o, c) = (weight.shape[0], weight.shape[1])
        let u = Tensor(uninitialized: [16, o, c])
        transformWeights(weight.data, o: o, c: c, into: u.data)
        return u
    }

    /// Most floats of transformed inputs and products (V and M) that forward holds at a time:
    /// 2^25 = 128 MB. Larger convolutions go through in bands of tile rows.
    public static let tileBudget = 1 << 25

    /// x: [N, C, H, W], weight: [O, C, 3, 3], bias: [O] -> [N, O, H, W] (stride 1, padding 1).
    /// `transformed` is `transformedWeights(weight)` when the caller has it.
    public static func forward(_ x: Tensor, weight: Tensor, bias: Tensor?, transformed: Tensor? = nil) -> Tensor {
        forward(x, weight: weight, bias: bias, transformed: transformed, tileBudget: tileBudget)
    }

    /// `forward` with the memory bound as a parameter (tests use small bounds to get many bands).
    ///
    /// The whole batch's tiles go into one set of 16 products when V and M fit `tileBudget`
    /// floats; otherwise each sample is taken in bands of tile rows that do.
    static func forward(_ x: Tensor, weight: Tensor, bias: Tensor?, transformed: Tensor?, tileBudget: Int) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let o = weight.shape[0]
        precondition(weight.shape == [o, c, 3, 3], "Winograd3x3: weight \(weight.shape) for input \(x.shape)")
        let th = (h + 1) / 2, tw = (w + 1) / 2
        let u = transformed ?? Profiler.shared.measure("winograd.weights") { transformedWeights(weight) }
        precondition(u.shape == [16, o, c], "Winograd3x3: transformed weights \(u.shape)")
        let perTile = 16 * (c + o)
        let whole = n * th * tw * perTile <= tileBudget
        let bandRows = whole ? th : max(1, min(th, tileBudget / (perTile * tw)))
        let bandTiles = (whole ? n : 1) * bandRows * tw
        let v = Tensor(uninitialized: [16, c, bandTiles])
        let m = Tensor(uninitialized: [16, o, bandTiles])
        let y = Tensor(uninitialized: [n, o, h, w])
        let up = u.data, vp = v.data, mp = m.data
        for b in Swift.stride(from: 0, to: n, by: whole ? n : 1) {
            let samples = b..<(whole ? n : b + 1)
            for ty0 in Swift.stride(from: 0, to: th, by: bandRows) {
                let rows = ty0..<min(th, ty0 + bandRows)
                let tiles = samples.count * rows.count * tw
                Profiler.shared.measure("winograd.input") {
                    transformInput(x.data, samples: samples, c: c, h: h, w: w, rows: rows, tw: tw, into: v.data)
                }
                // The 16 products are independent: one single-threaded product per item and core.
                Profiler.shared.measure("winograd.gemm", flops: 32.0 * Double(o * c * tiles)) { Parallel.forRanges(16) { r in
                    for i in r {
                        BLAS.sgemm(m: o, n: tiles, k: c, a: up + i * o * c, lda: c, b: vp + i * c * tiles, ldb: tiles,
                                   c: mp + i * o * tiles, ldc: tiles, singleThread: true)
                    }
                } }
                Profiler.shared.measure("winograd.output") {
                    transformOutput(m.data, bias: bias?.data, samples: samples, o: o, h: h, w: w, rows: rows, tw: tw, into: y.data)
                }
            }
        }
        return y
    }

    /// U = G g G^T for every (o, c); u: [16, O, C].
    static func transformWeights(_ g: UnsafePointer<Float>, o: Int, c: Int, into u: UnsafeMutablePointer<Float>) {
        let stride = o * c
        Parallel.forRanges(o * c, minChunk: 256) { r in
            for oc in r {
                let k = g + oc * 9
                // Rows of g as vectors over its 3 columns (4th lane unused); Gg: 4 rows.
                let g0 = SIMD4<Float>(k[0], k[1], k[2], 0), g1 = SIMD4<Float>(k[3], k[4], k[5], 0)
                let g2 = SIMD4<Float>(k[6], k[7], k[8], 0)
                let rows = (g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2)
                @inline(__always) func store(_ i: Int, _ q: SIMD4<Float>) {
                    u[(4 * i + 0) * stride + oc] = q[0]
                    u[(4 * i + 1) * stride + oc] = 0.5 * (q[0] + q[1] + q[2])
                    u[(4 * i + 2) * stride + oc] = 0.5 * (q[0] - q[1] + q[2])
                    u[(4 * i + 3) * stride + oc] = q[2]
                }
                store(0, rows.0)
                store(1, rows.1)
                store(2, rows.2)
                store(3, rows.3)
            }
        }
    }

    /// V = B^T d B for every channel and 4x4 input patch (zero outside the image) of the tile rows
    /// `rows` of images `samples`; v: [16, C, tiles], tiles ordered (sample, tile row, tile column).
    static func transformInput(
        _ x: UnsafePointer<Float>, samples: Range<Int>, c: Int, h: Int, w: Int, rows: Range<Int>, tw: Int,
        into v: UnsafeMutablePointer<Float>
    ) {
        let tiles = samples.count * rows.count * tw
        let stride = c * tiles
        // The input rows of the band are first copied into a zero border (1 pixel, and up to an
        // even size), so the patches need no bounds checks. Padded row pr holds input row
        // 2 rows.lowerBound - 1 + pr.
        let ph = 2 * rows.count + 2, pw = 2 * tw + 2
        let firstRow = 2 * rows.lowerBound - 1
        let planes = samples.count * c
        let chunks = Parallel.chunks(planes, minChunk: 4)
        // 16 floats of slack: the 8-tile loads of the last row read past its end (unused lanes).
        let scratch = Tensor(uninitialized: [chunks * ph * pw + 16])
        Parallel.forChunks(planes, minChunk: 4) { chunk, r in
            let pad = scratch.data + chunk * ph * pw
            pad.initialize(repeating: 0, count: ph * pw)
            for item in r {
                let sb = item / c, ci = item % c
                let xc = x + ((samples.lowerBound + sb) * c + ci) * h * w
                for pr in 0..<ph {
                    let iy = firstRow + pr
                    if iy >= 0 && iy < h {
                        (pad + pr * pw + 1).update(from: xc + iy * w, count: w)
                    } else {
                        (pad + pr * pw + 1).initialize(repeating: 0, count: w)
                    }
                }
                for ty in 0..<rows.count {
                    let p0 = pad + 2 * ty * pw
                    let t0 = (sb * rows.count + ty) * tw
                    let base = v + ci * tiles + t0
                    var tx = 0
                    // Eight tiles at a time: a patch row of 8 tiles is 16 + 2 consecutive floats,
                    // whose even and odd lanes are the tiles' columns 0/2 and 1/3.
                    while tx + 8 <= tw {
                        @inline(__always) func columns(_ dy: Int) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
                            let row = UnsafeRawPointer(p0 + dy * pw + 2 * tx)
                            let a = row.loadUnaligned(as: SIMD16<Float>.self)
                            let b = (row + 8).loadUnaligned(as: SIMD16<Float>.self)
                            return (a.evenHalf, a.oddHalf, b.evenHalf, b.oddHalf)
                        }
                        let d0 = columns(0), d1 = columns(1), d2 = columns(2), d3 = columns(3)
                        // B^T d on rows (as tuples of the 4 columns), then on columns.
                        let r0 = (d0.0 - d2.0, d0.1 - d2.1, d0.2 - d2.2, d0.3 - d2.3)
                        let r1 = (d1.0 + d2.0, d1.1 + d2.1, d1.2 + d2.2, d1.3 + d2.3)
                        let r2 = (d2.0 - d1.0, d2.1 - d1.1, d2.2 - d1.2, d2.3 - d1.3)
                        let r3 = (d1.0 - d3.0, d1.1 - d3.1, d1.2 - d3.2, d1.3 - d3.3)
                        let out = UnsafeMutableRawPointer(base + tx)
                        @inline(__always) func store(_ i: Int, _ q: (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)) {
                            out.storeBytes(of: q.0 - q.2, toByteOffset: (4 * i + 0) * stride * 4, as: SIMD8<Float>.self)
                            out.storeBytes(of: q.1 + q.2, toByteOffset: (4 * i + 1) * stride * 4, as: SIMD8<Float>.self)
                            out.storeBytes(of: q.2 - q.1, toByteOffset: (4 * i + 2) * stride * 4, as: SIMD8<Float>.self)
                            out.storeBytes(of: q.1 - q.3, toByteOffset: (4 * i + 3) * stride * 4, as: SIMD8<Float>.self)
                        }
                        store(0, r0)
                        store(1, r1)
                        store(2, r2)
                        store(3, r3)
                        tx += 8
                    }
                    while tx < tw {
                        let q = p0 + 2 * tx
                        let d0 = SIMD4<Float>(q[0], q[1], q[2], q[3])
                        let d1 = SIMD4<Float>(q[pw], q[pw + 1], q[pw + 2], q[pw + 3])
                        let d2 = SIMD4<Float>(q[2 * pw], q[2 * pw + 1], q[2 * pw + 2], q[2 * pw + 3])
                        let d3 = SIMD4<Float>(q[3 * pw], q[3 * pw + 1], q[3 * pw + 2], q[3 * pw + 3])
                        // B^T d (rows), then the same on columns.
                        let r0 = d0 - d2, r1 = d1 + d2, r2 = d2 - d1, r3 = d1 - d3
                        let out = base + tx
                        @inline(__always) func store(_ i: Int, _ q: SIMD4<Float>) {
                            out[(4 * i + 0) * stride] = q[0] - q[2]
                            out[(4 * i + 1) * stride] = q[1] + q[2]
                            out[(4 * i + 2) * stride] = q[2] - q[1]
                            out[(4 * i + 3) * stride] = q[1] - q[3]
                        }
                        store(0, r0)
                        store(1, r1)
                        store(2, r2)
                        store(3, r3)
                        tx += 1
                    }
                }
            }
        }
    }

    /// Y = A^T M A (+ bias) for every output channel and tile of the tile rows `rows` of images
    /// `samples` (m as `transformInput` orders tiles), cropped to the image.
    static func transformOutput(
        _ m: UnsafePointer<Float>, bias: UnsafePointer<Float>?, samples: Range<Int>, o: Int, h: Int, w: Int, rows: Range<Int>,
        tw: Int, into y: UnsafeMutablePointer<Float>
    ) {
        let tiles = samples.count * rows.count * tw
        let stride = o * tiles
        Parallel.forRanges(samples.count * o, minChunk: 4) { r in
            for item in r {
                let sb = item / o, oc = item % o
                let yc = y + ((samples.lowerBound + sb) * o + oc) * h * w
                let bv = bias?[oc] ?? 0
                for ty in rows {
                    let rowTiles = m + oc * tiles + (sb * rows.count + ty - rows.lowerBound) * tw
                    let oy = 2 * ty
                    var tx = 0
                    // Eight tiles at a time while all their 16 output columns lie in the image: the
                    // same sums as below, each lane one tile; even and odd output columns interleaved.
                    while 2 * tx + 16 <= w {
                        let base = UnsafeRawPointer(rowTiles + tx)
                        @inline(__always) func load(_ i: Int, _ j: Int) -> SIMD8<Float> {
                            base.loadUnaligned(fromByteOffset: (4 * i + j) * stride * 4, as: SIMD8<Float>.self)
                        }
                        let q0 = (load(0, 0), load(0, 1), load(0, 2), load(0, 3))
                        let q1 = (load(1, 0), load(1, 1), load(1, 2), load(1, 3))
                        let q2 = (load(2, 0), load(2, 1), load(2, 2), load(2, 3))
                        let q3 = (load(3, 0), load(3, 1), load(3, 2), load(3, 3))
                        let s0 = (q0.0 + q1.0 + q2.0, q0.1 + q1.1 + q2.1, q0.2 + q1.2 + q2.2, q0.3 + q1.3 + q2.3)
                        let s1 = (q1.0 - q2.0 - q3.0, q1.1 - q2.1 - q3.1, q1.2 - q2.2 - q3.2, q1.3 - q2.3 - q3.3)
                        let b8 = SIMD8<Float>(repeating: bv)
                        var top = SIMD16<Float>()
                        top.evenHalf = s0.0 + s0.1 + s0.2 + b8
                        top.oddHalf = s0.1 - s0.2 - s0.3 + b8
                        UnsafeMutableRawPointer(yc + oy * w + 2 * tx).storeBytes(of: top, as: SIMD16<Float>.self)
                        if oy + 1 < h {
                            var bottom = SIMD16<Float>()
                            bottom.evenHalf = s1.0 + s1.1 + s1.2 + b8
                            bottom.oddHalf = s1.1 - s1.2 - s1.3 + b8
                            UnsafeMutableRawPointer(yc + (oy + 1) * w + 2 * tx).storeBytes(of: bottom, as: SIMD16<Float>.self)
                        }
                        tx += 8
                    }
                    while tx < tw {
                        let t = (sb * rows.count + ty - rows.lowerBound) * tw + tx
                        let base = m + oc * tiles + t
                        @inline(__always) func load(_ i: Int) -> SIMD4<Float> {
                            SIMD4<Float>(base[(4 * i) * stride], base[(4 * i + 1) * stride],
                                         base[(4 * i + 2) * stride], base[(4 * i + 3) * stride])
                        }
                        let q0 = load(0), q1 = load(1), q2 = load(2), q3 = load(3)
                        // A^T M: two rows; then A on the columns.
                        let s0 = q0 + q1 + q2, s1 = q1 - q2 - q3
                        let ox = 2 * tx
                        yc[oy * w + ox] = s0[0] + s0[1] + s0[2] + bv
                        if ox + 1 < w { yc[oy * w + ox + 1] = s0[1] - s0[2] - s0[3] + bv }
                        if oy + 1 < h {
                            yc[(oy + 1) * w + ox] = s1[0] + s1[1] + s1[2] + bv
                            if ox + 1 < w { yc[(oy + 1) * w + ox + 1] = s1[1] - s1[2] - s1[3] + bv }
                        }
                        tx += 1
                    }
                }
            }
        }
    }
}
