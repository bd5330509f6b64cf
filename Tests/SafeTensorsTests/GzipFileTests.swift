import Foundation
import XCTest
@testable import SafeTensors

/// `GzipFile`: bounded inflation (a gzip bomb is refused), truncated and corrupt streams,
/// trailing bytes, files that are not gzip.
final class GzipFileTests: XCTestCase {
    /// Gzips `data` with the system's gzip into `dir/name.gz`.
    func gzip(_ data: Data, _ dir: String, _ name: String) throws -> String {
        let path = dir + "/" + name
        try data.write(to: URL(fileURLWithPath: path))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["gzip", "-n", "-f", path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        return path + ".gz"
    }

    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-gzip-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func testRoundTrip() throws {
        let dir = try tempDir()
        let text = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        XCTAssertEqual(try GzipFile.read(try gzip(text, dir, "a.bin")), text)
    }

    func testBombRefused() throws {
        let dir = try tempDir()
        // 32 MB of zeros: about 32 KB compressed, twice the default 16 MB bound.
        let bomb = try gzip(Data(count: 32 << 20), dir, "bomb.bin")
        XCTAssertLessThan(try RegularFile.size(bomb), 100_000)
        XCTAssertThrowsError(try GzipFile.read(bomb)) { e in
            XCTAssertEqual(e as? GzipError, GzipError(file: bomb, "inflates to more than the \(GzipFile.defaultLimit)-byte limit for this file"))
        }
    }

    func testTruncatedCorruptTrailingAndNotGzip() throws {
        let dir = try tempDir()
        let good = try RegularFile.read(try gzip(Data(repeating: 7, count: 10_000) + Data("end".utf8), dir, "b.bin"))
        XCTAssertThrowsError(try GzipFile.decompress(good.dropLast(4), source: "t")) { e in
            XCTAssertTrue("\(e)".contains("truncated gzip stream"), "\(e)")
        }
        var corrupt = good
        corrupt[corrupt.count - 6] ^= 0xFF  // the CRC-32
        XCTAssertThrowsError(try GzipFile.decompress(corrupt, source: "c")) { e in XCTAssertTrue("\(e)".contains("corrupt gzip data"), "\(e)") }
        XCTAssertThrowsError(try GzipFile.decompress(good + Data([1, 2, 3]), source: "x")) { e in
            XCTAssertEqual(e as? GzipError, GzipError(file: "x", "3 bytes after the end of the gzip stream"))
        }
        XCTAssertThrowsError(try GzipFile.decompress(Data(repeating: 0x41, count: 40), source: "p")) { e in
            XCTAssertTrue("\(e)".contains("not a gzip file"), "\(e)")
        }
        XCTAssertThrowsError(try GzipFile.read(dir)) { e in XCTAssertTrue("\(e)".contains("directory"), "\(e)") }
    }
}
