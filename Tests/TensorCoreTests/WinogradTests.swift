import XCTest
@testable import TensorCore

/// Winograd F(2x2, 3x3) against the plain convolution reference. Its transforms add a few sums per
/// element, so the per-element bound is the direct convolution's float32 bound times 4.
final class WinogradTests: XCTestCase {
    func check(n: Int, c: Int, h: Int, w: Int, o: Int, bias: Bool, seed: UInt64, tileBudget: Int = Winograd3x3.tileBudget,
               line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let x = rng.tensor([n, c, h, w])
        let wt = rng.tensor([o, c, 3, 3])
        let b = bias ? rng.tensor([o]) : nil
        let y = Winograd3x3.forward(x, weight: wt, bias: b, transformed: nil, tileBudget: tileBudget)
        let (ref, bound, shape) = convReference(x, wt, b, stride: 1, padding: 1)
        XCTAssertEqual(y.shape, shape, line: line)
        guard y.shape == shape else { return }
        assertClose(y, ref, atol: 0, rtol: 1e-5, atolPerElement: bound.map { 4 * $0 },
                    "Winograd x[\(n),\(c),\(h),\(w)] o \(o) bias \(bias)", line: line)
    }

    func testOddAndEvenSizesBatchesAndChannels() {
        check(n: 1, c: 3, h: 7, w: 5, o: 5, bias: true, seed: 70)
        check(n: 3, c: 17, h: 9, w: 9, o: 13, bias: true, seed: 71)
        check(n: 2, c: 5, h: 8, w: 6, o: 3, bias: false, seed: 72)
        check(n: 1, c: 4, h: 1, w: 1, o: 2, bias: true, seed: 73)
        check(n: 1, c: 2, h: 2, w: 3, o: 2, bias: false, seed: 74)
        check(n: 2, c: 16, h: 33, w: 31, o: 17, bias: true, seed: 75)
    }

    /// Bands of tile rows per sample: one tile row at a time (a budget below one row's), a few
    /// rows with a short last band, odd sizes, 8-tile rows (the vector path) and their remainder.
    func testBandsOfTileRows() {
        check(n: 1, c: 3, h: 7, w: 5, o: 5, bias: true, seed: 77, tileBudget: 1)
        check(n: 2, c: 5, h: 9, w: 9, o: 4, bias: true, seed: 78, tileBudget: 16 * 9 * 5 * 2)
        check(n: 3, c: 4, h: 20, w: 37, o: 6, bias: false, seed: 79, tileBudget: 16 * 10 * 19 * 3)
        check(n: 1, c: 16, h: 33, w: 34, o: 17, bias: true, seed: 80, tileBudget: 16 * 33 * 17 * 4)
    }

    func testConvDispatchesLargePlanesToWinograd() {
        // A 32x32 plane with 16 channels takes the Winograd path inside Conv2d.forward.
        XCTAssertTrue(Winograd3x3.applies(channels: 16, outChannels: 16, plane: 32 * 32))
        XCTAssertFalse(Winograd3x3.applies(channels: 16, outChannels: 16, plane: 16 * 16))
        var rng = SplitMix64(seed: 76)
        let x = rng.tensor([2, 16, 32, 32]), wt = rng.tensor([16, 16, 3, 3]), b = rng.tensor([16])
        let y = Conv2d.forward(x, weight: wt, bias: b, stride: 1, padding: 1)
        let (ref, bound, _) = convReference(x, wt, b, stride: 1, padding: 1)
        assertClose(y, ref, atol: 0, rtol: 1e-5, atolPerElement: bound.map { 4 * $0 }, "Conv2d 32x32 via Winograd")
    }
}
