import Foundation
import TensorCore
import XCTest

/// Unit roundoff of Float32 (2^-24): the relative error bound of one correctly rounded operation.
let u32 = 0x1p-24

/// Set TENSORCORE_TESTS_VERBOSE=1 to print, per comparison, the max error and how much of the
/// tolerance it used.
let verbose = ProcessInfo.processInfo.environment["TENSORCORE_TESTS_VERBOSE"] != nil

/// SplitMix64: a tiny deterministic PRNG, so every run sees the same inputs.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform Float in [lo, hi).
    mutating func float(_ lo: Double = -1, _ hi: Double = 1) -> Float { Float(lo + (hi - lo) * unit()) }

    mutating func floats(_ n: Int, _ lo: Double = -1, _ hi: Double = 1) -> [Float] {
        (0..<n).map { _ in float(lo, hi) }
    }

    /// A tensor of uniform values in [lo, hi).
    mutating func tensor(_ shape: [Int], _ lo: Double = -1, _ hi: Double = 1) -> Tensor {
        Tensor(shape: shape, values: floats(Tensor.count(of: shape), lo, hi))
    }
}

/// The elements of a tensor widened to Double (the references work in Double).
func doubles(_ t: Tensor) -> [Double] { t.scalars.map(Double.init) }

/// Row-major multi-index of flat index `i` in `shape`, for failure messages.
func multiIndex(_ i: Int, _ shape: [Int]) -> [Int] {
    var rest = i
    var idx = [Int](repeating: 0, count: shape.count)
    for a in stride(from: shape.count - 1, through: 0, by: -1) where shape[a] > 0 {
        idx[a] = rest % shape[a]
        rest /= shape[a]
    }
    return idx
}

/// Summary of an element-wise comparison.
struct Comparison {
    var maxAbsError = 0.0
    /// Largest |a - b| / tolerance; at most 1 when every element passes.
    var worstRatio = 0.0
    var worstIndex = -1
}

/// Checks |actual - reference| <= atol_i + rtol * |reference| element-wise, where atol_i is
/// `atol` plus (when given) `atolPerElement[i]`. On failure reports the worst element (the one
/// that exceeds its tolerance by the largest factor) with its index, value and reference.
@discardableResult
func assertClose(
    _ actual: Tensor, _ reference: [Double], atol: Double, rtol: Double, atolPerElement: [Double]? = nil,
    _ label: String, file: StaticString = #filePath, line: UInt = #line
) -> Comparison {
    let a = actual.scalars
    var c = Comparison()
    guard a.count == reference.count else {
        XCTFail("\(label): \(a.count) elements, reference has \(reference.count)", file: file, line: line)
        return c
    }
    if let atolPerElement { precondition(atolPerElement.count == a.count) }
    for i in 0..<a.count {
        let ref = reference[i], got = Double(a[i])
        let err = abs(got - ref)
        let tol = atol + (atolPerElement?[i] ?? 0) + rtol * abs(ref)
        // NaN compares false everywhere: treat it as an infinite error.
        let ratio = err.isNaN || got.isNaN ? .infinity : (tol > 0 ? err / tol : (err == 0 ? 0 : .infinity))
        if err > c.maxAbsError || err.isNaN { c.maxAbsError = err.isNaN ? .infinity : err }
        if ratio > c.worstRatio || c.worstIndex < 0 {
            c.worstRatio = ratio
            c.worstIndex = i
        }
    }
    if verbose {
        let w = c.worstIndex
        print("[tolerance] \(label): max |err| \(c.maxAbsError), worst err/tol \(c.worstRatio)"
              + (w >= 0 ? " at \(multiIndex(w, actual.shape)): \(a[w]) vs \(reference[w])" : ""))
    }
    if c.worstRatio > 1 {
        let i = c.worstIndex
        let tol = atol + (atolPerElement?[i] ?? 0) + rtol * abs(reference[i])
        XCTFail(
            "\(label): worst element \(multiIndex(i, actual.shape)) (flat \(i)) of \(actual.shape) = \(a[i]), "
                + "reference \(reference[i]), |err| \(abs(Double(a[i]) - reference[i])) > tol \(tol) "
                + "(atol \(atol), rtol \(rtol)); max |err| \(c.maxAbsError)",
            file: file, line: line)
    }
    return c
}

/// Bit-exact comparison (for data-movement kernels, which must copy values unchanged).
func assertExact(_ actual: Tensor, _ reference: [Float], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    let a = actual.scalars
    guard a.count == reference.count else {
        XCTFail("\(label): \(a.count) elements, reference has \(reference.count)", file: file, line: line)
        return
    }
    if let i = (0..<a.count).first(where: { a[$0].bitPattern != reference[$0].bitPattern }) {
        XCTFail("\(label): first mismatch at \(multiIndex(i, actual.shape)) (flat \(i)) of \(actual.shape): \(a[i]) vs \(reference[i])",
                file: file, line: line)
    }
}
