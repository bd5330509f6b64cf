import Foundation
import Images
import XCTest

/// Decoding against Pillow's `Image.open(p).convert("RGB")` (scripts/make_image_fixtures.py).
final class ImageFileTests: XCTestCase {
    /// Every PNG colour type and bit depth (with tRNS, interlaced): byte-identical to Pillow.
    func testPNGMatchesPillow() throws {
        let cases = try ImageFixtures.manifest().decode.filter { $0.file.hasSuffix(".png") }
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        for c in cases {
            let image = try ImageFile.read(path: ImageFixtures.path(c.file))
            assertImage(image, try ImageFixtures.bytes(c.expected), width: c.width, height: c.height, "\(c.file) (\(c.note))")
        }
    }

    /// JPEGs (baseline, 4:4:4, progressive, odd size, gray) against Pillow's decode. Pillow
    /// 13 bundles libjpeg-turbo 3.2.0, alter links Debian's 2.1.5; on these fixtures the decodes
    /// are identical, which is what this checks.
    func testJPEGMatchesPillow() throws {
        let cases = try ImageFixtures.manifest().decode.filter { $0.file.hasSuffix(".jpg") }
        XCTAssertEqual(cases.count, 5)
        for c in cases {
            let image = try ImageFile.read(path: ImageFixtures.path(c.file))
            assertImage(image, try ImageFixtures.bytes(c.expected), width: c.width, height: c.height, tolerance: 0, "\(c.file) (\(c.note))")
        }
    }

    /// A CMYK JPEG is refused, saying so.
    func testCMYKJPEGRefused() throws {
        let file = ImageFixtures.path(try ImageFixtures.manifest().cmyk)
        let e = expectImageError("CMYK") { try ImageFile.read(path: file) }
        guard case .unsupported(let why)? = e?.reason else { return XCTFail("\(String(describing: e))") }
        XCTAssertTrue(why.contains("CMYK"), why)
        XCTAssertEqual(e?.file, file)
    }

    /// The format comes from the bytes: a PNG named .jpg and a JPEG named .png read as they are.
    func testFormatFromBytesNotName() throws {
        let dir = try temporaryDirectory()
        let png = try ImageFixtures.bytes("rgb8.png"), jpeg = try ImageFixtures.bytes("gray.jpg")
        try Data(png).write(to: URL(fileURLWithPath: dir + "/image.jpg"))
        try Data(jpeg).write(to: URL(fileURLWithPath: dir + "/image.png"))
        XCTAssertEqual(try ImageFile.read(path: dir + "/image.jpg"), try ImageFile.read(path: ImageFixtures.path("rgb8.png")))
        XCTAssertEqual(try ImageFile.read(path: dir + "/image.png"), try ImageFile.read(path: ImageFixtures.path("gray.jpg")))
    }
}

/// A fresh directory under the system's temporary directory.
func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-images-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
