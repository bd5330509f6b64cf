import Foundation
import SafeTensors

/// The file name every fuzz input is parsed under; errors must name it.
let fuzzFileName = "fuzz-input.safetensors"

/// Stops the process (a libFuzzer crash) when an invariant of a parsed header does not hold.
@inline(never)
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("SafeTensorsFuzz invariant violated: \(message())") }
}

/// Short name of an error reason ("sizeMismatch", "invalidJSON", ...).
func reasonName(_ reason: SafeTensorsError.Reason) -> String {
    let s = String(describing: reason)
    return String(s.prefix { $0 != "(" })
}

/// Runs one file image through the parser and, if it is accepted, through every read path:
/// byte ranges of each tensor, and for F32/F16/BF16 tensors the conversions to and from F32.
/// Returns "valid" or the name of the rejection reason.
///
/// If the image is rejected because its 8-byte length prefix does not fit (so that mutations
/// which grow or shrink the JSON are not all wasted), it is parsed a second time with the prefix
/// rewritten to cover everything up to the last `}`; that second outcome is not reported.
func fuzzOne(_ bytes: UnsafeRawBufferPointer) -> String {
    let outcome = parseAndExercise(bytes)
    if outcome == "headerBeyondFile" || outcome == "headerTooLarge" || outcome == "invalidJSON",
       bytes.count > 8, let close = bytes.lastIndex(of: UInt8(ascii: "}")), close >= 8 {
        var repaired = Array(bytes)
        let n = UInt64(close + 1 - 8)
        for i in 0..<8 { repaired[i] = UInt8(truncatingIfNeeded: n >> (8 * UInt64(i))) }
        repaired.withUnsafeBytes { _ = parseAndExercise($0) }
    }
    return outcome
}

@inline(never)
func parseAndExercise(_ bytes: UnsafeRawBufferPointer) -> String {
    let header: SafeTensorsHeader
    do {
        header = try SafeTensorsHeader.parse(bytes, fileSize: bytes.count, file: fuzzFileName)
    } catch {
        require(error.file == fuzzFileName, "error names '\(error.file)'")
        require(!error.description.isEmpty, "empty error description")
        return reasonName(error.reason)
    }
    exercise(header, bytes)
    crossCheck(header, UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + header.headerLength)]))
    return "valid"
}

/// Differential check of an accepted header against Foundation's JSON parser: the same
/// tensors with the same fields, the same metadata, and nothing else.
func crossCheck(_ header: SafeTensorsHeader, _ json: UnsafeRawBufferPointer) {
    let object: Any
    do {
        object = try JSONSerialization.jsonObject(with: Data(json), options: [])
    } catch {
        fatalError("accepted header that Foundation rejects: \(error)")
    }
    guard let root = object as? [String: Any] else { fatalError("accepted header is not an object for Foundation") }
    require(root.count == header.tensors.count + (header.metadata == nil ? 0 : 1),
            "Foundation sees \(root.count) keys, parser \(header.tensors.count) tensors")
    func ints(_ x: Any?) -> [Int]? { (x as? [Any])?.map { ($0 as? NSNumber)?.intValue ?? -1 } }
    for t in header.tensors {
        guard let e = root[t.name] as? [String: Any] else { fatalError("no entry '\(t.name)' for Foundation") }
        require(e.count == 3, "entry '\(t.name)' has \(e.count) fields for Foundation")
        require(e["dtype"] as? String == t.dtype.rawValue, "dtype of '\(t.name)' differs")
        require(ints(e["shape"]) == t.shape, "shape of '\(t.name)' differs")
        require(ints(e["data_offsets"]) == [t.dataOffsets.lowerBound, t.dataOffsets.upperBound],
                "offsets of '\(t.name)' differ")
    }
    if let metadata = header.metadata {
        require(root["__metadata__"] as? [String: String] == metadata, "metadata differs")
    }
}

/// Checks the invariants the reader promises for an accepted header and reads every tensor.
func exercise(_ header: SafeTensorsHeader, _ bytes: UnsafeRawBufferPointer) {
    let dataStart = 8 + header.headerLength
    require(dataStart + header.dataSize == bytes.count, "header + data != file size")
    var cursor = 0
    var names = Set<String>()
    var checksum: UInt64 = 0
    for t in header.tensors {
        require(names.insert(t.name).inserted, "duplicate name \(t.name)")
        require(t.name != "__metadata__", "metadata parsed as a tensor")
        require(t.shape.allSatisfy { $0 >= 0 }, "negative dimension")
        require(t.dataOffsets.lowerBound == cursor, "tensors not contiguous at \(t.name)")
        require(t.elementCount * t.dtype.byteSize == t.byteCount, "size mismatch accepted for \(t.name)")
        cursor = t.dataOffsets.upperBound
        let raw = UnsafeRawBufferPointer(
            rebasing: bytes[(dataStart + t.dataOffsets.lowerBound)..<(dataStart + t.dataOffsets.upperBound)])
        for b in raw { checksum = checksum &* 31 &+ UInt64(b) }
        if t.dtype.isFloatConvertible { convertAll(raw, t) }
    }
    require(cursor == header.dataSize, "data section not covered")
    if let metadata = header.metadata {
        for (k, v) in metadata { checksum &+= UInt64(k.utf8.count + v.utf8.count) }
    }
    blackHole(checksum)
}

/// Converts a float tensor to F32 and back to every float dtype; a value that survives the trip
/// to F32 must come back bit for bit (NaN only as NaN).
func convertAll(_ raw: UnsafeRawBufferPointer, _ t: TensorInfo) {
    let count = t.elementCount
    let f32 = UnsafeMutableRawBufferPointer.allocate(byteCount: count * 4, alignment: 16)
    defer { f32.deallocate() }
    DTypeConversion.convert(raw, from: t.dtype, to: .f32, into: f32)
    for other in [DType.f32, .f16, .bf16] {
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: count * other.byteSize, alignment: 16)
        defer { out.deallocate() }
        DTypeConversion.convert(UnsafeRawBufferPointer(f32), from: .f32, to: other, into: out)
        // Direct conversion between different dtypes must agree with going through F32
        // (a same-dtype conversion is a copy that keeps NaN payloads: checked below).
        let direct = UnsafeMutableRawBufferPointer.allocate(byteCount: count * other.byteSize, alignment: 16)
        defer { direct.deallocate() }
        DTypeConversion.convert(raw, from: t.dtype, to: other, into: direct)
        require(count == 0 || other == t.dtype || memcmp(out.baseAddress!, direct.baseAddress!, count * other.byteSize) == 0,
                "direct \(t.dtype)->\(other) differs from the trip through F32 in \(t.name)")
        guard other == t.dtype else { continue }
        for i in 0..<count {
            let a = raw.loadUnaligned(fromByteOffset: i * other.byteSize, as: UInt16.self)
            if other == .f32 {
                let x = raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)
                let y = out.load(fromByteOffset: i * 4, as: UInt32.self)
                require(x == y, "F32 copy changed bits in \(t.name)")
                continue
            }
            let b = out.load(fromByteOffset: i * 2, as: UInt16.self)
            let isNaN = other == .f16 ? (a & 0x7FFF) > 0x7C00 : (a & 0x7FFF) > 0x7F80
            if isNaN {
                let bNaN = other == .f16 ? (b & 0x7FFF) > 0x7C00 : (b & 0x7FFF) > 0x7F80
                require(bNaN, "NaN lost in \(t.dtype) round trip in \(t.name)")
            } else {
                require(a == b, "\(t.dtype) round trip changed \(a) to \(b) in \(t.name)")
            }
        }
    }
}

@inline(never)
func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
