import Foundation

/// CLIP's byte-level BPE tokenizer, applied exactly as transformers' `CLIPTokenizer` (the
/// `tokenizers`-backed one of transformers 5) applies it for Stable Diffusion:
///
/// 1. special tokens whose `normalized` flag is false (SD2.1's pad token "!") are cut out of the
///    raw text first and become their id directly;
/// 2. each remaining piece is normalized: NFC, every run of white space (Unicode `White_Space`)
///    to one space, lower case (each scalar's full lower-case mapping, without context);
/// 3. special tokens with `normalized` true (`<|startoftext|>`, `<|endoftext|>`) are cut out of
///    the normalized text;
/// 4. the rest is split with CLIP's pattern (`'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`;
///    white space is dropped), each piece's UTF-8 bytes are mapped to GPT-2's byte symbols, the
///    last one with `</w>`, and BPE merges are applied by rank.
///
/// `tokenize` adds `<|startoftext|>` and `<|endoftext|>`, truncates to `maxLength` (the end token
/// stays the last real token) and pads with the pad token. BPE results are cached per piece.
public final class CLIPTokenizer: @unchecked Sendable {
    /// A special (added) token: its text, its id, and whether it is matched in normalized text.
    public struct SpecialToken: Sendable, Equatable {
        public var content: String
        public var id: Int
        /// true: matched after normalization (so `<|ENDOFTEXT|>` matches too); false: matched in
        /// the raw text, exactly.
        public var normalized: Bool

        public init(content: String, id: Int, normalized: Bool) {
            self.content = content
            self.id = id
            self.normalized = normalized
        }
    }

    /// Text of the start token.
    public static let startOfText = "<|startoftext|>"
    /// Text of the end token.
    public static let endOfText = "<|endoftext|>"
    /// Context length of CLIP text encoders.
    public static let defaultMaxLength = 77

    /// Token text -> id.
    public let vocabulary: [String: Int]
    /// Id -> token text (ids without a token are empty strings).
    public let tokens: [String]
    /// Number of merges (ranks 0..<mergeCount).
    public let mergeCount: Int
    /// The start token (`<|startoftext|>`, 49406 in CLIP).
    public let startToken: SpecialToken
    /// The end token (`<|endoftext|>`, 49407 in CLIP).
    public let endToken: SpecialToken
    /// The padding token: "!" (id 0) for SD2.x, `<|endoftext|>` for SD1.x.
    public let padToken: SpecialToken
    /// Length of `tokenize`'s output (77).
    public let maxLength: Int

    /// Special tokens matched in raw text / in normalized text (longest first).
    let rawSpecials: [(scalars: [Unicode.Scalar], id: Int32)]
    let normalizedSpecials: [(scalars: [Unicode.Scalar], id: Int32)]
    /// Merge table: (left << 32 | right) -> (rank, merged id).
    let merges: [UInt64: (rank: Int32, merged: Int32)]
    /// Id of each byte's symbol, and of the byte's symbol with `</w>`.
    let byteIds: [Int32]
    let byteEndIds: [Int32]

    private let lock = NSLock()
    private var cache: [String: [Int32]] = [:]
    /// Pieces cached at most (the cache is emptied when full).
    static let cacheCapacity = 10_000

