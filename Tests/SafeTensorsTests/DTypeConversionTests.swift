import XCTest
@testable import SafeTensors

/// Bit-level checks of the F32/F16/BF16 conversions against Swift's `Float16` and against an
/// independent Double-arithmetic reference for BF16.
final class DTypeConversionTests: XCTestCase {
    // MARK: helpers

    func convert<S: FixedWidthInteger, D: FixedWidthInteger>(
        _ src: [S], _ from: DType, _ to: DType, as: D.Type
    ) -> [D] {
        var out = [D](repeating: 0, count: src.count)
        src.withUnsafeBytes { s in
            out.withUnsafeMutableBytes { d in DTypeConversion.convert(s, from: from, to: to, into: d) }
        }
        return out
    }

    func f16ToF32(_ bits: [UInt16]) -> [UInt32] { convert(bits, .f16, .f32, as: UInt32.self) }
    func bf16ToF32(_ bits: [UInt16]) -> [UInt32] { convert(bits, .bf16, .f32, as: UInt32.self) }
    func f32ToF16(_ bits: [UInt32]) -> [UInt16] { convert(bits, .f32, .f16, as: UInt16.self) }
    func f32ToBF16(_ bits: [UInt32]) -> [UInt16] { convert(bits, .f32, .bf16, as: UInt16.self) }

    static let allHalves: [UInt16] = (0...UInt16.max).map { $0 }

    static func isNaN16(_ h: UInt16) -> Bool { h & 0x7FFF > 0x7C00 }
    static func isNaNBF16(_ h: UInt16) -> Bool { h & 0x7FFF > 0x7F80 }

    /// Reference F32 -> BF16, round to nearest even, computed with Double arithmetic: pick the
    /// nearer of the two BF16 neighbours (truncation and truncation + 1 ulp); on a tie the even one.
    static func referenceBF16(_ u: UInt32) -> UInt16 {
        let x = Float(bitPattern: u)
        if x.isNaN { return 0x7FC0 }
        let sign = u & 0x8000_0000
        let mag = u & 0x7FFF_FFFF
        let lo = mag & 0xFFFF_0000
        let hi = lo + 0x1_0000
        func value(_ m: UInt32) -> Double {
            // 0x7F800000 stands for 2^128, the next step after the largest finite value.
            m == 0x7F80_0000 ? 0x1p128 : Double(Float(bitPattern: m))
        }
        if mag >= 0x7F80_0000 { return UInt16(u >> 16) }  // infinity
        let ax = Double(Float(bitPattern: mag))
        let dLo = ax - value(lo), dHi = value(hi) - ax
        let pick: UInt32
        if dLo < dHi { pick = lo } else if dHi < dLo { pick = hi } else { pick = (lo >> 16) & 1 == 0 ? lo : hi }
        return UInt16((pick | sign) >> 16)
    }

    /// A fixed-seed generator (SplitMix64), so failures reproduce.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    // MARK: F16 -> F32

    func testF16ToF32ExhaustiveAgainstFloat16() {
        let out = f16ToF32(Self.allHalves)
        var mismatches = 0
        for h in Self.allHalves {
            let got = Float(bitPattern: out[Int(h)])
            let want = Float(Float16(bitPattern: h))
            if want.isNaN {
                if !(got.isNaN && got.sign == want.sign) { mismatches += 1 }
            } else if got.bitPattern != want.bitPattern {
                mismatches += 1
                if mismatches < 5 { XCTFail("F16 0x\(String(h, radix: 16)): got \(got), want \(want)") }
            }
        }
        XCTAssertEqual(mismatches, 0)
    }

    // MARK: F32 -> F16

