import CJSON
import Foundation

/// The one strict JSON check of alter: every JSON text it reads (safetensors headers, bundle and
/// expert manifests, diffusers `config.json` / `scheduler_config.json` / `model_index.json`,
/// shard indexes, run-directory files) passes through it before any value is read from it.
///
/// It parses with json-c in strict mode (UTF-8 validated, nesting at most 64 deep) and then
/// refuses what RFC 8259 forbids but json-c accepts (raw control bytes in strings, leading zeros,
/// single quotes, `NaN`/`Infinity`, lone surrogates), any object key given twice in the same
/// object (at any depth, array elements included: readers disagree on which copy wins), and any
/// key containing NUL (json-c cuts keys there). Keys are compared as Swift strings (canonical
/// equivalence), as the readers that follow compare them.
public enum StrictJSON {
    /// Deepest nesting of arrays and objects accepted.
    public static let maxDepth = 64

    /// Checks `data` (see the type's documentation); `source` names it in the error.
    public static func validate(_ data: Data, source: String) throws(StrictJSONError) {
        let result: StrictJSONError? = data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> StrictJSONError? in
            do {
                if let root = try parseTree(raw, subject: "JSON text") { json_object_put(root) }
            } catch let e as SyntaxIssue { return StrictJSONError(file: source, "not valid JSON: \(e.message)") } catch {
                return StrictJSONError(file: source, "not valid JSON")
            }
            if let issue = firstKeyIssue(raw) { return StrictJSONError(file: source, issue.description) }
            return nil
        }
        if let result { throw result }
    }

    /// `JSONSerialization.jsonObject(with:)` after `validate`: the parsed value (an object, array
    /// or scalar), or an error naming `source`.
    public static func jsonObject(_ data: Data, source: String) throws(StrictJSONError) -> Any {
        try validate(data, source: source)
        do { return try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            throw StrictJSONError(file: source, "not valid JSON (\(error.localizedDescription))")
        }
    }

    /// Reads the regular file at `path` (see `RegularFile`, at most `limit` bytes) and checks it.
    public static func read(_ path: String, limit: Int = 256 << 20, followSymlinks: Bool = true) throws(StrictJSONError) -> Data {
        let data: Data
        do { data = try RegularFile.read(path, limit: limit, followSymlinks: followSymlinks) } catch {
            throw StrictJSONError(file: path, error.reason)
        }
        try validate(data, source: path)
        return data
    }

    /// Why json-c, or the RFC 8259 checks after it, refused a text.
    struct SyntaxIssue: Error {
        var message: String
        var outOfMemory = false
    }

    /// Parses `json` with json-c (strict, UTF-8 validated, at most `maxDepth` deep) and applies
    /// `firstLexicalError`. Returns the root (the caller releases it with `json_object_put`), or
    /// nil for the literal `null`. `subject` names the text in messages ("header").
    static func parseTree(_ json: UnsafeRawBufferPointer, subject: String) throws(SyntaxIssue) -> OpaquePointer? {
        guard json.count > 0, let base = json.baseAddress else { throw SyntaxIssue(message: "empty \(subject)") }
        guard json.count <= Int(Int32.max) else { throw SyntaxIssue(message: "\(subject) is longer than 2 GB") }
        if json.contains(0) { throw SyntaxIssue(message: "\(subject) contains a NUL byte") }
        guard let tok = json_tokener_new_ex(Int32(maxDepth)) else { throw SyntaxIssue(message: "out of memory", outOfMemory: true) }
        defer { json_tokener_free(tok) }
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8)
        var obj = json_tokener_parse_ex(tok, base.assumingMemoryBound(to: CChar.self), Int32(json.count))
        var err = json_tokener_get_error(tok)
        // A top-level scalar at the very end (`null`, `12`) waits for a delimiter: give it one.
        var consumedAll = false
        if err == json_tokener_continue {
            obj = json_tokener_parse_ex(tok, " ", 1)
            err = json_tokener_get_error(tok)
            consumedAll = true
        }
        guard err == json_tokener_success else {
            if let obj { json_object_put(obj) }
            let why = err == json_tokener_continue
                ? "unexpected end of \(subject)" : String(cString: json_tokener_error_desc(err))
            throw SyntaxIssue(message: why)
        }
        // Anything after the value must be whitespace.
        let consumed = consumedAll ? json.count : Int(json_tokener_get_parse_end(tok))
        for b in json[consumed...] where !(b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09) {
            if let obj { json_object_put(obj) }
            throw SyntaxIssue(message: "unexpected bytes after the \(subject) value at offset \(consumed)")
        }
        // json-c's strict mode still takes some text that RFC 8259 (and other readers) refuse;
        // values read from it would differ between readers.
        if let (at, why) = firstLexicalError(json) {
            if let obj { json_object_put(obj) }
            throw SyntaxIssue(message: "\(why) at offset \(at)")
        }
        return obj
    }

    /// The first place in JSON text accepted by json-c where RFC 8259 forbids what is there:
    /// invalid UTF-8 (overlong forms, encoded surrogates), a byte below 0x20 inside a string,
    /// a lone surrogate escape, a single-quoted string, a bare word other than `true`, `false`
    /// and `null` (`NaN`, `Infinity`), an integer part with a leading zero, or a number not in RFC 8259's
    /// grammar (`0.`, `1e`, `-`, `1.e5`) or beyond the range of a double (`1e400`).
    static func firstLexicalError(_ json: UnsafeRawBufferPointer) -> (offset: Int, message: String)? {
        if String(validating: json, as: UTF8.self) == nil { return (0, "not valid UTF-8") }
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
            } else if c == UInt8(ascii: "'") {
                return (i, "single-quoted string")
            } else if isLetter(c) {
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
                // A whole number token, as RFC 8259 spells it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
                // (json-c also takes "0.", "1e", "-" and "1.e5"). Its integer part may be "0" but
                // not "0" followed by more digits.
                var j = i
                func digits() -> Int { let start = j; while j < n && isDigit(json[j]) { j += 1 }; return j - start }
                if j < n && json[j] == UInt8(ascii: "-") { j += 1 }
                if j + 1 < n, json[j] == UInt8(ascii: "0"), isDigit(json[j + 1]) { return (i, "number with a leading zero") }
                guard digits() > 0 else { return (i, "malformed number") }
                if j < n && json[j] == UInt8(ascii: ".") {
                    j += 1
                    guard digits() > 0 else { return (i, "malformed number (no digit after the decimal point)") }
                }
                var exponent = false
                if j < n && (json[j] | 0x20) == UInt8(ascii: "e") {
                    exponent = true
                    j += 1
                    if j < n && (json[j] == UInt8(ascii: "+") || json[j] == UInt8(ascii: "-")) { j += 1 }
                    guard digits() > 0 else { return (i, "malformed number (no digit in the exponent)") }
                }
                if j < n, isDigit(json[j]) || json[j] == UInt8(ascii: ".") || (json[j] | 0x20) == UInt8(ascii: "e")
                    || json[j] == UInt8(ascii: "+") || json[j] == UInt8(ascii: "-") {
                    return (i, "malformed number")
                }
                // A number no double holds (1e400) is infinity to some readers and an error to others.
                if exponent || j - i > 300,
                   Double(String(decoding: UnsafeRawBufferPointer(rebasing: json[i..<j]), as: UTF8.self))?.isFinite != true {
                    return (i, "number out of range")
                }
                i = j
                continue
            }
            i += 1
        }
        return nil
    }

    /// An object key that json-c would hide or that readers would read differently.
    struct KeyIssue: Equatable, CustomStringConvertible {
        enum Kind: Equatable { case duplicate, nul }
        var kind: Kind
        /// How the object holding the key is reached from the root: object keys, and `[i]` for
        /// array elements (empty: the top level).
        var container: [String]
        var key: String

        /// The container and key, the container's own key first (`[entry, field]` in a header).
        var path: [String] { container + [key] }

        var description: String {
            let at = container.isEmpty ? "at the top level" : "in " + Self.render(container)
            switch kind {
            case .duplicate: return "duplicate key \"\(key)\" \(at)"
            case .nul: return "key \"\(key.replacingOccurrences(of: "\u{0}", with: "\\u0000"))\" \(at) contains a NUL character"
            }
        }

        /// `a.b[3].c`.
        static func render(_ path: [String]) -> String {
            path.enumerated().map { i, p in p.hasPrefix("[") || i == 0 ? p : "." + p }.joined()
        }
    }

    /// Finds the first object key, at any depth, that occurs twice in its object or holds a NUL
    /// character. `json` must be valid JSON (as `parseTree` accepted it).
    static func firstKeyIssue(_ json: UnsafeRawBufferPointer) -> KeyIssue? {
        struct Frame {
            var isObject: Bool
            /// How the parent reaches this container: its key, or the element index in an array.
            var viaKey: String?
            var viaIndex: Int
            var keys = Set<String>()
            var lastKey: String?
            var count = 0
        }
        var stack: [Frame] = []
        func container() -> [String] {
            stack.dropFirst().map { f in f.viaKey ?? "[\(f.viaIndex)]" }
        }
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
                // (The frame is not bound to a local: a second reference to its set would copy it on insert.)
                let d = stack.count - 1
                if expectingKey, d >= 0, stack[d].isObject {
                    let key = escaped
                        ? canonicalKey(Array(json[start...min(i, n - 1)]))
                        : String(decoding: UnsafeRawBufferPointer(rebasing: json[(start + 1)..<min(i, n)]), as: UTF8.self)
                    if escaped && key.utf8.contains(0) { return KeyIssue(kind: .nul, container: container(), key: key) }
                    if !stack[d].keys.insert(key).inserted { return KeyIssue(kind: .duplicate, container: container(), key: key) }
                    stack[d].lastKey = key
                }
                expectingKey = false
            } else if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
                let parent = stack.last
                stack.append(Frame(isObject: c == UInt8(ascii: "{"), viaKey: parent?.isObject == true ? parent?.lastKey : nil,
                                   viaIndex: parent?.count ?? 0))
                expectingKey = c == UInt8(ascii: "{")
            } else if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                _ = stack.popLast()
                expectingKey = false
            } else if c == UInt8(ascii: ",") {
                if let d = stack.indices.last { stack[d].count += 1 }
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
            return string(obj)
        }
    }

    /// The bytes of a json-c string value (which may hold NUL).
    static func string(_ v: OpaquePointer) -> String {
        let len = Int(json_object_get_string_len(v))
        guard let p = json_object_get_string(v) else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }
}
