import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// Paths of the fixtures under Tests/Fixtures (see its README).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    // tiny-sd2
    static var sd2Diffusers: String { path("tiny-sd2/diffusers") }
    static var sd2DiffusersWeights: String { path("tiny-sd2/diffusers/diffusion_pytorch_model.safetensors") }
    static var sd2Config: String { path("tiny-sd2/diffusers/config.json") }
    static var sd2DiffusersFP16: String { path("tiny-sd2/diffusers-fp16") }
    static var sd2Sharded: String { path("tiny-sd2/sharded") }
    static var sd2Pipeline: String { path("tiny-sd2/pipeline") }
    static var sd2Original: String { path("tiny-sd2/original.safetensors") }
    static var sd2OriginalFP16: String { path("tiny-sd2/original-fp16.safetensors") }
    static var sd2OriginalBF16: String { path("tiny-sd2/original-bf16.safetensors") }
    static var sd2OriginalEMA: String { path("tiny-sd2/original-ema.safetensors") }
    static var sd2EMADiffusers: String { path("tiny-sd2/ema-diffusers.safetensors") }
    // tiny-sd1
    static var sd1Config: String { path("tiny-sd1/config.json") }
    static var sd1Diffusers: String { path("tiny-sd1/diffusers.safetensors") }
    static var sd1Original: String { path("tiny-sd1/original.safetensors") }

    static func sd2ConfigValue() throws -> UNetConfig {
        try UNetConfig(diffusersJSON: Data(contentsOf: URL(fileURLWithPath: sd2Config)), source: sd2Config)
    }
    static func sd1ConfigValue() throws -> UNetConfig {
        try UNetConfig(diffusersJSON: Data(contentsOf: URL(fileURLWithPath: sd1Config)), source: sd1Config)
    }

    /// Load options with a config.json (needed for the tiny original-layout files).
    static func options(config: String? = nil, ema: Bool = false, variant: String? = nil, allowUnused: Bool = false) -> LoadOptions {
        var o = LoadOptions()
        o.configPath = config
        o.ema = ema
        o.variant = variant
        o.allowUnused = allowUnused
        return o
    }
}

/// A temporary directory removed at the end of the test.
final class TemporaryDirectory {
    let url: URL
    var path: String { url.path }

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("sdtests-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Names in the directory, hidden ones included.
    func contents() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path).sorted()
    }
}

/// Bit patterns of `values` after a round trip f32 -> `dtype` -> f32 through `DTypeConversion`.
func castThrough(_ values: [Float], _ dtype: DType) -> [Float] {
    guard dtype != .f32 else { return values }
    let half = UnsafeMutableRawBufferPointer.allocate(byteCount: values.count * dtype.byteSize, alignment: 16)
    defer { half.deallocate() }
    values.withUnsafeBytes { DTypeConversion.convert($0, from: .f32, to: dtype, into: half) }
    return [Float](unsafeUninitializedCapacity: values.count) { buf, n in
        DTypeConversion.convert(UnsafeRawBufferPointer(half), from: dtype, to: .f32, into: UnsafeMutableRawBufferPointer(buf))
        n = values.count
    }
}

/// Asserts `actual` and `expected` are bit-identical; on mismatch names the tensor, the worst
/// element's index and both values. Returns whether they matched. With `quiet`, only returns
/// (to cap the log when many tensors differ).
@discardableResult
func assertBitExact(
    _ actual: [Float], _ expected: [Float], tensor: String, context: String, quiet: Bool = false,
    file: StaticString = #filePath, line: UInt = #line
) -> Bool {
    guard actual.count == expected.count else {
        XCTFail("\(context): \(tensor): \(actual.count) elements, expected \(expected.count)", file: file, line: line)
        return false
    }
    var worst = -1
    var worstDiff: Float = -1
    var mismatches = 0
    for i in 0..<actual.count where actual[i].bitPattern != expected[i].bitPattern {
        mismatches += 1
        let d = abs(actual[i] - expected[i])
        let dd = d.isNaN ? Float.infinity : d
        if dd > worstDiff { worstDiff = dd; worst = i }
    }
    guard mismatches > 0 else { return true }
    if quiet { return false }
    XCTFail("\(context): \(tensor): \(mismatches) of \(actual.count) elements differ; worst at index \(worst): got \(actual[worst]) (0x\(String(actual[worst].bitPattern, radix: 16))), expected \(expected[worst]) (0x\(String(expected[worst].bitPattern, radix: 16)))", file: file, line: line)
    return false
}

/// Raw bytes of a tensor as an array.
func rawBytes(_ file: SafeTensorsFile, _ info: TensorInfo) -> [UInt8] {
    Array(file.rawBytes(info))
}

/// Runs `body`, expecting a `CheckpointError`; returns it (fails if none or another type).
func expectCheckpointError<T>(
    _ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T
) -> CheckpointError? {
    do {
        _ = try body()
        XCTFail("\(what): expected an error, got success", file: file, line: line)
        return nil
    } catch let e as CheckpointError {
        return e
    } catch {
        XCTFail("\(what): expected a CheckpointError, got \(type(of: error)): \(error)", file: file, line: line)
        return nil
    }
}