    /// Compares against `Float16(Float)`; NaN inputs must give a NaN with the sign kept.
    func checkF32ToF16(_ inputs: [UInt32], file: StaticString = #filePath, line: UInt = #line) {
        let out = f32ToF16(inputs)
        var mismatches = 0
        for (i, u) in inputs.enumerated() {
            let x = Float(bitPattern: u)
            let got = out[i]
            if x.isNaN {
                if !(Self.isNaN16(got) && (got & 0x8000 != 0) == (u & 0x8000_0000 != 0)) { mismatches += 1 }
                continue
            }
            let want = Float16(x).bitPattern
            if got != want {
                mismatches += 1
                if mismatches < 5 {
                    XCTFail("F32 \(x) (0x\(String(u, radix: 16))): got 0x\(String(got, radix: 16)), want 0x\(String(want, radix: 16))",
                            file: file, line: line)
                }
            }
        }
        XCTAssertEqual(mismatches, 0, "of \(inputs.count) inputs", file: file, line: line)
    }

    func testF32ToF16SpecialValues() {
        var values: [Float] = [0, 1, 2, 0.5, 1.0 / 3, .pi, .infinity, .nan, .signalingNaN, .greatestFiniteMagnitude,
                               .leastNormalMagnitude, .leastNonzeroMagnitude, .ulpOfOne]
        values += values.map { -$0 }
        var bits = values.map(\.bitPattern)
        bits += [0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FA0_0000]
        checkF32ToF16(bits)
        // Spot checks with known answers.
        XCTAssertEqual(f32ToF16([Float(1).bitPattern, Float(-2).bitPattern, Float.infinity.bitPattern]), [0x3C00, 0xC000, 0x7C00])
        XCTAssertEqual(f32ToF16([Float.nan.bitPattern])[0] & 0x7FFF, 0x7E00)
        XCTAssertEqual(f32ToF16([(-Float.nan).bitPattern])[0], 0xFE00)
    }

    func testF32ToF16Boundaries() {
        var values: [Float] = [
            65504, 65504.5, 65519, 65519.996, 65520, 65520.004, 65535, 65536, 1e5, 1e38,  // max, overflow to inf
            0x1p-14, 0x1p-14 * (1 - 0x1p-11), 0x1p-14 * (1 - 0x1p-10),                   // normal/subnormal edge
            0x1p-24, 0x1p-25, 0x1p-25 * (1 + 0x1p-23), 0x1p-25 * (1 - 0x1p-24), 0x1p-26,  // smallest subnormal, halfway
            0x1.8p-24, 0x1.4p-24, 0x1.cp-24, 0x1p-23 * 1.5,                               // subnormal halfway cases
            1 + 0x1p-11, 1 + 0x1p-11 + 0x1p-23, 1 + 3 * 0x1p-11, 1 + 0x1p-10,              // halfway to even at 1
            2048 + 1, 2048 + 3, 4096 + 2, 4096 + 6, 0.1, 0.2, 0.3, 1e-8, 6e-8, 3e-8,
        ]
        values += values.map { -$0 }
        var bits = values.map(\.bitPattern)
        // Every F32 within ±64 ulps of each F16 value and of each midpoint between neighbours.
        for h in stride(from: 0, through: 0x7C00, by: 1) {
            let f = Float(Float16(bitPattern: UInt16(h))).bitPattern
            for d: Int32 in [-64, -2, -1, 0, 1, 2, 64] where h < 0x7C00 {
                bits.append(UInt32(bitPattern: Int32(bitPattern: f) &+ d))
            }
            if h < 0x7C00 {
                let next = Float(Float16(bitPattern: UInt16(h + 1)))
                let mid = (Double(Float(bitPattern: f)) + Double(next)) / 2
                let m = Float(mid).bitPattern  // exact: F16 midpoints are representable in F32
                bits += [m &- 1, m, m &+ 1].flatMap { [$0, $0 | 0x8000_0000] }
            }
        }
        checkF32ToF16(bits)
    }

    func testF32ToF16RandomBitPatterns() {
        var rng = SplitMix64(state: 0x5AFE_7E25)
        var bits = (0..<3_000_000).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        // Plus a stride through the whole F32 space (every 4099th pattern, about 1M values).
        bits += stride(from: UInt64(0), to: 1 << 32, by: 4099).map { UInt32($0) }
        checkF32ToF16(bits)
    }

