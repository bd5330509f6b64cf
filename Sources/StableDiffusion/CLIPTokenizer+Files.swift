import Foundation
import SafeTensors

/// Readers: a diffusers `tokenizer/` folder (`vocab.json`, `merges.txt`, optional
/// `tokenizer_config.json` / `special_tokens_map.json`), a pipeline folder holding one, and
/// open_clip's `bpe_simple_vocab_16e6.txt.gz`. Every file is read through `RegularFile` (JSON
/// through `StrictJSON`, gzip through `GzipFile`); a malformed file is a `CLIPTokenizerError`
/// naming the file and, where there is one, the line.
extension CLIPTokenizer {
    /// Largest vocab.json / merges.txt / decompressed BPE file read (bytes).
    public static let fileLimit = 16 << 20
    /// Merges open_clip reads from its BPE file (lines 2 to 48,895): 49,152 - 256 - 2.
    public static let openCLIPMergeCount = 49_152 - 256 - 2
    /// Largest `model_max_length` taken from a config (larger values, such as transformers'
    /// "no limit" 1e30, mean the default 77).
    public static let maxLengthBound = 1 << 20

    /// Reads a tokenizer from `path`: a diffusers pipeline folder (its `tokenizer/`), a tokenizer
    /// folder (`vocab.json` + `merges.txt`) or an open_clip BPE file (`.gz`).
    public convenience init(path: String) throws(CLIPTokenizerError) {
        let kind: RegularFile.Kind?
        do { kind = try RegularFile.status(path)?.kind } catch { throw CLIPTokenizerError(file: path, error.reason) }
        switch kind {
        case nil:
            throw CLIPTokenizerError(file: path, "not found")
        case .directory?:
            let nested = path + "/tokenizer"
            if (try? RegularFile.status(nested + "/vocab.json"))??.kind == .regular {
                try self.init(folder: nested)
            } else if (try? RegularFile.status(path + "/vocab.json"))??.kind == .regular {
                try self.init(folder: path)
            } else {
                throw CLIPTokenizerError(file: path, "no tokenizer here: expected tokenizer/vocab.json (a pipeline folder) or vocab.json (a tokenizer folder)")
            }
        case .regular?:
            guard path.hasSuffix(".gz") else {
                throw CLIPTokenizerError(file: path, "expected a tokenizer folder, a pipeline folder or open_clip's BPE file (.txt.gz)")
            }
            try self.init(openCLIPBPE: path)
        case let other?:
            throw CLIPTokenizerError(file: path, "is \(other.rawValue): expected a tokenizer folder or a .txt.gz file")
        }
    }