    /// A tokenizer from a vocabulary and ranked merges (already checked by the file readers:
    /// every merge's parts and result are in `vocabulary`, every byte symbol is).
    /// `specials` are the added tokens (start, end, pad and unknown, as the reader found them).
    init(vocabulary: [String: Int], merges: [(String, String)], startToken: SpecialToken, endToken: SpecialToken,
         padToken: SpecialToken, extraSpecials: [SpecialToken] = [], maxLength: Int) {
        precondition(maxLength >= 2, "CLIPTokenizer: maxLength below 2 leaves no room for the start and end tokens")
        self.vocabulary = vocabulary
        var tokens = [String](repeating: "", count: (vocabulary.values.max() ?? -1) + 1)
        for (t, i) in vocabulary { tokens[i] = t }
        self.tokens = tokens
        self.startToken = startToken
        self.endToken = endToken
        self.padToken = padToken
        self.maxLength = maxLength
        var table: [UInt64: (rank: Int32, merged: Int32)] = [:]
        table.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard let ia = vocabulary[a], let ib = vocabulary[b], let m = vocabulary[a + b] else {
                preconditionFailure("CLIPTokenizer: merge \(a) \(b) not in the vocabulary (the reader checks this)")
            }
            let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
            if table[key] == nil { table[key] = (Int32(rank), Int32(m)) }
        }
        self.merges = table
        self.mergeCount = merges.count
        let symbols = CLIPTokenizer.byteSymbols
        self.byteIds = symbols.map { Int32(vocabulary[String($0)] ?? -1) }
        self.byteEndIds = symbols.map { Int32(vocabulary[String($0) + "</w>"] ?? -1) }
        precondition(!byteIds.contains(-1) && !byteEndIds.contains(-1), "CLIPTokenizer: byte symbols missing (the reader checks this)")
        var seen = Set<String>()
        var raw: [(scalars: [Unicode.Scalar], id: Int32)] = [], normalized: [(scalars: [Unicode.Scalar], id: Int32)] = []
        for s in [padToken, startToken, endToken] + extraSpecials where !s.content.isEmpty && seen.insert(s.content).inserted {
            if s.normalized { normalized.append((Array(s.content.unicodeScalars), Int32(s.id))) } else {
                raw.append((Array(s.content.unicodeScalars), Int32(s.id)))
            }
        }
        rawSpecials = raw.sorted { $0.scalars.count > $1.scalars.count }
        normalizedSpecials = normalized.sorted { $0.scalars.count > $1.scalars.count }
    }

    // MARK: - Encoding

    /// The token ids of `text` without start, end or padding, untruncated.
    public func encode(_ text: String) -> [Int] {
        encodeIds(text).map(Int.init)
    }

    /// `text` as the text encoder takes it: start token, at most `maxLength - 2` text tokens, end
    /// token, then the pad token up to `maxLength`.
    public func tokenize(_ text: String) -> CLIPTokenization {
        let content = encodeIds(text)
        let kept = min(content.count, maxLength - 2)
        var ids = [Int]()
        ids.reserveCapacity(maxLength)
        ids.append(startToken.id)
        for i in 0..<kept { ids.append(Int(content[i])) }
        ids.append(endToken.id)
        let length = ids.count
        while ids.count < maxLength { ids.append(padToken.id) }
        return CLIPTokenization(inputIds: ids, attentionMask: (0..<maxLength).map { $0 < length ? 1 : 0 }, length: length,
                                untruncatedLength: content.count + 2)
    }

    /// The token text of each id (`?` for ids outside the vocabulary).
    public func tokenTexts(_ ids: [Int]) -> [String] {
        ids.map { $0 >= 0 && $0 < tokens.count ? tokens[$0] : "?" }
    }

    func encodeIds(_ text: String) -> [Int32] {
        var out: [Int32] = []
        forEachSpecialSplit(Array(text.unicodeScalars), rawSpecials) { piece, special in
            if let special { out.append(special); return }
            let normalized = CLIPTokenizer.normalize(piece)
            forEachSpecialSplit(normalized, normalizedSpecials) { part, special in
                if let special { out.append(special); return }
                CLIPTokenizer.forEachPiece(part) { word in out.append(contentsOf: bpe(word)) }
            }
        }
        return out
    }

    /// Calls `body` with the text between special tokens (nil id) and each special token's id, in
    /// order. Matching is leftmost, then longest (as the `tokenizers` added vocabulary matches).
    func forEachSpecialSplit(_ text: [Unicode.Scalar], _ specials: [(scalars: [Unicode.Scalar], id: Int32)],
                             _ body: (ArraySlice<Unicode.Scalar>, Int32?) -> Void) {
        if specials.isEmpty { if !text.isEmpty { body(text[...], nil) }; return }
        var start = 0, i = 0
        while i < text.count {
            var matched: (length: Int, id: Int32)?
            for s in specials where s.scalars.count <= text.count - i && s.scalars.first == text[i] {
                if text[i..<(i + s.scalars.count)].elementsEqual(s.scalars) { matched = (s.scalars.count, s.id); break }
            }
            if let m = matched {
                if start < i { body(text[start..<i], nil) }
                body([], m.id)
                i += m.length
                start = i
            } else {
                i += 1
            }
        }
        if start < text.count { body(text[start...], nil) }
    }

    /// NFC, white-space runs to one space, lower case (transformers' CLIP normalizer).
    static func normalize(_ text: ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar] {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: text)
        let nfc = String(view).precomposedStringWithCanonicalMapping
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        var inSpace = false
        for s in nfc.unicodeScalars {
            if s.properties.isWhitespace {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            if s.isASCII {
                out.append(s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value + 0x20)! : s)
            } else if s.properties.changesWhenLowercased {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(s)
            }
        }
        return out
    }

    enum ScalarClass { case space, letter, number, other }

    static func scalarClass(_ s: Unicode.Scalar) -> ScalarClass {
        if s.isASCII {
            let v = s.value
            if (v >= 0x61 && v <= 0x7A) || (v >= 0x41 && v <= 0x5A) { return .letter }
            if v >= 0x30 && v <= 0x39 { return .number }
            if v == 0x20 || (v >= 0x09 && v <= 0x0D) { return .space }
            return .other
        }
        if s.properties.isWhitespace { return .space }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    static let contractions: [[Unicode.Scalar]] = ["s", "t", "re", "ve", "m", "ll", "d"].map { Array($0.unicodeScalars) }
    static let patternSpecials: [[Unicode.Scalar]] = [startOfText, endOfText].map { Array($0.unicodeScalars) }

    /// Splits normalized text with CLIP's pattern (see the type's documentation), dropping white space.
    static func forEachPiece(_ text: ArraySlice<Unicode.Scalar>, _ body: (ArraySlice<Unicode.Scalar>) -> Void) {
        var i = text.startIndex
        let end = text.endIndex
        outer: while i < end {
            let c = text[i]
            if c == "<" {
                for sp in patternSpecials where end - i >= sp.count && text[i..<(i + sp.count)].elementsEqual(sp) {
                    body(text[i..<(i + sp.count)])
                    i += sp.count
                    continue outer
                }
            }
            if c == "'" {
                for k in contractions where end - i > k.count && text[(i + 1)...(i + k.count)].elementsEqual(k) {
                    body(text[i...(i + k.count)])
                    i += k.count + 1
                    continue outer
                }
            }
            switch scalarClass(c) {
            case .space:
                i += 1
            case .number:
                body(text[i...i])
                i += 1
            case .letter:
                var j = i + 1
                while j < end && scalarClass(text[j]) == .letter { j += 1 }
                body(text[i..<j])
                i = j
            case .other:
                var j = i + 1
                while j < end && scalarClass(text[j]) == .other { j += 1 }
                body(text[i..<j])
                i = j
            }
        }
    }

    /// The ids of one piece after BPE (cached).
    func bpe(_ piece: ArraySlice<Unicode.Scalar>) -> [Int32] {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: piece)
        let key = String(view)
        lock.lock()
        let hit = cache[key]
        lock.unlock()
        if let hit { return hit }
        let result = merge(Array(key.utf8))
        lock.lock()
        if cache.count >= CLIPTokenizer.cacheCapacity { cache.removeAll(keepingCapacity: true) }
        cache[key] = result
        lock.unlock()
        return result
    }

    /// BPE on the byte symbols of `bytes`: repeatedly merges every occurrence (left to right) of
    /// the adjacent pair with the lowest rank, as CLIP's reference implementation does.
    func merge(_ bytes: [UInt8]) -> [Int32] {
        guard let last = bytes.last else { return [] }
        var word = bytes.dropLast().map { byteIds[Int($0)] }
        word.append(byteEndIds[Int(last)])
        while word.count > 1 {
            var best: (rank: Int32, left: Int32, right: Int32, merged: Int32)?
            for k in 0..<(word.count - 1) {
                let key = UInt64(UInt32(word[k])) << 32 | UInt64(UInt32(word[k + 1]))
                if let m = merges[key], best == nil || m.rank < best!.rank {
                    best = (m.rank, word[k], word[k + 1], m.merged)
                }
            }
            guard let b = best else { break }
            var next: [Int32] = []
            next.reserveCapacity(word.count)
            var k = 0
            while k < word.count {
                if k + 1 < word.count && word[k] == b.left && word[k + 1] == b.right {
                    next.append(b.merged)
                    k += 2
                } else {
                    next.append(word[k])
                    k += 1
                }
            }
            word = next
        }
        return word
    }

    /// The byte symbols in the order of GPT-2's table (`bytes_to_unicode()`): printable bytes
    /// (`!`...`~`, `¡`...`¬`, `®`...`ÿ`) first, then the others in byte order. open_clip numbers
    /// its vocabulary in this order (ids 0...255, then the same with `</w>`).
    public static let byteSymbolsInTableOrder: [Unicode.Scalar] = {
        let printable = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        let others = (0..<256).filter { !printable.contains($0) }
        return (printable + others).map { byteSymbols[$0] }
    }()

    /// GPT-2's byte-to-unicode table: printable Latin-1 bytes map to themselves, the others to
    /// U+0100 and up, in byte order.
    public static let byteSymbols: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable { table[b] = Unicode.Scalar(UInt8(b)) } else {
                table[b] = Unicode.Scalar(UInt8(0)).withValue(256 + n)
                n += 1
            }
        }
        return table
    }()
}