    // MARK: F32 -> BF16

    func checkF32ToBF16(_ inputs: [UInt32], file: StaticString = #filePath, line: UInt = #line) {
        let out = f32ToBF16(inputs)
        var mismatches = 0
        for (i, u) in inputs.enumerated() where out[i] != Self.referenceBF16(u) {
            mismatches += 1
            if mismatches < 5 {
                XCTFail("F32 0x\(String(u, radix: 16)): got 0x\(String(out[i], radix: 16)), want 0x\(String(Self.referenceBF16(u), radix: 16))",
                        file: file, line: line)
            }
        }
        XCTAssertEqual(mismatches, 0, "of \(inputs.count) inputs", file: file, line: line)
    }

    func testF32ToBF16HalfwayCases() {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_8000, 0x3F80),  // 1 + half ulp: tie, even is down
            (0x3F81_8000, 0x3F82),  // odd + half: tie, even is up
            (0x3F80_8001, 0x3F81),  // just above half: up
            (0x3F80_7FFF, 0x3F80),  // just below half: down
            (0xBF80_8000, 0xBF80), (0xBF81_8000, 0xBF82),
            (0x7F7F_8000, 0x7F80),  // max finite + half ulp: tie to even rounds to infinity
            (0x7F7F_7FFF, 0x7F7F),  // below half: stays max finite
            (0x7F7E_8000, 0x7F7E),
            (0x0000_8000, 0x0000),  // subnormal tie to even (0)
            (0x0001_8000, 0x0002),
            (0x0000_8001, 0x0001),
            (0x8000_8000, 0x8000),
            (0x3FFF_8000, 0x4000),  // mantissa carry into the exponent
            (0x7F80_0000, 0x7F80), (0xFF80_0000, 0xFF80),  // infinities
            (0x0000_0000, 0x0000), (0x8000_0000, 0x8000),
        ]
        XCTAssertEqual(f32ToBF16(cases.map(\.0)), cases.map(\.1))
        checkF32ToBF16(cases.map(\.0))
    }

    func testF32ToBF16NaNIsCanonical() {
        let nans: [UInt32] = [0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF, 0xFFFF_FFFF,
                              0x7F80_8000, 0x7FBF_FFFF, Float.signalingNaN.bitPattern]
        XCTAssertEqual(f32ToBF16(nans), Array(repeating: 0x7FC0, count: nans.count))
    }

    func testF32ToBF16RandomAgainstDoubleReference() {
        var rng = SplitMix64(state: 0xBF16)
        var bits = (0..<2_000_000).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        // Exact ties and near-ties at random positions.
        bits += (0..<200_000).flatMap { _ -> [UInt32] in
            let b = UInt32(truncatingIfNeeded: rng.next()) & 0xFFFF_0000
            return [b | 0x8000, b | 0x7FFF, b | 0x8001]
        }
        checkF32ToBF16(bits)
    }

    func testBF16ToF32IsExact() {
        let out = bf16ToF32(Self.allHalves)
        for h in Self.allHalves { XCTAssertEqual(out[Int(h)], UInt32(h) << 16) }
        // And back: every non-NaN BF16 survives the round trip.
        let back = f32ToBF16(out)
        for h in Self.allHalves where !Self.isNaNBF16(h) { XCTAssertEqual(back[Int(h)], h) }
    }

    func testF16RoundTripThroughF32() {
        let back = f32ToF16(f16ToF32(Self.allHalves))
        for h in Self.allHalves {
            if Self.isNaN16(h) {
                XCTAssertTrue(Self.isNaN16(back[Int(h)]))
                XCTAssertEqual(back[Int(h)] & 0x8000, h & 0x8000)
            } else {
                XCTAssertEqual(back[Int(h)], h)
            }
        }
    }

    // MARK: half to half (via F32)

    func testBF16ToF16AndF16ToBF16GoThroughF32() {
        let direct = convert(Self.allHalves, .bf16, .f16, as: UInt16.self)
        let twoStep = f32ToF16(bf16ToF32(Self.allHalves))
        for h in Self.allHalves {
            if Self.isNaNBF16(h) { XCTAssertTrue(Self.isNaN16(direct[Int(h)])) } else { XCTAssertEqual(direct[Int(h)], twoStep[Int(h)]) }
        }
        let direct2 = convert(Self.allHalves, .f16, .bf16, as: UInt16.self)
        let twoStep2 = f32ToBF16(f16ToF32(Self.allHalves))
        XCTAssertEqual(direct2, twoStep2)
        for h in Self.allHalves where Self.isNaN16(h) { XCTAssertEqual(direct2[Int(h)], 0x7FC0) }
        // Known values: 1.0, 65504 (F16 max) and F16's smallest subnormal in BF16.
        XCTAssertEqual(convert([0x3C00, 0x7BFF, 0x0001] as [UInt16], .f16, .bf16, as: UInt16.self), [0x3F80, 0x4780, 0x3380])
        // BF16 values beyond F16's range become infinity; tiny ones zero.
        XCTAssertEqual(convert([0x4780, 0x4800, 0x0001, 0xC800] as [UInt16], .bf16, .f16, as: UInt16.self), [0x7C00, 0x7C00, 0x0000, 0xFC00])
    }

    func testSameDTypeIsACopy() {
        let bits: [UInt16] = [0x7E01, 0xFFFF, 0x1234]
        XCTAssertEqual(convert(bits, .f16, .f16, as: UInt16.self), bits)
        XCTAssertEqual(convert(bits, .bf16, .bf16, as: UInt16.self), bits)
        XCTAssertEqual(convert([0x7F80_0001] as [UInt32], .f32, .f32, as: UInt32.self), [0x7F80_0001])
    }

    /// Tensor data in a file need not be aligned; conversions from and to odd addresses give
    /// the same results (and more than one block of them).
    func testMisalignedBuffers() {
        var rng = SplitMix64(state: 7)
        let n = 10_000
        let f32 = (0..<n).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        let f16 = (0..<n).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
        for (from, to, src) in [(DType.f32, DType.f16, le(f32)), (.f32, .bf16, le(f32)), (.f16, .f32, le(f16)),
                                (.bf16, .f32, le(f16)), (.f16, .bf16, le(f16)), (.bf16, .f16, le(f16))] {
            let outBytes = n * to.byteSize
            var aligned = [UInt8](repeating: 0, count: outBytes)
            src.withUnsafeBytes { s in aligned.withUnsafeMutableBytes { DTypeConversion.convert(s, from: from, to: to, into: $0) } }
            for (so, dOff) in [(1, 0), (0, 1), (3, 1), (2, 3)] {
                let s = UnsafeMutableRawBufferPointer.allocate(byteCount: src.count + 8, alignment: 16)
                let d = UnsafeMutableRawBufferPointer.allocate(byteCount: outBytes + 8, alignment: 16)
                defer { s.deallocate(); d.deallocate() }
                UnsafeMutableRawBufferPointer(rebasing: s[so..<(so + src.count)]).copyBytes(from: src)
                DTypeConversion.convert(UnsafeRawBufferPointer(rebasing: s[so..<(so + src.count)]), from: from, to: to,
                                        into: UnsafeMutableRawBufferPointer(rebasing: d[dOff..<(dOff + outBytes)]))
                XCTAssertEqual(Array(d[dOff..<(dOff + outBytes)]), aligned, "\(from)->\(to) offsets \(so),\(dOff)")
            }
        }
    }

    func testEmptyBuffers() {
        XCTAssertEqual(convert([] as [UInt16], .f16, .f32, as: UInt32.self), [])
        XCTAssertEqual(convert([] as [UInt32], .f32, .bf16, as: UInt16.self), [])
    }
}
