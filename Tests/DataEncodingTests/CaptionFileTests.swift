import DataEncoding
import Foundation
import XCTest

/// Captions files: JSON lines and RFC 4180 CSV, and what is refused (with the line).
final class CaptionFileTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/encode-data")

    func parse(_ text: String, _ format: CaptionFile.Format) throws -> [CaptionEntry] {
        try CaptionFile.parse(Data(text.utf8), format: format, source: "c")
    }

    /// The error's message for `text`; fails when it parses.
    func failure(_ text: String, _ format: CaptionFile.Format, line: UInt = #line) -> String {
        do {
            let e = try parse(text, format)
            XCTFail("parsed: \(e)", line: line)
            return ""
        } catch { return "\(error)" }
    }

    func testFixtureJSONLinesAndCSVAgree() throws {
        let jsonl = try CaptionFile.read(Self.fixtures.appendingPathComponent("captions.jsonl").path)
        let csv = try CaptionFile.read(Self.fixtures.appendingPathComponent("captions.csv").path)
        XCTAssertEqual(jsonl.map(\.file), ["wide.png", "tall.png", "square.png", "photo.jpg"])
        XCTAssertEqual(jsonl.map(\.text), csv.map(\.text))
        XCTAssertEqual(jsonl.map(\.file), csv.map(\.file))
        XCTAssertEqual(csv[0].text, "a red square, on a \"blue\" mat")
        XCTAssertEqual(csv[1].text, "two cats; one naïve dog")
        XCTAssertEqual(csv[2].text, "")
        XCTAssertEqual(csv.map(\.line), [2, 3, 4, 5])
    }

    func testCSVQuoting() throws {
        let e = try parse("\u{FEFF}text,file\n\"line one\nline two\",./a/b.png\nplain,\"c.jpg\"\n\n", .csv)
        XCTAssertEqual(e, [CaptionEntry(file: "a/b.png", text: "line one\nline two", line: 2),
                           CaptionEntry(file: "c.jpg", text: "plain", line: 4)])
        XCTAssertEqual(try parse("file,text\r\nx.png,\"\"\"quoted\"\"\"", .csv), [CaptionEntry(file: "x.png", text: "\"quoted\"", line: 2)])
        for (text, words) in [
            ("file,text\nx.png,a \"b\" c\n", "c:2: a quote inside an unquoted field"),
            ("file,text\nx.png,\"open\n", "c:2: a quoted field is not closed"),
            ("file,text\nx.png,\"a\"b\n", "c:2: text after a closing quote"),
            ("file,text\nx.png,a,b\n", "c:2: 3 fields; the header has 2"),
            ("file,text\nx.png\n", "c:2: 1 field; the header has 2"),
            ("file,caption\nx.png,a\n", "c:1: unknown column 'caption'"),
            ("file,text,text\nx.png,a,b\n", "c:1: the header is 'file','text','text'; expected file,text"),
            ("file,text\n", "c: no captions"),
            ("file,text\n/etc/passwd,a\n", "not a path relative to the images folder"),
            ("file,text\n../x.png,a\n", "not a path inside the images folder"),
            ("file,text\na.png,x\nb.png,y\n./a.png,z\n", "c: 'a.png' has more than one caption (lines 2, 4)"),
        ] {
            let m = failure(text, .csv)
            XCTAssertTrue(m.contains(words), "\(text.debugDescription): \(m)")
        }
    }

    func testJSONLines() throws {
        let e = try parse("{\"file\": \"a.png\", \"text\": \"x\"}\n\n{\"text\": \"y\", \"file\": \"b.png\"}\r\n", .jsonLines)
        XCTAssertEqual(e, [CaptionEntry(file: "a.png", text: "x", line: 1), CaptionEntry(file: "b.png", text: "y", line: 3)])
        for (text, words) in [
            ("{\"file\": \"a.png\", \"text\": \"x\"}\n{\"file\": \"a.png\", \"text\": \"y\"}\n", "'a.png' has more than one caption (lines 1, 2)"),
            ("{\"file\": \"a.png\", \"text\": \"x\",}\n", "c:1: not valid JSON"),
            ("{\"file\": \"a.png\", \"file\": \"b.png\", \"text\": \"x\"}\n", "c:1:"),
            ("[\"a.png\", \"x\"]\n", "c:1: expected a JSON object"),
            ("{\"file\": \"a.png\", \"text\": 3}\n", "c:1: expected string values"),
            ("{\"file_name\": \"a.png\", \"text\": \"x\"}\n", "c:1: unknown key 'file_name'"),
            ("{\"file\": \"a.png\", \"text\": \"x\"}\n{\"file\": \"\", \"text\": \"y\"}\n", "c:2: an empty file name"),
        ] {
            let m = failure(text, .jsonLines)
            XCTAssertTrue(m.contains(words), "\(text.debugDescription): \(m)")
        }
        XCTAssertThrowsError(try CaptionFile.parse(Data([0x7B, 0xFF, 0x7D]), format: .jsonLines, source: "c")) { e in
            XCTAssertTrue("\(e)".contains("not valid UTF-8"), "\(e)")
        }
        XCTAssertThrowsError(try CaptionFile.read("/tmp/captions.txt")) { e in XCTAssertTrue("\(e)".contains("unknown captions format '.txt'"), "\(e)") }
    }
}
