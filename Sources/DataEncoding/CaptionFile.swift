import Foundation
import SafeTensors

/// Reads a captions file: JSON lines (`.jsonl`: one strict JSON object
/// `{"file": "cat.png", "text": "a cat"}` per line) or CSV (`.csv`: RFC 4180, a header naming the
/// columns `file` and `text`, quoted fields with `""` for a quote, commas and line breaks inside
/// quotes). UTF-8; a leading byte-order mark is skipped; empty lines are skipped. The file column
/// is a path relative to the images folder (`/` separated, no `..`, not absolute).
public enum CaptionFile {
    /// The format, from the file name's extension.
    public enum Format: String, Sendable {
        case jsonLines = "jsonl"
        case csv
    }

    /// Reads and parses `path` (at most `DataEncodingBounds.captionFileBytes`).
    public static func read(_ path: String) throws(DataEncodingError) -> [CaptionEntry] {
        let ext = (path as NSString).pathExtension.lowercased()
        guard let format = Format(rawValue: ext) else {
            throw .captions(file: path, line: nil, "unknown captions format '.\(ext)'; expected .jsonl (JSON lines) or .csv (with a file,text header)")
        }
        let data: Data
        do { data = try RegularFile.read(path, limit: DataEncodingBounds.captionFileBytes) } catch {
            throw .captions(file: path, line: nil, error.reason)
        }
        return try parse(data, format: format, source: path)
    }

