import Foundation
import XCTest
@testable import SafeTensors

/// `RegularFile`, the one gate every reader opens files through: only regular files, checked
/// before opening, so a FIFO, a device, a directory or a link to one is an error naming the path
/// instead of a read that blocks or never ends.
final class RegularFileTests: XCTestCase {
    private var dir: String!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-regularfile-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// Special files of every kind, with the words the error must use.
    func specials() throws -> [(path: String, kind: String)] {
        let fifo = dir + "/pipe.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let zeroLink = dir + "/zero.safetensors"
        try FileManager.default.createSymbolicLink(atPath: zeroLink, withDestinationPath: "/dev/zero")
        let fifoLink = dir + "/pipe-link.safetensors"
        try FileManager.default.createSymbolicLink(atPath: fifoLink, withDestinationPath: fifo)
        return [(fifo, "a FIFO"), (fifoLink, "a FIFO"), (dir, "a directory"), ("/dev/zero", "a character device"),
                (zeroLink, "a character device"), ("/dev/null", "a character device")]
    }

    func testEveryReaderRefusesSpecialFilesBeforeOpening() throws {
        for (path, kind) in try specials() {
            let expected = "is \(kind), not a regular file"
            XCTAssertThrowsError(try SafeTensorsFile(path: path)) { e in
                XCTAssertEqual((e as? SafeTensorsError)?.file, path)
                XCTAssertTrue("\(e)".contains(expected), "\(e)")
            }
            XCTAssertThrowsError(try SHA256.hex(file: path)) { e in XCTAssertTrue("\(e)".contains(path) && "\(e)".contains(expected), "\(e)") }
            XCTAssertThrowsError(try RegularFile.read(path)) { e in XCTAssertEqual(e as? FileAccessError, FileAccessError(path: path, expected)) }
            XCTAssertThrowsError(try StrictJSON.read(path)) { e in XCTAssertTrue("\(e)".contains(path) && "\(e)".contains(expected), "\(e)") }
            XCTAssertThrowsError(try RegularFile.size(path))
        }
    }

    func testSymbolicLinksToRegularFilesAreFollowedUnlessRefused() throws {
        let target = dir + "/target.safetensors"
        let bytes = fileBytes(header(entry("w", "F32", [2], 0, 8)), f32Bytes([1, 2]))
        try Data(bytes).write(to: URL(fileURLWithPath: target))
        let link = dir + "/link.safetensors"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        // Followed: the target's size and content.
        XCTAssertEqual(try RegularFile.size(link), bytes.count)
        XCTAssertEqual(try SafeTensorsFile(path: link).fileSize, bytes.count)
        XCTAssertEqual(try SHA256.hex(file: link), try SHA256.hex(file: target))
        // Refused where links are not allowed (inside a bundle), consistently.
        XCTAssertEqual(try RegularFile.status(link, followSymlinks: false)?.kind, .symlink)
        XCTAssertThrowsError(try RegularFile.size(link, followSymlinks: false)) { e in
            XCTAssertEqual(e as? FileAccessError, FileAccessError(path: link, "is a symbolic link, not a regular file"))
        }
        XCTAssertThrowsError(try SHA256.hex(file: link, followSymlinks: false))
        XCTAssertThrowsError(try RegularFile.read(link, followSymlinks: false))
        // Missing files and size limits.
        XCTAssertThrowsError(try RegularFile.read(dir + "/none")) { e in XCTAssertEqual(e as? FileAccessError, FileAccessError(path: dir + "/none", "not found")) }
        XCTAssertThrowsError(try RegularFile.read(target, limit: 10)) { e in XCTAssertTrue("\(e)".contains("more than the 10-byte limit"), "\(e)") }
        XCTAssertEqual(try RegularFile.read(target), Data(bytes))
    }
}

/// `StrictJSON`, the one JSON check behind every JSON file alter reads.
final class StrictJSONTests: XCTestCase {
    func message(_ text: String) -> String? {
        do { try StrictJSON.validate(Data(text.utf8), source: "f.json"); return nil } catch {
            XCTAssertEqual(error.file, "f.json")
            return error.message
        }
    }

    func testDuplicateKeysAtAnyDepthAreRefused() {
        let cases: [(String, String)] = [
            (#"{"a":1,"a":2}"#, #"duplicate key "a" at the top level"#),
            (#"{"a":1,"b":{"c":1,"c":2}}"#, #"duplicate key "c" in b"#),
            (#"{"x":{"y":{"z":{"k":1,"k":1}}}}"#, #"duplicate key "k" in x.y.z"#),
            (#"{"t":[{"n":1},{"n":1,"m":2,"n":3}]}"#, #"duplicate key "n" in t[1]"#),
            (#"[[{"a":1}],[{},{"q":1,"q":1}]]"#, #"duplicate key "q" in [1][1]"#),
            (#"{"\u0061":1,"a":2}"#, #"duplicate key "a" at the top level"#),
            ("{\"e\u{301}\":1,\"\u{e9}\":2}", "duplicate key \"\u{e9}\" at the top level"),
            (#"{"a\u0000b":1}"#, "contains a NUL character"),
            (#"{"a":{"k\u0000":1}}"#, "in a contains a NUL character"),
        ]
        for (text, expected) in cases {
            let m = message(text)
            XCTAssertTrue(m?.contains(expected) ?? false, "\(text): \(m ?? "accepted")")
        }
    }

    func testWhatOtherReadersDisagreeOnIsRefused() {
        for text in ["{\"a\":01}", "{\"a\":NaN}", "{'a':1}", "{\"a\":\"\u{1}\"}", #"{"a":"\udc00"}"#, "{\"a\":1} x", "", "{\"a\":1",
                     String(repeating: "[", count: 100) + String(repeating: "]", count: 100)] {
            XCTAssertTrue(message(text)?.hasPrefix("not valid JSON") ?? false, "\(text): \(message(text) ?? "accepted")")
        }
        // Numbers outside RFC 8259's grammar that json-c takes (BundleManifestFuzz found "0." in
        // a routing table: json-c read it as 0, Foundation refused the file).
        for text in ["[0.]", "[0.,1]", "[1e]", "[1e+]", "[-]", "[1.e5]", "[+1]", "[.5]", "[-01]", "[1.5.5]", "[1e5e5]", "{\"a\":-}",
                     "[1e3080]", "[-1e309]", "[" + String(repeating: "9", count: 400) + "]"] {
            XCTAssertTrue(message(text)?.hasPrefix("not valid JSON") ?? false, "\(text): \(message(text) ?? "accepted")")
        }
        for text in [#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}"#, "[]", "null", "12", "-0", #"{"a":"\u00e9","b":-0.5e3}"#,
                     "[0,-0.0,10E+2,1e-7,123.456e0,1.7e308]"] {
            XCTAssertNil(message(text), text)
        }
    }
}
