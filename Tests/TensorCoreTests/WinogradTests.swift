import XCTest
@testable import TensorCore

/// Winograd F(2x2, 3x3) against the plain convolution reference. Its transforms add a few sums per
/// element, so the per-element bound is the direct convolution's float32 bound times 4.
final class WinogradTests: XCTestCase {
    func check(n: Int, c: Int, h: Int, w: Int, o: Int, bias: Bool, seed: UInt64, line: UInt = #line) {
        var rng = SplitMix64(seed: seed)
        let x = rng.tensor([n, c, h, w])
        let wt = rng.tensor([o, c, 3, 3])
        let b = bias ? rng.tensor([o]) : nil
        let y = Winograd3x3.forward(x, weight: wt, bias: b)
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
