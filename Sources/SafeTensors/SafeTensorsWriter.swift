#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Name, dtype and shape of a tensor to be written.
public struct TensorSpec: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * dtype.byteSize }
}

/// Streams a safetensors file to disk one tensor at a time, atomically.
///
/// The header is written first from the specs (names sorted); tensors must then be written in
/// `order`. Data goes to a temporary file beside the destination, which `finish()` fsyncs and
/// renames into place. If the writer is dropped or `abort()`ed before `finish()`, the temporary
/// file is removed and the destination is untouched.
public final class SafeTensorsWriter {
    /// The destination path.
    public let path: String
    /// Tensors in the order they must be written (sorted by name).
    public let order: [TensorSpec]
    private let temp: AtomicFile
    private var next = 0
    /// Bytes of the next tensor already written by `write(_:part:)`.
    private var partial = 0

    /// Starts writing `tensors` to `path` with optional string metadata.
    public init(path: String, tensors: [TensorSpec], metadata: [String: String]? = nil) throws(SafeTensorsError) {
        self.path = path
        order = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        // Refuse what the reader would refuse, before anything is created on disk. Names are
        // compared as Swift strings (canonical equivalence), as the reader does.
        var seen = Set<String>()
        for t in order {
            func fail(_ r: SafeTensorsError.Reason) -> SafeTensorsError { SafeTensorsError(file: path, tensor: t.name, r) }
            guard seen.insert(t.name).inserted else { throw fail(.duplicateName) }
            if t.name == "__metadata__" { throw fail(.invalidEntry("'__metadata__' is reserved for metadata")) }
            if t.name.utf8.contains(0) { throw fail(.invalidEntry("name contains a NUL character")) }
            var bytes = t.dtype.byteSize
            for d in t.shape {
                guard d >= 0 else { throw fail(.invalidShape("dimension \(d) is negative")) }
                let (p, o) = bytes.multipliedReportingOverflow(by: d)
                if o || p > Int(SafeTensorsHeader.maxInteger) { throw fail(.shapeOverflow) }
                bytes = p
            }
        }
        if let metadata {
            for k in metadata.keys where k.utf8.contains(0) {
                throw SafeTensorsError(file: path, .invalidMetadata("key '\(k)' contains a NUL character"))
            }
        }
        let header = Self.headerBytes(order, metadata: metadata)
        temp = try AtomicFile(destination: path)
        var prefix = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
        prefix += header
        try temp.write(prefix)
    }

    /// The spec of the tensor that must be written next, or nil when all are written.
    public var nextSpec: TensorSpec? { next < order.count ? order[next] : nil }

    /// Writes the next tensor's raw little-endian bytes.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard let spec = nextSpec, spec.name == name, partial == 0 else {
            throw SafeTensorsError(file: path, tensor: name, .writeOrder(expected: nextSpec?.name ?? "(none)"))
        }
        guard bytes.count == spec.byteCount else {
            throw SafeTensorsError(file: path, tensor: name, .sizeMismatch(expected: spec.byteCount, actual: bytes.count))
        }
        try temp.write(bytes)
        next += 1
    }

    /// Appends the next stretch of the next tensor's raw little-endian bytes, for a tensor produced
    /// a few rows at a time; the tensor is done, and the one after it comes next, once its byte
    /// count has been written. A part that would run past the tensor's end is refused.
    public func write(_ name: String, part bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard let spec = nextSpec, spec.name == name else {
            throw SafeTensorsError(file: path, tensor: name, .writeOrder(expected: nextSpec?.name ?? "(none)"))
        }
        guard bytes.count <= spec.byteCount - partial else {
            throw SafeTensorsError(file: path, tensor: name, .sizeMismatch(expected: spec.byteCount - partial, actual: bytes.count))
        }
        try temp.write(bytes)
        partial += bytes.count
        if partial == spec.byteCount {
            partial = 0
            next += 1
        }
    }

    /// Writes the next tensor by copying `info`'s bytes from `file` (same dtype and size) in the
    /// kernel, without passing them through user memory.
    public func write(_ name: String, copying info: TensorInfo, from file: SafeTensorsFile) throws(SafeTensorsError) {
        guard let spec = nextSpec, spec.name == name, partial == 0 else {
            throw SafeTensorsError(file: path, tensor: name, .writeOrder(expected: nextSpec?.name ?? "(none)"))
        }
        guard info.byteCount == spec.byteCount, info.dtype == spec.dtype else {
            throw SafeTensorsError(file: path, tensor: name, .sizeMismatch(expected: spec.byteCount, actual: info.byteCount))
        }
        try temp.copy(from: file.descriptor, offset: file.fileOffset(info), count: info.byteCount)
        next += 1
    }

    /// Writes the next tensor from `Float` values, converting to its dtype (F32, F16 or BF16).
    public func write(_ name: String, floats: [Float]) throws(SafeTensorsError) {
        guard let spec = nextSpec, spec.name == name, partial == 0 else {
            throw SafeTensorsError(file: path, tensor: name, .writeOrder(expected: nextSpec?.name ?? "(none)"))
        }
        guard spec.dtype.isFloatConvertible else { throw SafeTensorsError(file: path, tensor: name, .notFloat(spec.dtype)) }
        guard floats.count == spec.elementCount else {
            throw SafeTensorsError(file: path, tensor: name, .countMismatch(expected: spec.elementCount, actual: floats.count))
        }
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: spec.byteCount, alignment: 16)
        defer { out.deallocate() }
        floats.withUnsafeBytes { src in DTypeConversion.convert(src, from: .f32, to: spec.dtype, into: out) }
        try write(name, bytes: UnsafeRawBufferPointer(out))
    }

    /// Flushes, fsyncs and renames the file into place. Every tensor must have been written.
    public func finish() throws(SafeTensorsError) {
        if let spec = nextSpec {
            throw SafeTensorsError(file: path, tensor: spec.name, .io("finish() before every tensor was written"))
        }
        try temp.commit()
    }

    /// Discards the temporary file.
    public func abort() { temp.discard() }

    /// The JSON header for `specs` (already sorted), padded with spaces to a multiple of 8.
    static func headerBytes(_ specs: [TensorSpec], metadata: [String: String]?) -> [UInt8] {
        var s = "{"
        var first = true
        if let metadata, !metadata.isEmpty {
            s += "\"__metadata__\":{"
            s += metadata.keys.sorted().map { "\(jsonQuote($0)):\(jsonQuote(metadata[$0] ?? ""))" }.joined(separator: ",")
            s += "}"
            first = false
        }
        var offset = 0
        for t in specs {
            if !first { s += "," }
            first = false
            let end = offset + t.byteCount
            s += "\(jsonQuote(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        s += "}"
        var bytes = Array(s.utf8)
        while (8 + bytes.count) % 8 != 0 { bytes.append(0x20) }
        return bytes
    }
}

/// Quotes a string as a JSON string literal.
public func jsonQuote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
