import Foundation
import TensorCore
import XCTest

final class ResamplingTests: XCTestCase {
    func testUpsample2x() {
        var rng = SplitMix64(seed: 500)
        for shape in [[1, 3, 7, 5], [3, 5, 9, 9], [1, 1, 1, 1], [3, 13, 1, 7], [1, 17, 33, 3], [2, 3, 4, 19]] {
            let x = rng.tensor(shape)
            let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
            let xs = x.scalars
            var ref = [Float]()
            for b in 0..<n {
                for ch in 0..<c {
                    for oy in 0..<(2 * h) {
                        for ox in 0..<(2 * w) { ref.append(xs[((b * c + ch) * h + oy / 2) * w + ox / 2]) }
                    }
                }
            }
            let y = Upsample2x.forward(x)
            XCTAssertEqual(y.shape, [n, c, 2 * h, 2 * w])
            assertExact(y, ref, "Upsample2x \(shape)")
        }
    }

    func testConcatChannels() {
        var rng = SplitMix64(seed: 501)
        for (n, c1, c2, spatial) in [(1, 3, 5, [7, 5]), (3, 5, 13, [9, 9]), (3, 1, 1, [1, 1]), (3, 17, 3, [7]), (2, 4, 6, [3, 2, 2])] {
            let a = rng.tensor([n, c1] + spatial), b = rng.tensor([n, c2] + spatial)
            let s = spatial.reduce(1, *)
            let av = a.scalars, bv = b.scalars
            var ref = [Float]()
            for i in 0..<n {
                for ch in 0..<(c1 + c2) {
                    for p in 0..<s { ref.append(ch < c1 ? av[(i * c1 + ch) * s + p] : bv[(i * c2 + ch - c1) * s + p]) }
                }
            }
            let y = ConcatChannels.forward(a, b)
            XCTAssertEqual(y.shape, [n, c1 + c2] + spatial)
            assertExact(y, ref, "ConcatChannels \(n) \(c1)+\(c2) \(spatial)")

            // leading(c1) undoes the concatenation; leading(all) copies.
            assertExact(ConcatChannels.leading(y, channels: c1), av, "leading \(c1) of concat")
            XCTAssertEqual(ConcatChannels.leading(y, channels: c1).shape, a.shape)
            assertExact(ConcatChannels.leading(y, channels: c1 + c2), y.scalars, "leading all")
        }
    }

    func testLeading() {
        var rng = SplitMix64(seed: 502)
        for (shape, keep) in [([3, 13, 7, 5], 5), ([1, 5, 9, 9], 1), ([3, 17, 3], 16), ([3, 4, 2, 2], 0)] {
            let x = rng.tensor(shape)
            let xs = x.scalars, n = shape[0], c = shape[1], s = x.count / (n * c)
            var ref = [Float]()
            for i in 0..<n {
                for ch in 0..<keep {
                    for p in 0..<s { ref.append(xs[(i * c + ch) * s + p]) }
                }
            }
            let y = ConcatChannels.leading(x, channels: keep)
            var shape2 = shape
            shape2[1] = keep
            XCTAssertEqual(y.shape, shape2)
            assertExact(y, ref, "leading \(keep) of \(shape)")
        }
    }

    func testTransposeRoundTrips() {
        var rng = SplitMix64(seed: 503)
        // Sizes below, at and across the 32x32 tile edge.
        for (n, c, h, w) in [(1, 3, 7, 5), (3, 5, 9, 9), (1, 1, 1, 1), (3, 33, 7, 5), (1, 13, 8, 4), (2, 65, 9, 7), (1, 320, 1, 1), (1, 1, 33, 33)] {
            let x = rng.tensor([n, c, h, w])
            let xs = x.scalars, s = h * w
            var ref = [Float]()
            for b in 0..<n {
                for p in 0..<s {
                    for ch in 0..<c { ref.append(xs[(b * c + ch) * s + p]) }
                }
            }
            let t = Transpose.channelsLast(x)
            XCTAssertEqual(t.shape, [n, s, c])
            assertExact(t, ref, "channelsLast \([n, c, h, w])")
            let back = Transpose.channelsFirst(t, height: h, width: w)
            XCTAssertEqual(back.shape, [n, c, h, w])
            assertExact(back, xs, "channelsFirst(channelsLast) \([n, c, h, w])")

            // And the other way: tokens -> map -> tokens.
            let tokens = rng.tensor([n, s, c])
            let map = Transpose.channelsFirst(tokens, height: h, width: w)
            let tv = tokens.scalars
            var mref = [Float]()
            for b in 0..<n {
                for ch in 0..<c {
                    for p in 0..<s { mref.append(tv[(b * s + p) * c + ch]) }
                }
            }
            assertExact(map, mref, "channelsFirst \([n, s, c])")
            assertExact(Transpose.channelsLast(map), tv, "channelsLast(channelsFirst) \([n, s, c])")
        }
    }
}

