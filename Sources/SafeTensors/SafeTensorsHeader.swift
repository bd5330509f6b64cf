import CJSON

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Byte range relative to the start of the data section (after the header).
    public var dataOffsets: Range<Int>

    public init(name: String, dtype: DType, shape: [Int], dataOffsets: Range<Int>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataOffsets = dataOffsets
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Number of bytes of data.
    public var byteCount: Int { dataOffsets.count }
}

/// A validated safetensors header: tensor entries ordered by data offset, and metadata.
public struct SafeTensorsHeader: Sendable, Equatable {
    /// Largest header accepted, in bytes.
    public static let maxHeaderLength = 100 * 1024 * 1024
    /// Largest value accepted for a dimension or an offset (guards products against overflow).
    static let maxInteger: Int64 = 1 << 53
    /// The reserved top-level key holding string metadata.
    static let metadataKey = "__metadata__"

    /// Entries sorted by data offset.
    public var tensors: [TensorInfo]
    /// The `__metadata__` object, if present.
    public var metadata: [String: String]?
    /// Length of the JSON header in bytes (without the 8-byte length prefix).
    public var headerLength: Int
    /// Size of the data section in bytes.
    public var dataSize: Int { tensors.last?.dataOffsets.upperBound ?? 0 }

    /// Parses and validates a whole safetensors file image (or at least its first
    /// `8 + headerLength` bytes; `fileSize` is the size of the whole file).
    ///
    /// Every problem is a `SafeTensorsError` naming `file` and, where there is one, the tensor.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, fileSize: Int, file: String
    ) throws(SafeTensorsError) -> SafeTensorsHeader {
        func fail(_ tensor: String?, _ r: SafeTensorsError.Reason) -> SafeTensorsError {
            SafeTensorsError(file: file, tensor: tensor, r)
        }
        func fail(_ r: SafeTensorsError.Reason) -> SafeTensorsError { fail(nil, r) }
        guard fileSize >= 8, bytes.count >= 8 else { throw fail(.fileTooShort(size: fileSize)) }
        var n64: UInt64 = 0
        for i in 0..<8 { n64 |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        if n64 > UInt64(maxHeaderLength) {
            throw fail(.headerTooLarge(headerLength: n64, limit: maxHeaderLength))
        }
        let n = Int(n64)
        guard 8 + n <= fileSize else { throw fail(.headerBeyondFile(headerLength: n64, fileSize: fileSize)) }
        guard 8 + n <= bytes.count else { throw fail(.headerBeyondFile(headerLength: n64, fileSize: bytes.count)) }
        let json = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + n)])
        let dataSize = fileSize - 8 - n

        let root = try parseJSON(json, fail: { fail(nil, $0) })
        defer { json_object_put(root) }
        guard json_object_get_type(root) == json_type_object else { throw fail(.headerNotObject) }
        // json-c keeps only the last of duplicate keys and cuts keys at an escaped NUL, so both
        // are looked for on the raw text (StrictJSON) before its objects are read.
        if let issue = StrictJSON.firstKeyIssue(json) {
            let path = issue.path
            let field = path.dropFirst().joined(separator: ".")
            switch issue.kind {
            case .duplicate where path.count == 1: throw fail(path[0], .duplicateName)
            case .duplicate where path[0] == metadataKey: throw fail(.invalidMetadata("key '\(field)' appears more than once"))
            case .duplicate: throw fail(path[0], .invalidEntry("field '\(field)' appears more than once"))
            case .nul where path.count == 1: throw fail(path[0], .invalidEntry("name contains a NUL character"))
            case .nul where path[0] == metadataKey: throw fail(.invalidMetadata("key '\(field)' contains a NUL character"))
            case .nul: throw fail(path[0], .invalidEntry("field name contains a NUL character"))
            }
        }

        var metadata: [String: String]?
        var entries: [TensorInfo] = []
        var it = json_object_iter_begin(root)
        var end = json_object_iter_end(root)
        while json_object_iter_equal(&it, &end) == 0 {
            defer { json_object_iter_next(&it) }
            let name = String(cString: json_object_iter_peek_name(&it))
            let value = json_object_iter_peek_value(&it)
            if name == metadataKey {
                metadata = try parseMetadata(value, fail: { fail(nil, $0) })
                continue
            }
            entries.append(try parseEntry(name: name, value, fail: { fail(name, $0) }))
        }

        var names = Set<String>()
        for e in entries where !names.insert(e.name).inserted { throw fail(e.name, .duplicateName) }

        // Order by start offset; zero-size tensors may share an offset.
        entries.sort { ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound, $0.name)
            < ($1.dataOffsets.lowerBound, $1.dataOffsets.upperBound, $1.name) }
        var cursor = 0
        var previous: String?
        for e in entries {
            let r = e.dataOffsets
            if r.lowerBound < cursor { throw fail(e.name, .offsetsOverlap(previous: previous ?? "")) }
            if r.lowerBound > cursor {
                throw fail(e.name, .offsetsGap(previous: previous, gapBytes: r.lowerBound - cursor))
            }
            if r.upperBound > dataSize { throw fail(e.name, .dataPastEnd(end: r.upperBound, dataSize: dataSize)) }
            cursor = r.upperBound
            previous = e.name
        }
        if cursor != dataSize { throw fail(.trailingBytes(count: dataSize - cursor)) }
        return SafeTensorsHeader(tensors: entries, metadata: metadata, headerLength: n)
    }

    /// The header's JSON through `StrictJSON`'s json-c parse and RFC 8259 checks.
    private static func parseJSON(
        _ json: UnsafeRawBufferPointer, fail: (SafeTensorsError.Reason) -> SafeTensorsError
    ) throws(SafeTensorsError) -> OpaquePointer {
        let obj: OpaquePointer?
        do { obj = try StrictJSON.parseTree(json, subject: "header") } catch {
            throw fail(error.outOfMemory ? .io("out of memory") : .invalidJSON(error.message))
        }
        // A successful parse without an object is the JSON literal `null`.
        guard let obj else { throw fail(.headerNotObject) }
        return obj
    }

    private static func parseMetadata(
        _ value: OpaquePointer?, fail: (SafeTensorsError.Reason) -> SafeTensorsError
    ) throws(SafeTensorsError) -> [String: String] {
        guard let value, json_object_get_type(value) == json_type_object else {
            throw fail(.invalidMetadata("not an object"))
        }
        var out: [String: String] = [:]
        var it = json_object_iter_begin(value)
        var end = json_object_iter_end(value)
        while json_object_iter_equal(&it, &end) == 0 {
            defer { json_object_iter_next(&it) }
            let key = String(cString: json_object_iter_peek_name(&it))
            guard let v = json_object_iter_peek_value(&it), json_object_get_type(v) == json_type_string else {
                throw fail(.invalidMetadata("value of '\(key)' is not a string"))
            }
            out[key] = jsonString(v)
        }
        return out
    }

    private static func parseEntry(
        name: String, _ value: OpaquePointer?, fail: (SafeTensorsError.Reason) -> SafeTensorsError
    ) throws(SafeTensorsError) -> TensorInfo {
        guard let value, json_object_get_type(value) == json_type_object else {
            throw fail(.invalidEntry("not an object"))
        }
        var dtypeObj: OpaquePointer?, shapeObj: OpaquePointer?, offsetsObj: OpaquePointer?
        var it = json_object_iter_begin(value)
        var end = json_object_iter_end(value)
        while json_object_iter_equal(&it, &end) == 0 {
            defer { json_object_iter_next(&it) }
            let key = String(cString: json_object_iter_peek_name(&it))
            let v = json_object_iter_peek_value(&it)
            switch key {
            case "dtype": dtypeObj = v
            case "shape": shapeObj = v
            case "data_offsets": offsetsObj = v
            default: throw fail(.invalidEntry("unexpected field '\(key)'"))
            }
        }
        guard let dtypeObj, json_object_get_type(dtypeObj) == json_type_string else {
            throw fail(.invalidEntry("missing or non-string 'dtype'"))
        }
        let dtypeName = jsonString(dtypeObj)
        guard let dtype = DType(rawValue: dtypeName) else { throw fail(.unknownDType(dtypeName)) }
        guard let shapeObj, json_object_get_type(shapeObj) == json_type_array else {
            throw fail(.invalidShape("missing or not an array"))
        }
        let shape = try integers(shapeObj, what: "dimension", fail: { fail(.invalidShape($0)) }, overflow: fail(.shapeOverflow))
        guard let offsetsObj, json_object_get_type(offsetsObj) == json_type_array else {
            throw fail(.invalidOffsets("missing or not an array"))
        }
        let offsets = try integers(offsetsObj, what: "offset", fail: { fail(.invalidOffsets($0)) },
                                   overflow: fail(.invalidOffsets("offset too large")))
        guard offsets.count == 2 else { throw fail(.invalidOffsets("expected [begin, end], got \(offsets.count) numbers")) }
        guard offsets[0] <= offsets[1] else { throw fail(.invalidOffsets("begin \(offsets[0]) is after end \(offsets[1])")) }
        var bytes = dtype.byteSize
        for d in shape {
            let (p, o) = bytes.multipliedReportingOverflow(by: d)
            if o || p > Int(maxInteger) { throw fail(.shapeOverflow) }
            bytes = p
        }
        let span = offsets[1] - offsets[0]
        guard bytes == span else { throw fail(.sizeMismatch(expected: bytes, actual: span)) }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: offsets[0]..<offsets[1])
    }

    private static func integers(
        _ array: OpaquePointer, what: String,
        fail: (String) -> SafeTensorsError, overflow: SafeTensorsError
    ) throws(SafeTensorsError) -> [Int] {
        let count = json_object_array_length(array)
        guard count <= 64 else { throw fail("\(count) entries (at most 64)") }
        var out: [Int] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            guard let v = json_object_array_get_idx(array, i), json_object_get_type(v) == json_type_int else {
                throw fail("\(what) \(i) is not an integer")
            }
            let raw = String(cString: json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN))
            if raw.hasPrefix("-") { throw fail("\(what) \(i) is negative (\(raw))") }
            let x = json_object_get_int64(v)
            guard x >= 0, x <= maxInteger, String(x) == raw else { throw overflow }
            out.append(Int(x))
        }
        return out
    }

    /// The text of a json-c string value.
    private static func jsonString(_ v: OpaquePointer) -> String { StrictJSON.string(v) }
}