    /// Parses captions in `format`; `source` names the file in errors. Duplicate files are refused.
    public static func parse(_ data: Data, format: Format, source: String) throws(DataEncodingError) -> [CaptionEntry] {
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .captions(file: source, line: nil, "not valid UTF-8")
        }
        let entries = format == .csv ? try parseCSV(text, source: source) : try parseJSONLines(text, source: source)
        guard !entries.isEmpty else { throw .captions(file: source, line: nil, "no captions") }
        guard entries.count <= DataEncodingBounds.maxSamples else {
            throw .captions(file: source, line: nil, "\(entries.count) captions; at most \(DataEncodingBounds.maxSamples) fit one training-data file (split the data set)")
        }
        var seen: [String: Int] = [:]
        for e in entries {
            if let first = seen[e.file] {
                let lines = [first] + entries.filter { $0.file == e.file && $0.line != first }.map(\.line)
                throw .duplicateCaption(file: source, image: e.file, lines: lines)
            }
            seen[e.file] = e.line
        }
        return entries
    }

    static func parseJSONLines(_ text: String, source: String) throws(DataEncodingError) -> [CaptionEntry] {
        var entries: [CaptionEntry] = []
        var lineNumber = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw[...]
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            let object: Any
            do { object = try StrictJSON.jsonObject(Data(line.utf8), source: "\(source):\(lineNumber)") } catch {
                throw .captions(file: source, line: lineNumber, "\(error.message)")
            }
            guard let dict = object as? [String: Any] else {
                throw .captions(file: source, line: lineNumber, #"expected a JSON object {"file": ..., "text": ...}"#)
            }
            if let other = dict.keys.sorted().first(where: { $0 != "file" && $0 != "text" }) {
                throw .captions(file: source, line: lineNumber, "unknown key '\(other)'; a caption has only \"file\" and \"text\"")
            }
            guard let file = dict["file"] as? String, let caption = dict["text"] as? String else {
                throw .captions(file: source, line: lineNumber, #"expected string values for "file" and "text""#)
            }
            entries.append(CaptionEntry(file: try normalise(file, source: source, line: lineNumber), text: try checked(caption, source: source, line: lineNumber), line: lineNumber))
            guard entries.count <= DataEncodingBounds.maxSamples else { break }
        }
        return entries
    }

    /// RFC 4180 records: fields and their 1-based starting line.
    static func csvRecords(_ text: String, source: String) throws(DataEncodingError) -> [(fields: [String], line: Int)] {
        var records: [(fields: [String], line: Int)] = []
        var fields: [String] = []
        var field = [UInt8]()
        var line = 1, recordLine = 1
        let bytes = Array(text.utf8)
        var i = 0
        var quoted = false, afterQuote = false, fieldStarted = false
        func endField() -> String {
            defer { field.removeAll(keepingCapacity: true); afterQuote = false; fieldStarted = false }
            return String(decoding: field, as: UTF8.self)
        }
        while i < bytes.count {
            let c = bytes[i]
            if quoted {
                if c == 0x22 {
                    if i + 1 < bytes.count && bytes[i + 1] == 0x22 { field.append(0x22); i += 2; continue }
                    quoted = false
                    afterQuote = true
                } else {
                    if c == 0x0A { line += 1 }
                    field.append(c)
                }
                i += 1
                continue
            }
            switch c {
            case 0x2C:  // ,
                fields.append(endField())
                fieldStarted = true
            case 0x0D where i + 1 < bytes.count && bytes[i + 1] == 0x0A:
                i += 1
                fallthrough
            case 0x0A:
                if !fields.isEmpty || !field.isEmpty || afterQuote || fieldStarted {
                    fields.append(endField())
                    records.append((fields, recordLine))
                    fields = []
                }
                line += 1
                recordLine = line
                guard records.count <= DataEncodingBounds.maxSamples + 1 else { return records }
            case 0x22:  // "
                guard field.isEmpty && !afterQuote else {
                    throw .captions(file: source, line: line, "a quote inside an unquoted field (RFC 4180: quote the whole field and double the quote, \"a \"\"b\"\" c\")")
                }
                quoted = true
            default:
                if afterQuote {
                    throw .captions(file: source, line: line, "text after a closing quote (a field is either quoted as a whole or not at all)")
                }
                if c == 0x0D { throw .captions(file: source, line: line, "a carriage return outside quotes that does not end a line") }
                field.append(c)
            }
            i += 1
        }
        if quoted { throw .captions(file: source, line: recordLine, "a quoted field is not closed before the end of the file") }
        if !fields.isEmpty || !field.isEmpty || afterQuote || fieldStarted {
            fields.append(endField())
            records.append((fields, recordLine))
        }
        return records
    }

    static func parseCSV(_ text: String, source: String) throws(DataEncodingError) -> [CaptionEntry] {
        let records = try csvRecords(text, source: source)
        guard let header = records.first else { return [] }
        let names = header.fields
        for name in names where name != "file" && name != "text" {
            throw .captions(file: source, line: header.line, "unknown column '\(name)' in the header; expected the columns file and text")
        }
        guard let fileColumn = names.firstIndex(of: "file"), let textColumn = names.firstIndex(of: "text"), names.count == 2 else {
            throw .captions(file: source, line: header.line, "the header is \(names.map { "'\($0)'" }.joined(separator: ",")); expected file,text")
        }
        var entries: [CaptionEntry] = []
        for r in records.dropFirst() {
            guard r.fields.count == names.count else {
                throw .captions(file: source, line: r.line, "\(r.fields.count) field\(r.fields.count == 1 ? "" : "s"); the header has \(names.count) (quote a field that holds a comma)")
            }
            entries.append(CaptionEntry(
                file: try normalise(r.fields[fileColumn], source: source, line: r.line),
                text: try checked(r.fields[textColumn], source: source, line: r.line), line: r.line))
        }
        return entries
    }

    static func checked(_ caption: String, source: String, line: Int) throws(DataEncodingError) -> String {
        guard caption.utf8.count <= DataEncodingBounds.captionBytes else {
            throw .captions(file: source, line: line, "a caption of \(caption.utf8.count) bytes; at most \(DataEncodingBounds.captionBytes)")
        }
        return caption
    }

    /// `file` as a relative path with `/` separators and no `.` or empty components; refuses
    /// absolute paths, `..` and NUL.
    static func normalise(_ file: String, source: String, line: Int) throws(DataEncodingError) -> String {
        guard !file.isEmpty else { throw .captions(file: source, line: line, "an empty file name") }
        guard !file.hasPrefix("/"), !file.utf8.contains(0), !file.contains("\\") else {
            throw .captions(file: source, line: line, "'\(file)' is not a path relative to the images folder (no leading /, no backslash)")
        }
        let parts = file.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        guard !parts.isEmpty, !parts.contains("..") else {
            throw .captions(file: source, line: line, "'\(file)' is not a path inside the images folder (no ..)")
        }
        return parts.joined(separator: "/")
    }
}