final class ElementwiseTests: XCTestCase {
    let shapes: [[Int]] = [[1], [7], [3, 5, 7, 5], [1, 13, 9, 9], [3, 17, 33], [2, 40000]]

    func testAdd() {
        var rng = SplitMix64(seed: 510)
        for shape in shapes {
            let a = rng.tensor(shape), b = rng.tensor(shape, -100, 100)
            // float32 a + b is correctly rounded, so the kernel must match it bit for bit.
            assertExact(Elementwise.add(a, b), zip(a.scalars, b.scalars).map { $0 + $1 }, "add \(shape)")
        }
    }

    func testAddPerChannel() {
        var rng = SplitMix64(seed: 511)
        for shape in [[1, 3, 7, 5], [3, 5, 9, 9], [3, 13, 1], [1, 17, 33], [3, 4]] {
            let x = rng.tensor(shape)
            let n = shape[0], c = shape[1], s = x.count / (n * c)
            let b = rng.tensor([n, c], -10, 10)
            let xs = x.scalars, bs = b.scalars
            let ref = (0..<x.count).map { xs[$0] + bs[$0 / s] }
            let y = Elementwise.addPerChannel(x, b)
            XCTAssertEqual(y.shape, shape)
            assertExact(y, ref, "addPerChannel \(shape)")
        }
    }

    func testBlend() {
        var rng = SplitMix64(seed: 512)
        for shape in [[3, 5, 7, 5], [1, 13, 9, 9], [5, 17], [2, 1]] {
            let a = rng.tensor(shape, -50, 50), b = rng.tensor(shape, -50, 50)
            let n = shape[0], per = a.count / n
            let mix: [Float] = (0..<n).map { _ in rng.float(0, 1) }
            let av = doubles(a), bv = doubles(b)
            var ref = [Double](), bound = [Double]()
            for i in 0..<a.count {
                let m = Double(mix[i / per])
                ref.append((1 - m) * av[i] + m * bv[i])
                // (1 - m), two products and a sum, each rounded once.
                bound.append(3 * u32 * ((1 - m) * abs(av[i]) + m * abs(bv[i])) + 2 * u32 * abs(m * av[i]))
            }
            assertClose(Elementwise.blend(a, b, mix: mix), ref, atol: 0, rtol: u32, atolPerElement: bound, "blend \(shape)")
        }
    }

    func testBlendEndpointsAreExact() {
        var rng = SplitMix64(seed: 513)
        let shape = [3, 13, 7, 5]
        let a = rng.tensor(shape, -1e3, 1e3), b = rng.tensor(shape, -1e-3, 1e-3)
        assertExact(Elementwise.blend(a, b, mix: [0, 0, 0]), a.scalars, "blend m = 0")
        assertExact(Elementwise.blend(a, b, mix: [1, 1, 1]), b.scalars, "blend m = 1")
        // Mixed per sample: sample 0 takes a, 1 takes b, 2 takes a.
        let per = a.count / 3, av = a.scalars, bv = b.scalars
        let ref = (0..<a.count).map { $0 / per == 1 ? bv[$0] : av[$0] }
        assertExact(Elementwise.blend(a, b, mix: [0, 1, 0]), ref, "blend m = [0, 1, 0]")
    }

    func testAddScalarAndScale() {
        var rng = SplitMix64(seed: 514)
        for shape in shapes {
            let x = rng.tensor(shape, -20, 20)
            let xs = x.scalars
            for s: Float in [0, 1, -2.5, 0.1, 1e-3] {
                assertExact(Elementwise.addScalar(x, s), xs.map { $0 + s }, "addScalar \(s) \(shape)")
                assertExact(Elementwise.scale(x, s), xs.map { $0 * s }, "scale \(s) \(shape)")
            }
        }
    }
}

final class TimestepEmbeddingTests: XCTestCase {
    /// diffusers get_timestep_embedding, written out in Double:
    /// half = dim/2, f_j = exp(-ln(maxPeriod) j / (half - shift)), a = t f_j,
    /// [sin a, cos a] (or [cos a, sin a] with flip_sin_to_cos), odd dim zero-padded at the end.
    func reference(_ ts: [Float], dim: Int, flip: Bool, shift: Double, maxPeriod: Double = 10000) -> [Double] {
        let half = dim / 2
        var out = [Double]()
        for t in ts {
            var sinPart = [Double](), cosPart = [Double]()
            for j in 0..<half {
                let freq = exp(-log(maxPeriod) * Double(j) / (Double(half) - shift))
                let arg = Double(t) * freq
                sinPart.append(sin(arg))
                cosPart.append(cos(arg))
            }
            out += flip ? cosPart + sinPart : sinPart + cosPart
            if dim % 2 == 1 { out.append(0) }
        }
        return out
    }

