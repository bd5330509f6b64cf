import TensorCore
import XCTest

/// Pad2d: zeros around the input, and the gradient is the inner window.
final class PaddingTests: XCTestCase {
    func testForwardAndBackward() {
        let x = Tensor(shape: [1, 2, 2, 3], values: (1...12).map(Float.init))
        let y = Pad2d.forward(x, top: 0, bottom: 1, left: 2, right: 1)
        XCTAssertEqual(y.shape, [1, 2, 3, 6])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: y.data, count: 18)),
                       [0, 0, 1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(y.data[18 + 2], 7)
        XCTAssertEqual(y.data[18 + 6 + 4], 12)
        let g = Pad2d.backward(y, top: 0, bottom: 1, left: 2, right: 1)
        XCTAssertEqual(g.shape, x.shape)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: g.data, count: 12)), (1...12).map(Float.init))

        let tape = Tape()
        let v = tape.input(x)
        let p = tape.pad2d(v, bottom: 1, right: 1)
        XCTAssertEqual(p.shape, [1, 2, 3, 4])
        tape.backward([(p, Tensor(repeating: 1, shape: [1, 2, 3, 4]))])
        let dx = tape.gradient(of: v)
        XCTAssertEqual(dx.map { Array(UnsafeBufferPointer(start: $0.data, count: 12)) }, [Float](repeating: 1, count: 12))
    }
}
