import Foundation
import XCTest
@testable import SafeTensors

/// Bytes of a safetensors file: the little-endian length prefix, the header text (padded with
/// spaces to a multiple of 8 unless `pad` is false) and the data section.
func fileBytes(_ header: String, _ data: [UInt8] = [], pad: Bool = true) -> [UInt8] {
    var h = Array(header.utf8)
    if pad { while h.count % 8 != 0 { h.append(0x20) } }
    return rawFile(length: UInt64(h.count), header: h, data: data)
}

/// Bytes of a file with an arbitrary length prefix (which need not match the header).
func rawFile(length: UInt64, header: [UInt8], data: [UInt8] = []) -> [UInt8] {
    withUnsafeBytes(of: length.littleEndian) { Array($0) } + header + data
}

/// One header entry: `"name":{"dtype":...,"shape":[...],"data_offsets":[b,e]}`.
func entry(_ name: String, _ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
    "\(jsonQuote(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
}

/// A header object from entries.
func header(_ entries: String...) -> String { "{" + entries.joined(separator: ",") + "}" }

func le<T: FixedWidthInteger>(_ xs: [T]) -> [UInt8] {
    xs.flatMap { x in withUnsafeBytes(of: x.littleEndian) { Array($0) } }
}

func f32Bytes(_ xs: [Float]) -> [UInt8] { le(xs.map(\.bitPattern)) }

/// A fresh directory under the system temporary directory, removed by `remove()`.
final class TempDir {
    let path: String
    init() {
        let base = NSTemporaryDirectory() + "SafeTensorsTests-\(getpid())-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        path = base
    }
    func file(_ name: String) -> String { path + "/" + name }
    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let p = file(name)
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }
    func contents() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The in-memory file name used with `SafeTensorsHeader.parse`.
let memName = "in-memory.safetensors"

func parse(_ bytes: [UInt8]) throws(SafeTensorsError) -> SafeTensorsHeader {
    do {
        return try bytes.withUnsafeBytes { buf in
            try SafeTensorsHeader.parse(buf, fileSize: bytes.count, file: memName)
        }
    } catch let e as SafeTensorsError {
        throw e
    } catch {
        fatalError("unexpected error type \(error)")
    }
}

/// Base class: a temporary directory per test.
class SafeTensorsTestCase: XCTestCase {
    var dir: TempDir!
    override func setUp() { dir = TempDir() }
    override func tearDown() { dir.remove() }

    /// Asserts that `bytes` is rejected, both in memory and from a file on disk, with an error
    /// naming the file and `tensor`, whose reason satisfies `check` (given the file name).
    func assertRejected(
        _ bytes: [UInt8], tensor: String?, _ what: String,
        file: StaticString = #filePath, line: UInt = #line,
        _ check: (SafeTensorsError.Reason) -> Bool
    ) {
        do {
            let h = try parse(bytes)
            XCTFail("parse accepted \(what): \(h)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.file, memName, file: file, line: line)
            XCTAssertEqual(error.tensor, tensor, "tensor named by \(error)", file: file, line: line)
            XCTAssertTrue(check(error.reason), "unexpected reason: \(error)", file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix(memName), error.description, file: file, line: line)
        }
        let path = dir.write("case-\(UUID().uuidString).safetensors", bytes)
        do {
            let f = try SafeTensorsFile(path: path)
            XCTFail("SafeTensorsFile accepted \(what): \(f.names)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.file, path, file: file, line: line)
            XCTAssertEqual(error.tensor, tensor, "tensor named by \(error)", file: file, line: line)
            XCTAssertTrue(check(error.reason), "unexpected reason: \(error)", file: file, line: line)
        }
    }

    /// Asserts rejection with exactly `reason`.
    func assertRejected(
        _ bytes: [UInt8], tensor: String?, exactly reason: SafeTensorsError.Reason,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        assertRejected(bytes, tensor: tensor, "\(reason)", file: file, line: line) { $0 == reason }
    }

    /// Opens `bytes` as a file (asserting it parses in memory to the same header).
    func open(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> SafeTensorsFile {
        let path = dir.write("valid-\(UUID().uuidString).safetensors", bytes)
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(try parse(bytes), f.header, file: file, line: line)
        return f
    }
}

extension SafeTensorsError.Reason {
    var isInvalidJSON: Bool { if case .invalidJSON = self { return true } else { return false } }
    var isInvalidShape: Bool { if case .invalidShape = self { return true } else { return false } }
    var isInvalidOffsets: Bool { if case .invalidOffsets = self { return true } else { return false } }
    var isInvalidEntry: Bool { if case .invalidEntry = self { return true } else { return false } }
    var isInvalidMetadata: Bool { if case .invalidMetadata = self { return true } else { return false } }
    var isCannotOpen: Bool { if case .cannotOpen = self { return true } else { return false } }
    var isIO: Bool { if case .io = self { return true } else { return false } }
}