    func testAgainstReference() {
        let ts: [Float] = [0, 1, 999, 500.5]
        for dim in [320, 8, 13, 7, 1, 2] {
            for flip in [true, false] {
                for shift in [0.0, 1.0] where !(shift == 1 && dim / 2 == 1) {  // half - shift = 0 is undefined
                    let y = TimestepEmbedding.sinusoidal(ts, dim: dim, flipSinToCos: flip, freqShift: Float(shift))
                    XCTAssertEqual(y.shape, [ts.count, dim])
                    // Computed in Double, so only the final rounding to float32 remains (|v| <= 1).
                    assertClose(y, reference(ts, dim: dim, flip: flip, shift: shift), atol: 1e-7, rtol: 0,
                                "timestep dim \(dim) flip \(flip) shift \(shift)")
                    if dim % 2 == 1 {
                        for i in 0..<ts.count { XCTAssertEqual(y.data[i * dim + dim - 1].bitPattern, 0, "odd padding") }
                    }
                }
            }
        }
    }

    func testKnownValues() {
        // t = 0: sin 0 = 0, cos 0 = 1 exactly; first frequency is 1, so column 0 is sin t / cos t.
        let y = TimestepEmbedding.sinusoidal([0, 1], dim: 6, flipSinToCos: false, freqShift: 1)
        XCTAssertEqual(Array(y.scalars[0..<6]), [0, 0, 0, 1, 1, 1])
        XCTAssertEqual(y.data[6], Float(sin(1.0)))
        XCTAssertEqual(y.data[9], Float(cos(1.0)))
        let f = TimestepEmbedding.sinusoidal([0], dim: 5, flipSinToCos: true, freqShift: 0)
        XCTAssertEqual(f.scalars, [1, 1, 0, 0, 0])
        // Custom max period.
        let p = TimestepEmbedding.sinusoidal([3], dim: 4, flipSinToCos: false, freqShift: 0, maxPeriod: 100)
        assertClose(p, [sin(3), sin(0.3), cos(3), cos(0.3)], atol: 1e-7, rtol: 0, "maxPeriod 100")
    }
}

final class ParallelTests: XCTestCase {
    final class Recorder: @unchecked Sendable {
        let lock = NSLock()
        var ranges: [Range<Int>] = []
        func add(_ r: Range<Int>) { lock.lock(); ranges.append(r); lock.unlock() }
    }

    func testForRangesCoversEachIndexOnce() {
        for count in [0, 1, 7, 8, 1000, 1001] {
            for minChunk in [-1, 0, 1, 2, 3, 7, 64, 999, 1000, 5000] {
                let rec = Recorder()
                let hits = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
                hits.initialize(repeating: 0, count: max(count, 1))
                defer { hits.deallocate() }
                Parallel.forRanges(count, minChunk: minChunk) { r in
                    rec.add(r)
                    for i in r { hits[i] += 1 }  // ranges are disjoint, so no two threads share an index
                }
                let label = "count \(count) minChunk \(minChunk)"
                for i in 0..<count where hits[i] != 1 { XCTFail("\(label): index \(i) visited \(hits[i]) times"); break }
                let sorted = rec.ranges.sorted { $0.lowerBound < $1.lowerBound }
                XCTAssertTrue(sorted.allSatisfy { !$0.isEmpty }, "\(label): empty range in \(sorted)")
                var next = 0
                for r in sorted {
                    XCTAssertEqual(r.lowerBound, next, "\(label): ranges \(sorted)")
                    next = r.upperBound
                }
                XCTAssertEqual(next, count, "\(label): ranges \(sorted)")
                XCTAssertEqual(sorted.count, rec.ranges.count)
                XCTAssertLessThanOrEqual(rec.ranges.count, max(Parallel.workers, count == 0 ? 0 : 1), label)
                if count > 0 {
                    XCTAssertLessThanOrEqual(rec.ranges.count, max(1, count / max(minChunk, 1)), "\(label): too many chunks")
                }
            }
        }
    }

    /// The default minChunk (1) with a large count splits across all workers when there are several.
    func testDefaultSplitsAcrossWorkers() {
        let rec = Recorder()
        Parallel.forRanges(1000) { rec.add($0) }
        XCTAssertEqual(rec.ranges.count, min(Parallel.workers, 1000))
        XCTAssertEqual(rec.ranges.map(\.count).reduce(0, +), 1000)
    }
}
