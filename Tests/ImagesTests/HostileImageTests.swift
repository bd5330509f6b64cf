import Foundation
import Images
import XCTest

/// Hostile and broken files, made here: each is a typed error naming the file, never a crash,
/// a hang or an unbounded allocation.
final class HostileImageTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws { dir = try temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// Writes `bytes` to a file in the test directory and returns its path.
    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = dir + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Reads `path`, expecting an error that names it; returns the reason.
    func reason(_ path: String, line: UInt = #line) -> ImageError.Reason? {
        let e = expectImageError(path, line: line) { try ImageFile.read(path: path) }
        XCTAssertEqual(e?.file, path, line: line)
        if let e { XCTAssertTrue(e.description.hasPrefix(path + ": "), e.description, line: line) }
        return e?.reason
    }

    /// A PNG chunk with its CRC.
    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return be32(UInt32(data.count)) + body + be32(crc32(body))
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }

    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// A PNG whose IHDR declares `width` x `height` (8-bit RGB) followed by a tiny IDAT.
    static func png(width: UInt32, height: UInt32) -> [UInt8] {
        signature + chunk("IHDR", be32(width) + be32(height) + [8, 2, 0, 0, 0])
            + chunk("IDAT", [0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]) + chunk("IEND", [])
    }

    func testDeclaredSizeRefusedFromTheHeader() throws {
        guard case .tooLarge(100_000, 100_000)? = reason(try file("huge.png", Self.png(width: 100_000, height: 100_000))) else {
            return XCTFail("100000x100000 PNG")
        }
        // Within the side bound but past the pixel bound.
        guard case .tooLarge(20_000, 20_000)? = reason(try file("many.png", Self.png(width: 20_000, height: 20_000))) else {
            return XCTFail("20000x20000 PNG")
        }
        guard case .zeroSize(0, 5)? = reason(try file("zero.png", Self.png(width: 0, height: 5))) else { return XCTFail("0x5 PNG") }
        // A JPEG whose frame header declares 60000x60000, and one declaring 30000x30000 pixels.
        let jpeg = try ImageFixtures.bytes("ycbcr420.jpg")
        let sof = try XCTUnwrap((0..<jpeg.count - 1).first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 })
        for (side, expected) in [(60_000, ImageError.Reason.tooLarge(width: 60_000, height: 60_000)),
                                 (30_000, .tooLarge(width: 30_000, height: 30_000)), (0, .zeroSize(width: 0, height: 0))] {
            var patched = jpeg
            patched[sof + 5] = UInt8(side >> 8); patched[sof + 6] = UInt8(side & 0xFF)
            patched[sof + 7] = UInt8(side >> 8); patched[sof + 8] = UInt8(side & 0xFF)
            let got = reason(try file("side\(side).jpg", patched))
            if side == 0 {
                guard case .zeroSize? = got else { return XCTFail("0x0 JPEG: \(String(describing: got))") }
            } else {
                XCTAssertEqual(got, expected)
            }
        }
    }

    func testTruncatedAndBadCRC() throws {
        let png = try ImageFixtures.bytes("rgb8.png")
        guard case .truncated? = reason(try file("half.png", Array(png.prefix(png.count / 2)))) else { return XCTFail("half PNG") }
        guard case .truncated? = reason(try file("header.png", Array(png.prefix(20)))) else { return XCTFail("20-byte PNG") }
        guard case .truncated? = reason(try file("no-iend.png", Array(png.dropLast(12)))) else { return XCTFail("PNG without IEND") }
        // Flip the last byte of IDAT's CRC.
        let idat = try XCTUnwrap((0..<png.count - 4).first { png[$0..<$0 + 4].elementsEqual("IDAT".utf8) })
        let length = Int(png[idat - 4]) << 24 | Int(png[idat - 3]) << 16 | Int(png[idat - 2]) << 8 | Int(png[idat - 1])
        var bad = png
        bad[idat + 4 + length + 3] ^= 0xFF
        guard case .corrupt(let why)? = reason(try file("crc.png", bad)) else { return XCTFail("bad IDAT CRC") }
        XCTAssertTrue(why.contains("CRC"), why)
        // A bad CRC in an ancillary chunk (tEXt) is an error too.
        var text = Self.chunk("tEXt", Array("Comment\0hello".utf8))
        text[text.count - 1] ^= 0x01
        let withText = Array(png.prefix(33)) + text + Array(png.dropFirst(33))
        guard case .corrupt? = reason(try file("text-crc.png", withText)) else { return XCTFail("bad tEXt CRC") }
        let jpeg = try ImageFixtures.bytes("progressive.jpg")
        guard case .truncated? = reason(try file("half.jpg", Array(jpeg.prefix(jpeg.count / 2)))) else { return XCTFail("half JPEG") }
        guard case .truncated? = reason(try file("sof.jpg", Array(jpeg.prefix(200)))) else { return XCTFail("200-byte JPEG") }
    }

    func testNotImagesAndSpecialFiles() throws {
        XCTAssertEqual(reason(try file("empty.png", [])), .empty)
        guard case .notAnImage(let text)? = reason(try file("text.png", Array("hello, world\n".utf8))) else { return XCTFail("text") }
        XCTAssertTrue(text.contains("68 65 6C 6C 6F"), text)
        guard case .notAnImage(let gif)? = reason(try file("image.png", Array("GIF89a".utf8) + [UInt8](repeating: 0, count: 20))) else {
            return XCTFail("GIF")
        }
        XCTAssertTrue(gif.contains("GIF"), gif)
        guard case .access(let why)? = reason(dir) else { return XCTFail("directory") }
        XCTAssertTrue(why.contains("directory"), why)
        guard case .access? = reason(dir + "/missing.png") else { return XCTFail("missing") }
        let fifo = dir + "/fifo.png"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        guard case .access(let fifoWhy)? = reason(fifo) else { return XCTFail("FIFO") }
        XCTAssertTrue(fifoWhy.contains("FIFO"), fifoWhy)
        guard case .access? = reason("/dev/zero") else { return XCTFail("/dev/zero") }
        // A (sparse) file past the size bound is refused before it is read.
        let big = dir + "/big.png"
        XCTAssertTrue(FileManager.default.createFile(atPath: big, contents: Data(Self.signature)))
        XCTAssertEqual(truncate(big, off_t(ImageBounds.fileBytes + 1)), 0)
        guard case .access(let bigWhy)? = reason(big) else { return XCTFail("big file") }
        XCTAssertTrue(bigWhy.contains("limit"), bigWhy)
    }

    /// 300 one-byte corruptions of each of four files (positions spread over the whole file, random
    /// values), and every truncation length of a PNG: a decoded image or a typed error, nothing else.
    func testCorruptionsNeverCrash() throws {
        var outcomes = [String: Int]()
        for name in ["palette4-trns.png", "rgb8-interlaced.png", "gray.jpg", "progressive.jpg"] {
            let original = try ImageFixtures.bytes(name)
            var generator = SystemRandomNumberGenerator()
            for i in 0..<300 {
                var bytes = original
                let at = original.count <= 300 ? i % original.count : i * original.count / 300  // spread over headers and data
                bytes[at] ^= UInt8.random(in: 1...255, using: &generator)
                do {
                    _ = try ImageFile.decode(Data(bytes), file: name)
                    outcomes["decoded", default: 0] += 1
                } catch {
                    outcomes["\(error.reason)".components(separatedBy: "(").first!, default: 0] += 1
                }
            }
        }
        let png = try ImageFixtures.bytes("rgb16.png")
        for n in 0..<png.count {
            XCTAssertThrowsError(try ImageFile.decode(Data(png.prefix(n)), file: "rgb16.png"))
        }
        XCTAssertGreaterThan(outcomes["corrupt", default: 0], 0, "\(outcomes)")
    }
}