    /// Reads a transformers tokenizer folder: `vocab.json`, `merges.txt`, and, when present,
    /// `tokenizer_config.json` and `special_tokens_map.json` (the latter wins) for the special
    /// tokens (`bos_token`, `eos_token`, `pad_token`, `unk_token`: a string or an object with
    /// `content` and `normalized`) and `model_max_length`. Without them, transformers' defaults:
    /// pad `<|endoftext|>`, 77 tokens.
    public convenience init(folder: String) throws(CLIPTokenizerError) {
        let vocabPath = folder + "/vocab.json", mergesPath = folder + "/merges.txt"
        let vocabulary = try Self.readVocabulary(vocabPath)
        let merges = try Self.readMerges(mergesPath, vocabulary: vocabulary, vocabPath: vocabPath)
        var config = SpecialTokenConfig()
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let p = folder + "/" + name
            if ((try? RegularFile.status(p)) ?? nil) == nil { continue }  // absent (anything else there is read, and refused)
            try config.read(p)
        }
        func special(_ spec: (content: String, normalized: Bool)?, _ fallback: String, _ key: String) throws(CLIPTokenizerError) -> SpecialToken {
            let s = spec ?? (fallback, false)
            guard let id = vocabulary[s.content] else {
                throw CLIPTokenizerError(file: config.source[key] ?? vocabPath, "\(key) \"\(s.content)\" is not in \(vocabPath)")
            }
            return SpecialToken(content: s.content, id: id, normalized: s.normalized)
        }
        let start = try special(config.tokens["bos_token"], Self.startOfText, "bos_token")
        let end = try special(config.tokens["eos_token"], Self.endOfText, "eos_token")
        let pad = try special(config.tokens["pad_token"], Self.endOfText, "pad_token")
        let unk = try special(config.tokens["unk_token"], Self.endOfText, "unk_token")
        try Self.checkBytes(vocabulary, file: vocabPath)
        self.init(vocabulary: vocabulary, merges: merges, startToken: start, endToken: end, padToken: pad, extraSpecials: [unk],
                  maxLength: config.maxLength ?? Self.defaultMaxLength)
    }

    /// Reads open_clip's `bpe_simple_vocab_16e6.txt.gz` (at most `fileLimit` bytes decompressed)
    /// and builds the vocabulary as open_clip's `SimpleTokenizer` does: the 256 byte symbols, the
    /// same with `</w>`, each merge's result, then `<|startoftext|>` and `<|endoftext|>` (ids
    /// 49406 and 49407, as in transformers' vocab.json). Special tokens as SD2.1's tokenizer
    /// folder has them: start and end matched in normalized text, `padToken` ("!" for SD2.x,
    /// `<|endoftext|>` for SD1.x) in raw text.
    public convenience init(openCLIPBPE path: String, padToken: String = "!", maxLength: Int = CLIPTokenizer.defaultMaxLength) throws(CLIPTokenizerError) {
        guard maxLength >= 2 && maxLength <= Self.maxLengthBound else {
            throw CLIPTokenizerError(file: path, "max length \(maxLength) outside 2...\(Self.maxLengthBound)")
        }
        let data: Data
        do { data = try GzipFile.read(path, compressedLimit: Self.fileLimit, limit: Self.fileLimit) } catch {
            throw CLIPTokenizerError(file: path, error.message)
        }
        guard let text = String(validating: data, as: UTF8.self) else { throw CLIPTokenizerError(file: path, "not valid UTF-8") }
        var merges: [(String, String)] = []
        merges.reserveCapacity(Self.openCLIPMergeCount)
        var lineNumber = 0
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let lineCount = lines.count
        for line in lines {
            lineNumber += 1
            if lineNumber == 1 { continue }  // "#version: 0.2"
            if merges.count == Self.openCLIPMergeCount { break }
            if line.isEmpty && lineNumber == lineCount { break }  // the final newline
            let parts = line.split(whereSeparator: { $0.isWhitespace })
            guard parts.count == 2 else {
                throw CLIPTokenizerError(file: path, line: lineNumber, "expected a merge (two symbols separated by a space), found \(parts.count) fields")
            }
            merges.append((String(parts[0]), String(parts[1])))
        }
        guard merges.count == Self.openCLIPMergeCount else {
            throw CLIPTokenizerError(file: path, line: lineNumber, "ends after \(merges.count) merges; open_clip reads \(Self.openCLIPMergeCount)")
        }
        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(2 * 256 + merges.count + 2)
        // open_clip's bytes_to_unicode().values(): the printable bytes' symbols first, then the others.
        let symbols = Self.byteSymbolsInTableOrder.map { String($0) }
        var order = symbols + symbols.map { $0 + "</w>" }
        order += merges.map { $0.0 + $0.1 }
        order += [Self.startOfText, Self.endOfText]
        for (id, token) in order.enumerated() {
            // open_clip's dict(zip(vocab, range)): a repeated token keeps its last id.
            vocabulary[token] = id
        }
        for (k, (a, b)) in merges.enumerated() where vocabulary[a] == nil || vocabulary[b] == nil {
            throw CLIPTokenizerError(file: path, line: k + 2, "merge \"\(a) \(b)\": \(vocabulary[a] == nil ? a : b) is not a symbol of an earlier line or a byte")
        }
        guard let pad = vocabulary[padToken] else { throw CLIPTokenizerError(file: path, "pad token \"\(padToken)\" is not in the vocabulary") }
        let unk = SpecialToken(content: Self.endOfText, id: order.count - 1, normalized: true)
        self.init(vocabulary: vocabulary, merges: merges,
                  startToken: SpecialToken(content: Self.startOfText, id: order.count - 2, normalized: true), endToken: unk,
                  padToken: SpecialToken(content: padToken, id: pad, normalized: false), maxLength: maxLength)
    }

    /// `vocab.json`: an object of token -> id, ids distinct integers in 0..<2^31.
    static func readVocabulary(_ path: String) throws(CLIPTokenizerError) -> [String: Int] {
        let object: Any
        let data: Data
        do {
            data = try StrictJSON.read(path, limit: fileLimit)
            object = try StrictJSON.jsonObject(data, source: path)
        } catch { throw CLIPTokenizerError(file: path, error.message) }
        guard let map = object as? [String: Any] else { throw CLIPTokenizerError(file: path, "expected a JSON object of token -> id") }
        guard !map.isEmpty else { throw CLIPTokenizerError(file: path, "empty vocabulary") }
        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(map.count)
        var byId: [Int: String] = [:]
        byId.reserveCapacity(map.count)
        for (token, value) in map {
            let isBool = (value as? NSNumber).map { String(cString: $0.objCType) == "c" } ?? false
            guard !isBool, let id = value as? Int, id >= 0, id < Int(Int32.max) else {
                throw CLIPTokenizerError(file: path, line: lineOf(token, in: data), "token \"\(token)\": expected an integer id in 0..<2147483647, found \(value)")
            }
            if let other = byId[id] {
                let (a, b) = (lineOf(other, in: data) ?? 0, lineOf(token, in: data) ?? 0)
                let (first, second) = a <= b ? (other, token) : (token, other)
                throw CLIPTokenizerError(file: path, line: max(a, b) > 0 ? max(a, b) : nil, "tokens \"\(first)\" and \"\(second)\" share id \(id)")
            }
            byId[id] = token
            vocabulary[token] = id
        }
        guard byId.count == (byId.keys.max() ?? -1) + 1 else {
            let missing = (0...(byId.keys.max() ?? 0)).first { byId[$0] == nil } ?? 0
            throw CLIPTokenizerError(file: path, "ids are not 0..<\(byId.count): no token has id \(missing)")
        }
        return vocabulary
    }

    /// `merges.txt`: an optional `#version` first line, then one merge per line ("a b"), every
    /// symbol and every merge result in the vocabulary, no merge twice.
    static func readMerges(_ path: String, vocabulary: [String: Int], vocabPath: String) throws(CLIPTokenizerError) -> [(String, String)] {
        let data: Data
        do { data = try RegularFile.read(path, limit: fileLimit) } catch { throw CLIPTokenizerError(file: path, error.reason) }
        guard let text = String(validating: data, as: UTF8.self) else { throw CLIPTokenizerError(file: path, "not valid UTF-8") }
        var merges: [(String, String)] = []
        var seen = Set<String>()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (index, raw) in lines.enumerated() {
            let number = index + 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if index == 0 && line.hasPrefix("#version") { continue }
            if line.isEmpty && index == lines.count - 1 { continue }  // the final newline
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw CLIPTokenizerError(file: path, line: number, "expected a merge: two symbols separated by one space, found \"\(line.prefix(80))\"")
            }
            let a = String(parts[0]), b = String(parts[1])
            for s in [a, b, a + b] where vocabulary[s] == nil {
                throw CLIPTokenizerError(file: path, line: number, "\"\(s)\" is not in \(vocabPath)")
            }
            guard seen.insert(a + " " + b).inserted else {
                throw CLIPTokenizerError(file: path, line: number, "merge \"\(a) \(b)\" given twice")
            }
            merges.append((a, b))
        }
        return merges
    }

    /// Every byte symbol, alone and with `</w>`, must be in the vocabulary (byte-level BPE starts from them).
    static func checkBytes(_ vocabulary: [String: Int], file: String) throws(CLIPTokenizerError) {
        for s in byteSymbols {
            for t in [String(s), String(s) + "</w>"] where vocabulary[t] == nil {
                throw CLIPTokenizerError(file: file, "no entry for the byte symbol \"\(t)\" (U+\(String(s.value, radix: 16, uppercase: true)))")
            }
        }
    }

    /// The 1-based line where `token` first appears as a JSON string in `data` (error messages only).
    static func lineOf(_ token: String, in data: Data) -> Int? {
        guard let encoded = try? JSONSerialization.data(withJSONObject: [token], options: [.fragmentsAllowed]) else { return nil }
        let needle = [UInt8](encoded.dropFirst().dropLast())  // "token" without [ ]
        let bytes = [UInt8](data)
        guard needle.count > 0, bytes.count >= needle.count else { return nil }
        var line = 1
        for i in 0...(bytes.count - needle.count) {
            if bytes[i] == 0x0A { line += 1 }
            if bytes[i] == needle[0] && bytes[i..<(i + needle.count)].elementsEqual(needle) { return line }
        }
        return nil
    }
}

