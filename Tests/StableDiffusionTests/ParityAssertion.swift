import Foundation
import TensorCore
import XCTest

/// The parity check of the text encoder and VAE against their float64 references: relative L2
/// error at most `relativeL2`, and every element within 1e-5 absolute + 1e-4 relative. Prints the
/// figures, names the worst element in failures, and returns the relative L2 error.
@discardableResult
func assertParity(_ actual: Tensor, _ expected: Tensor, _ what: String, relativeL2: Double = 1e-5,
                  file: StaticString = #filePath, line: UInt = #line) -> Double {
    XCTAssertEqual(actual.shape, expected.shape, "\(what): shape", file: file, line: line)
    guard actual.shape == expected.shape else { return .infinity }
    var diff = 0.0, norm = 0.0, worst = 0, worstRatio = -1.0
    for i in 0..<actual.count {
        let a = Double(actual.data[i]), e = Double(expected.data[i])
        diff += (a - e) * (a - e)
        norm += e * e
        let ratio = Swift.abs(a - e) / (1e-5 + 1e-4 * Swift.abs(e))
        if ratio > worstRatio { (worstRatio, worst) = (ratio, i) }
    }
    let rel = (diff / max(norm, 1e-30)).squareRoot()
    let message = String(format: "%@: relative L2 error %.3g; worst element %d: %.8g vs reference %.8g (%.3g of the element tolerance)",
                         what, rel, worst, actual.data[worst], expected.data[worst], worstRatio)
    print(message)
    XCTAssertLessThanOrEqual(rel, relativeL2, message, file: file, line: line)
    XCTAssertLessThanOrEqual(worstRatio, 1, message, file: file, line: line)
    return rel
}

/// The error of type `E` that `body` throws; a test failure (and nil) when it succeeds or throws
/// another type.
func expectError<E: Error>(_ type: E.Type, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                           _ body: () throws -> Any) -> E? {
    do {
        _ = try body()
        XCTFail("\(what): expected an error, got success", file: file, line: line)
    } catch let e as E {
        return e
    } catch {
        XCTFail("\(what): expected a \(E.self), got \(Swift.type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}
