import ExampleSupport
import Foundation
import SafeTensors
@testable import StableDiffusion
import XCTest

/// The CLIP tokenizer against transformers' CLIPTokenizer (Tests/Fixtures/tokenizer/cases.json,
/// scripts/make_tokenizer_fixtures.py), from open_clip's gzip BPE file and from a tokenizer folder.
final class CLIPTokenizerTests: XCTestCase {
    static let fixtures = Example.root.appendingPathComponent("Tests/Fixtures/tokenizer").path
    static var gz: String { fixtures + "/bpe_simple_vocab_16e6.txt.gz" }
    static var folder: String { fixtures + "/sd21-tokenizer" }

    struct Case: Decodable {
        var text: String
        var input_ids: [Int]
        var length: Int
        var ids: [Int]
    }

    struct Cases: Decodable {
        var metadata: [String: JSONValue]
        var cases: [Case]
    }

    enum JSONValue: Decodable {
        case string(String), number(Double)
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { self = .string(s) } else { self = .number(try c.decode(Double.self)) }
        }
    }

    static let cases: [Case] = {
        guard let data = try? RegularFile.read(fixtures + "/cases.json"),
              let decoded = try? JSONDecoder().decode(Cases.self, from: data) else { return [] }
        return decoded.cases
    }()

    func checkParity(_ tokenizer: CLIPTokenizer, _ label: String) throws {
        let cases = Self.cases
        XCTAssertGreaterThanOrEqual(cases.count, 2000, "cases.json missing or short")
        var mismatches: [String] = []
        for c in cases {
            let t = tokenizer.tokenize(c.text)
            let content = tokenizer.encode(c.text)
            if t.inputIds != c.input_ids || t.length != c.length || [49406] + content + [49407] != c.ids
                || t.attentionMask != (0..<77).map({ $0 < c.length ? 1 : 0 }) {
                mismatches.append("\(c.text.debugDescription): expected \(c.ids), got \([49406] + content + [49407])")
            }
        }
        XCTAssertEqual(mismatches.count, 0, "\(label): \(mismatches.count) of \(cases.count) strings differ from transformers; first: \(mismatches.prefix(5).joined(separator: "\n"))")
    }

    func testParityOpenCLIPGzip() throws {
        let tokenizer = try CLIPTokenizer(openCLIPBPE: Self.gz)
        XCTAssertEqual(tokenizer.vocabulary.count, 49408)
        XCTAssertEqual(tokenizer.startToken.id, 49406)
        XCTAssertEqual(tokenizer.endToken.id, 49407)
        XCTAssertEqual(tokenizer.padToken.id, 0)
        try checkParity(tokenizer, "open_clip gz")
    }

    func testParityTokenizerFolder() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.folder)
        XCTAssertEqual(tokenizer.padToken, .init(content: "!", id: 0, normalized: false))
        XCTAssertEqual(tokenizer.maxLength, 77)
        try checkParity(tokenizer, "tokenizer folder")
    }

    func testBothReadersBuildTheSameVocabulary() throws {
        let a = try CLIPTokenizer(openCLIPBPE: Self.gz), b = try CLIPTokenizer(folder: Self.folder)
        XCTAssertEqual(a.vocabulary, b.vocabulary)
        XCTAssertEqual(a.mergeCount, b.mergeCount)
        XCTAssertEqual(a.startToken, b.startToken)
        XCTAssertEqual(a.endToken, b.endToken)
        XCTAssertEqual(a.padToken, b.padToken)
    }

    func testPathResolution() throws {
        let dir = try temporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: dir + "/pipeline", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.folder, toPath: dir + "/pipeline/tokenizer")
        for path in [Self.gz, Self.folder, dir + "/pipeline"] {
            let t = try CLIPTokenizer(path: path)
            XCTAssertEqual(t.tokenize("a photo of a cat").inputIds.prefix(8), [49406, 320, 1125, 539, 320, 2368, 49407, 0], path)
        }
        XCTAssertThrowsError(try CLIPTokenizer(path: dir)) { e in
            XCTAssertTrue("\(e)".contains("no tokenizer here"), "\(e)")
        }
        XCTAssertThrowsError(try CLIPTokenizer(path: dir + "/absent")) { e in XCTAssertTrue("\(e)".contains("not found"), "\(e)") }
        XCTAssertThrowsError(try CLIPTokenizer(path: Self.folder + "/vocab.json")) { e in XCTAssertTrue("\(e)".contains(".txt.gz"), "\(e)") }
    }

    func testTruncationAndPadding() throws {
        let t = try CLIPTokenizer(openCLIPBPE: Self.gz)
        let long = t.tokenize(Array(repeating: "word", count: 200).joined(separator: " "))
        XCTAssertEqual(long.inputIds.count, 77)
        XCTAssertEqual(long.length, 77)
        XCTAssertEqual(long.inputIds.first, 49406)
        XCTAssertEqual(long.inputIds.last, 49407)
        XCTAssertTrue(long.truncated)
        XCTAssertEqual(long.untruncatedLength, 202)
        XCTAssertEqual(long.attentionMask, Array(repeating: 1, count: 77))
        let exact = t.tokenize(Array(repeating: "word", count: 75).joined(separator: " "))
        XCTAssertFalse(exact.truncated)
        XCTAssertEqual(exact.length, 77)
        let empty = t.tokenize("")
        XCTAssertEqual(empty.inputIds, [49406, 49407] + Array(repeating: 0, count: 75))
        XCTAssertEqual(empty.attentionMask, [1, 1] + Array(repeating: 0, count: 75))
        XCTAssertEqual(empty.length, 2)
        // SD2.x: "!" is the pad token, matched in raw text (id 0); SD1.x pads with <|endoftext|>
        // and "!" is an ordinary piece ("!</w>" = 256).
        XCTAssertEqual(t.encode("hi!"), [1883, 0])
        let sd1 = try CLIPTokenizer(openCLIPBPE: Self.gz, padToken: CLIPTokenizer.endOfText)
        XCTAssertEqual(sd1.encode("hi!"), [1883, 256])
        XCTAssertEqual(sd1.tokenize("hi").inputIds, [49406, 1883, 49407] + Array(repeating: 49407, count: 74))
        XCTAssertEqual(sd1.tokenize("hi").length, 3)
        let short = try CLIPTokenizer(openCLIPBPE: Self.gz, maxLength: 4)
        XCTAssertEqual(short.tokenize("a photo of a cat").inputIds, [49406, 320, 1125, 49407])
    }

    /// A small vocabulary: the 512 byte symbols and a few merges ("hello" is one token).
    func writeSmallFolder(_ dir: String, merges: [String] = ["h e", "l l", "l o</w>", "he ll", "hell o</w>"],
                          vocabFrom: [String]? = nil, extraVocab: String = "", config: String? = nil) throws {
        var tokens = CLIPTokenizer.byteSymbolsInTableOrder.map { String($0) } + CLIPTokenizer.byteSymbolsInTableOrder.map { String($0) + "</w>" }
        for m in vocabFrom ?? merges { tokens.append(m.replacingOccurrences(of: " ", with: "")) }
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        var entries = tokens.enumerated().map { i, t in "  \(String(data: try! JSONSerialization.data(withJSONObject: [t]), encoding: .utf8)!.dropFirst().dropLast()): \(i)" }
        if !extraVocab.isEmpty { entries.append(extraVocab) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try ("{\n" + entries.joined(separator: ",\n") + "\n}\n").write(toFile: dir + "/vocab.json", atomically: true, encoding: .utf8)
        try ("#version: 0.2\n" + merges.joined(separator: "\n") + "\n").write(toFile: dir + "/merges.txt", atomically: true, encoding: .utf8)
        if let config { try config.write(toFile: dir + "/tokenizer_config.json", atomically: true, encoding: .utf8) }
    }

    func testSmallFolder() throws {
        let dir = try temporaryDirectory(self) + "/tok"
        try writeSmallFolder(dir, config: #"{"pad_token": "!", "model_max_length": 8, "bos_token": {"content": "<|startoftext|>", "normalized": true}}"#)
        let t = try CLIPTokenizer(folder: dir)
        XCTAssertEqual(t.maxLength, 8)
        XCTAssertEqual(t.padToken.id, 0)
        let hello = try XCTUnwrap(t.vocabulary["hello</w>"])
        XCTAssertEqual(t.encode("Hello HELLO"), [hello, hello])
        XCTAssertEqual(t.tokenize("hello").inputIds, [t.startToken.id, hello, t.endToken.id, 0, 0, 0, 0, 0])
        // transformers' default when the config says "no limit" (1e30): 77.
        try writeSmallFolder(dir, config: #"{"model_max_length": 1e30}"#)
        XCTAssertEqual(try CLIPTokenizer(folder: dir).maxLength, 77)
        XCTAssertEqual(try CLIPTokenizer(folder: dir).padToken.content, "<|endoftext|>")
    }

    func assertError(_ body: @autoclosure () throws -> CLIPTokenizer, file expectedFile: String, line expectedLine: Int?,
                     _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            guard let e = e as? CLIPTokenizerError else { return XCTFail("not a CLIPTokenizerError: \(e)", file: file, line: line) }
            XCTAssertEqual(e.file, expectedFile, file: file, line: line)
            XCTAssertEqual(e.line, expectedLine, "\(e)", file: file, line: line)
            XCTAssertTrue(e.message.contains(fragment), "\(e)", file: file, line: line)
        }
    }

    func testMalformedFilesNameFileAndLine() throws {
        let dir = try temporaryDirectory(self) + "/tok"
        try writeSmallFolder(dir, merges: ["h e", "l l x", "l o</w>"])
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/merges.txt", line: 3, "two symbols separated by one space")
        try writeSmallFolder(dir, merges: ["h e", "he q"], vocabFrom: ["h e"])
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/merges.txt", line: 3, "\"heq\" is not in")
        try writeSmallFolder(dir, merges: ["h e", "h e"], vocabFrom: ["h e"])
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/merges.txt", line: 3, "given twice")
        try writeSmallFolder(dir, merges: ["h e"], extraVocab: #"  "bad": "7""#)
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/vocab.json", line: 517, "expected an integer id")
        try writeSmallFolder(dir, merges: ["h e"], extraVocab: #"  "dup": 3"#)
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/vocab.json", line: 517, "share id 3")
        try writeSmallFolder(dir, merges: ["h e"], extraVocab: #"  "gap": 900"#)
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/vocab.json", line: nil, "no token has id")
        try writeSmallFolder(dir, merges: ["h e"], extraVocab: #"  "h": 1"#)
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/vocab.json", line: nil, "duplicate key")
        try writeSmallFolder(dir, merges: ["h e"], config: #"{"pad_token": "<pad>"}"#)
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/tokenizer_config.json", line: nil, "pad_token \"<pad>\" is not in")
        try writeSmallFolder(dir, merges: ["h e"], config: #"{"model_max_length": 1}"#)
        assertError(try CLIPTokenizer(folder: dir), file: dir + "/tokenizer_config.json", line: nil, "model_max_length")

        // open_clip's file: a line that is not a merge, a file that ends early.
        let gzDir = try temporaryDirectory(self)
        func gzip(_ text: String) throws -> String {
            let path = gzDir + "/bpe-\(UUID().uuidString).txt"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["gzip", "-n", path]
            try p.run()
            p.waitUntilExit()
            return path + ".gz"
        }
        let badLine = try gzip("#version: 0.2\ni n\nt h e\n")
        assertError(try CLIPTokenizer(openCLIPBPE: badLine), file: badLine, line: 3, "expected a merge")
        let early = try gzip("#version: 0.2\ni n\nt h\n")
        assertError(try CLIPTokenizer(openCLIPBPE: early), file: early, line: 4, "ends after 2 merges")
    }

    func testTruncatedAndOversizedGzipRefused() throws {
        let dir = try temporaryDirectory(self)
        let data = try RegularFile.read(Self.gz)
        let truncated = dir + "/truncated.txt.gz"
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: truncated))
        XCTAssertThrowsError(try CLIPTokenizer(openCLIPBPE: truncated)) { e in
            XCTAssertTrue("\(e)".hasPrefix(truncated) && "\(e)".contains("truncated gzip stream"), "\(e)")
        }
        let notGzip = dir + "/plain.txt.gz"
        try Data("#version: 0.2\ni n\n".utf8).write(to: URL(fileURLWithPath: notGzip))
        XCTAssertThrowsError(try CLIPTokenizer(openCLIPBPE: notGzip)) { e in XCTAssertTrue("\(e)".contains("not a gzip file"), "\(e)") }
        // The real file inflates to about 1.7 MB: a 1 MB bound refuses it, as it would a bomb.
        XCTAssertThrowsError(try GzipFile.read(Self.gz, limit: 1 << 20)) { e in
            XCTAssertTrue("\(e)".contains("more than the 1048576-byte limit"), "\(e)")
        }
    }

    func testReportKeys() throws {
        let t = try CLIPTokenizer(openCLIPBPE: Self.gz)
        let report = CLIPTokenizationReport(tokenizer: t, source: Self.gz, prompt: "a photo of a cat!")
        XCTAssertEqual(report.tokenCount, 8)
        XCTAssertEqual(report.tokens.prefix(8), ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", "!", "<|endoftext|>"])
        try GoldenKeys.check(report, name: "tokenize")
    }

    func testCacheGivesTheSameIds() throws {
        let t = try CLIPTokenizer(openCLIPBPE: Self.gz)
        let text = "a lighthouse at dusk, highly detailed, trending on artstation"
        XCTAssertEqual(t.encode(text), t.encode(text))
    }
}