extension Unicode.Scalar {
    /// A scalar below U+D800 with `value` (the byte symbol table only).
    fileprivate func withValue(_ value: UInt32) -> Unicode.Scalar {
        guard let s = Unicode.Scalar(value) else { preconditionFailure("not a scalar: \(value)") }
        return s
    }
}

/// The output of `CLIPTokenizer.tokenize`.
public struct CLIPTokenization: Sendable, Equatable {
    /// `maxLength` ids: start, text tokens, end, padding.
    public var inputIds: [Int]
    /// 1 for the real tokens (start to end), 0 for padding.
    public var attentionMask: [Int]
    /// Real tokens, start and end included (the position of the end token + 1).
    public var length: Int
    /// What `length` would have been without truncation.
    public var untruncatedLength: Int

    /// Whether text tokens were cut to fit.
    public var truncated: Bool { untruncatedLength > length }
}

/// What `alter tokenize --json` prints (formats/cli-json.md): the tokenizer, the prompt and its tokens.
public struct CLIPTokenizationReport: Encodable, Sendable, Equatable {
    /// The tokenizer file or folder as given.
    public var source: String
    public var prompt: String
    /// `maxLength` of the tokenizer.
    public var maxLength: Int
    public var padToken: String
    public var padTokenId: Int
    /// Real tokens (start and end included).
    public var tokenCount: Int
    /// Whether text tokens were cut to fit `maxLength`.
    public var truncated: Bool
    public var inputIds: [Int]
    public var attentionMask: [Int]
    /// The text of each of `inputIds`.
    public var tokens: [String]

    enum CodingKeys: String, CodingKey {
        case source, prompt, truncated, tokens
        case maxLength = "max_length", padToken = "pad_token", padTokenId = "pad_token_id", tokenCount = "token_count"
        case inputIds = "input_ids", attentionMask = "attention_mask"
    }

    /// Tokenizes `prompt` with `tokenizer` (read from `source`).
    public init(tokenizer: CLIPTokenizer, source: String, prompt: String) {
        let t = tokenizer.tokenize(prompt)
        self.source = source
        self.prompt = prompt
        maxLength = tokenizer.maxLength
        padToken = tokenizer.padToken.content
        padTokenId = tokenizer.padToken.id
        tokenCount = t.length
        truncated = t.truncated
        inputIds = t.inputIds
        attentionMask = t.attentionMask
        tokens = tokenizer.tokenTexts(t.inputIds)
    }
}
