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
        if let dup = firstDuplicateTopLevelKey(json) { throw fail(dup, .duplicateName) }

        var metadata: [String: String]?
        var entries: [TensorInfo] = []
        var it = json_object_iter_begin(root)
        var end = json_object_iter_end(root)
        while json_object_iter_equal(&it, &end) == 0 {
            defer { json_object_iter_next(&it) }
            let name = String(cString: json_object_iter_peek_name(&it))
            let value = json_object_iter_peek_value(&it)
            if name == "__metadata__" {
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

    private static func parseJSON(
        _ json: UnsafeRawBufferPointer, fail: (SafeTensorsError.Reason) -> SafeTensorsError
    ) throws(SafeTensorsError) -> OpaquePointer {
        guard json.count > 0, let base = json.baseAddress else { throw fail(.invalidJSON("empty header")) }
        if json.contains(0) { throw fail(.invalidJSON("header contains a NUL byte")) }
        guard let tok = json_tokener_new_ex(64) else { throw fail(.io("out of memory")) }
        defer { json_tokener_free(tok) }
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8)
        let obj = json_tokener_parse_ex(tok, base.assumingMemoryBound(to: CChar.self), Int32(json.count))
        let err = json_tokener_get_error(tok)
        guard let obj, err == json_tokener_success else {
            if let obj { json_object_put(obj) }
            let why = err == json_tokener_continue
                ? "unexpected end of header" : String(cString: json_tokener_error_desc(err))
            throw fail(.invalidJSON(why))
        }
        // Anything after the value must be padding whitespace.
        let consumed = Int(json_tokener_get_parse_end(tok))
        for b in json[consumed...] where !(b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09) {
            json_object_put(obj)
            throw fail(.invalidJSON("unexpected bytes after the header object at offset \(consumed)"))
        }
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

    /// Returns a key that occurs more than once at the top level of a (valid) JSON object.
    /// json-c keeps only the last of duplicate keys, so they are found on the raw text.
    private static func firstDuplicateTopLevelKey(_ json: UnsafeRawBufferPointer) -> String? {
        var seen = Set<[UInt8]>()
        var depth = 0
        var i = 0
        let n = json.count
        var expectingKey = false
        while i < n {
            let c = json[i]
            if c == UInt8(ascii: "\"") {
                let start = i
                i += 1
                while i < n && json[i] != UInt8(ascii: "\"") {
                    i += json[i] == UInt8(ascii: "\\") ? 2 : 1
                }
                if depth == 1 && expectingKey {
                    let raw = Array(json[start...min(i, n - 1)])
                    let key = canonicalKey(raw)
                    if !seen.insert(key).inserted { return String(decoding: key, as: UTF8.self) }
                    expectingKey = false
                }
            } else if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
                depth += 1
                expectingKey = depth == 1
            } else if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                depth -= 1
            } else if c == UInt8(ascii: ",") && depth == 1 {
                expectingKey = true
            }
            i += 1
        }
        return nil
    }

    /// The unescaped bytes of a JSON string literal (quotes included in `raw`).
    private static func canonicalKey(_ raw: [UInt8]) -> [UInt8] {
        guard raw.contains(UInt8(ascii: "\\")) else { return Array(raw.dropFirst().dropLast()) }
        return raw.withUnsafeBufferPointer { buf -> [UInt8] in
            guard let tok = json_tokener_new() else { return raw }
            defer { json_tokener_free(tok) }
            guard let base = buf.baseAddress,
                  let obj = json_tokener_parse_ex(tok, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), Int32(buf.count))
            else { return raw }
            defer { json_object_put(obj) }
            return Array(jsonString(obj).utf8)
        }
    }

    private static func jsonString(_ v: OpaquePointer) -> String {
        let len = Int(json_object_get_string_len(v))
        guard let p = json_object_get_string(v) else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }
}
