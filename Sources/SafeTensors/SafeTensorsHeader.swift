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
        // are looked for on the raw text before its objects are read.
        if let issue = firstKeyIssue(json) {
            switch issue {
            case .duplicate(let path) where path.count == 1: throw fail(path[0], .duplicateName)
            case .duplicate(let path) where path[0] == metadataKey:
                throw fail(.invalidMetadata("key '\(path[1])' appears more than once"))
            case .duplicate(let path): throw fail(path[0], .invalidEntry("field '\(path[1])' appears more than once"))
            case .nul(let path) where path.count == 1: throw fail(path[0], .invalidEntry("name contains a NUL character"))
            case .nul(let path) where path[0] == metadataKey:
                throw fail(.invalidMetadata("key '\(path[1])' contains a NUL character"))
            case .nul(let path): throw fail(path[0], .invalidEntry("field name contains a NUL character"))
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
        guard err == json_tokener_success else {
            if let obj { json_object_put(obj) }
            let why = err == json_tokener_continue
                ? "unexpected end of header" : String(cString: json_tokener_error_desc(err))
            throw fail(.invalidJSON(why))
        }
        // Anything after the value must be padding whitespace.
        let consumed = Int(json_tokener_get_parse_end(tok))
        for b in json[consumed...] where !(b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09) {
            if let obj { json_object_put(obj) }
            throw fail(.invalidJSON("unexpected bytes after the header object at offset \(consumed)"))
        }
        // json-c's strict mode still takes some text that RFC 8259 (and other safetensors
        // readers) refuse; names and values read from it would differ between readers.
        if let (at, why) = firstLexicalError(json) {
            if let obj { json_object_put(obj) }
            throw fail(.invalidJSON("\(why) at offset \(at)"))
        }
        // A successful parse without an object is the JSON literal `null`.
        guard let obj else { throw fail(.headerNotObject) }
        return obj
    }

    /// The first place in JSON text accepted by json-c where RFC 8259 forbids what is there:
    /// invalid UTF-8 (overlong forms, encoded surrogates), a byte below 0x20 inside a string,
    /// a lone surrogate escape, a single-quoted string, a bare word other than `true`, `false`
    /// and `null` (`NaN`, `Infinity`), or an integer part with a leading zero.
    static func firstLexicalError(_ json: UnsafeRawBufferPointer) -> (offset: Int, message: String)? {
        if String(validating: json, as: UTF8.self) == nil { return (0, "header is not valid UTF-8") }
        func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
        func isLetter(_ c: UInt8) -> Bool { (c | 0x20) >= UInt8(ascii: "a") && (c | 0x20) <= UInt8(ascii: "z") }
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= json.count else { return nil }
            var v: UInt32 = 0
            for k in at..<(at + 4) {
                let c = json[k] | 0x20  // ASCII lower case
                if isDigit(json[k]) { v = v << 4 | UInt32(json[k] - UInt8(ascii: "0")) }
                else if c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f") { v = v << 4 | UInt32(c - UInt8(ascii: "a") + 10) }
                else { return nil }
            }
            return v
        }
        var inString = false
        var inNumber = false
        var i = 0
        let n = json.count
        while i < n {
            let c = json[i]
            if inString {
                if c < 0x20 { return (i, "unescaped control character 0x\(String(c, radix: 16)) in a string") }
                if c == UInt8(ascii: "\"") { inString = false }
                if c == UInt8(ascii: "\\"), i + 1 < n {
                    if json[i + 1] == UInt8(ascii: "u"), let u = hex4(i + 2) {
                        if (0xDC00...0xDFFF).contains(u) { return (i, "lone low surrogate escape") }
                        if (0xD800...0xDBFF).contains(u) {
                            guard i + 7 < n, json[i + 6] == UInt8(ascii: "\\"), json[i + 7] == UInt8(ascii: "u"),
                                  let low = hex4(i + 8), (0xDC00...0xDFFF).contains(low)
                            else { return (i, "lone high surrogate escape") }
                            i += 6
                        }
                        i += 5
                    } else {
                        i += 1
                    }
                }
            } else if c == UInt8(ascii: "\"") {
                inString = true
                inNumber = false
            } else if c == UInt8(ascii: "'") {
                return (i, "single-quoted string")
            } else if !inNumber && isLetter(c) {
                var j = i
                while j < n && isLetter(json[j]) { j += 1 }
                let word = String(decoding: UnsafeRawBufferPointer(rebasing: json[i..<j]), as: UTF8.self)
                guard word == "true" || word == "false" || word == "null" else {
                    return (i, "unexpected word '\(word)'")
                }
                i = j
                continue
            } else if isDigit(c) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") || c == UInt8(ascii: ".")
                        || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") {
                // A number starts at a '-' or digit that does not continue a number; its integer
                // part may be "0" but not "0" followed by more digits.
                if !inNumber && (isDigit(c) || c == UInt8(ascii: "-")) {
                    let j = c == UInt8(ascii: "-") ? i + 1 : i
                    if j + 1 < n, json[j] == UInt8(ascii: "0"), isDigit(json[j + 1]) {
                        return (i, "number with a leading zero")
                    }
                }
                inNumber = true
            } else {
                inNumber = false
            }
            i += 1
        }
        return nil
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

    /// A problem with an object key that json-c would hide: `path` is the top-level key, and the
    /// key inside that key's object for a problem one level down.
    enum KeyIssue: Equatable {
        case duplicate(path: [String])
        case nul(path: [String])
    }

    /// Finds the first key, at the top level or in an object directly under a top-level key,
    /// that occurs twice in its object or holds a NUL character. `json` must be valid JSON.
    /// Keys are compared as Swift strings (canonical equivalence), as every reader of the
    /// names and metadata will compare them.
    static func firstKeyIssue(_ json: UnsafeRawBufferPointer) -> KeyIssue? {
        struct Frame {
            var isObject: Bool
            var parentKey: String?
            var keys = Set<String>()
            var lastKey: String?
        }
        var stack: [Frame] = []
        var expectingKey = false
        var i = 0
        let n = json.count
        while i < n {
            let c = json[i]
            if c == UInt8(ascii: "\"") {
                let start = i
                var escaped = false
                i += 1
                while i < n && json[i] != UInt8(ascii: "\"") {
                    if json[i] == UInt8(ascii: "\\") { escaped = true; i += 2 } else { i += 1 }
                }
                // Keys of objects that are array elements are not looked at. (The frame is not
                // bound to a local: a second reference to its set would copy it on insert.)
                let d = stack.count - 1
                if expectingKey, d == 0 || d == 1, stack[d].isObject, d == 0 || stack[d].parentKey != nil {
                    let key = escaped
                        ? canonicalKey(Array(json[start...min(i, n - 1)]))
                        : String(decoding: UnsafeRawBufferPointer(rebasing: json[(start + 1)..<min(i, n)]), as: UTF8.self)
                    func path() -> [String] { d == 0 ? [key] : [stack[d].parentKey!, key] }
                    if escaped && key.utf8.contains(0) { return .nul(path: path()) }
                    if !stack[d].keys.insert(key).inserted { return .duplicate(path: path()) }
                    stack[d].lastKey = key
                }
                expectingKey = false
            } else if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
                let parentKey = stack.count == 1 && stack[0].isObject ? stack[0].lastKey : nil
                stack.append(Frame(isObject: c == UInt8(ascii: "{"), parentKey: parentKey))
                expectingKey = c == UInt8(ascii: "{")
            } else if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                _ = stack.popLast()
                expectingKey = false
            } else if c == UInt8(ascii: ",") {
                expectingKey = stack.last?.isObject ?? false
            }
            i += 1
        }
        return nil
    }

    /// The unescaped text of a JSON string literal (quotes included in `raw`).
    private static func canonicalKey(_ raw: [UInt8]) -> String {
        raw.withUnsafeBufferPointer { buf -> String in
            let fallback = String(decoding: raw.dropFirst().dropLast(), as: UTF8.self)
            guard let tok = json_tokener_new() else { return fallback }
            defer { json_tokener_free(tok) }
            guard let base = buf.baseAddress,
                  let obj = json_tokener_parse_ex(tok, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), Int32(buf.count))
            else { return fallback }
            defer { json_object_put(obj) }
            return jsonString(obj)
        }
    }

    private static func jsonString(_ v: OpaquePointer) -> String {
        let len = Int(json_object_get_string_len(v))
        guard let p = json_object_get_string(v) else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }
}