/// Special tokens and `model_max_length` as `tokenizer_config.json` and `special_tokens_map.json` give them.
struct SpecialTokenConfig {
    var tokens: [String: (content: String, normalized: Bool)] = [:]
    /// Which file each token came from.
    var source: [String: String] = [:]
    var maxLength: Int?

    mutating func read(_ path: String) throws(CLIPTokenizerError) {
        let object: Any
        do { object = try StrictJSON.jsonObject(try StrictJSON.read(path, limit: 1 << 20), source: path) } catch {
            throw CLIPTokenizerError(file: path, error.message)
        }
        guard let map = object as? [String: Any] else { throw CLIPTokenizerError(file: path, "expected a JSON object") }
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            guard let value = map[key], !(value is NSNull) else { continue }
            if let s = value as? String {
                tokens[key] = (s, false)
            } else if let o = value as? [String: Any], let content = o["content"] as? String {
                let normalized = o["normalized"]
                if let normalized, !(normalized is NSNull) {
                    guard let b = normalized as? Bool, (normalized as? NSNumber).map({ String(cString: $0.objCType) == "c" }) ?? true else {
                        throw CLIPTokenizerError(file: path, "\(key).normalized must be true or false, not \(normalized)")
                    }
                    tokens[key] = (content, b)
                } else {
                    tokens[key] = (content, false)
                }
            } else {
                throw CLIPTokenizerError(file: path, "\(key) must be a string or an object with a string \"content\", not \(value)")
            }
            source[key] = path
        }
        if let value = map["model_max_length"], !(value is NSNull) {
            let isBool = (value as? NSNumber).map { String(cString: $0.objCType) == "c" } ?? false
            guard !isBool, let x = value as? Double, x.isFinite, x >= 2, x == x.rounded() else {
                throw CLIPTokenizerError(file: path, "model_max_length must be an integer of at least 2, not \(value)")
            }
            // transformers writes 1e30 for "no limit": keep CLIP's 77 then.
            maxLength = x <= Double(CLIPTokenizer.maxLengthBound) ? Int(x) : nil
        }
    }
}
