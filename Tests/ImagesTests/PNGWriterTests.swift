import Foundation
import Images
import XCTest

final class PNGWriterTests: XCTestCase {
    /// Written, then read back: the same pixels; encoded twice: the same bytes.
    func testRoundTripAndDeterminism() throws {
        for name in ["rgb8.png", "palette8.png", "src-37x23.png", "ycbcr444.jpg"] {
            let image = try ImageFile.read(path: ImageFixtures.path(name))
            let bytes = try image.pngData()
            XCTAssertEqual(try ImageFile.decode(Data(bytes), file: name), image, name)
            XCTAssertEqual(try image.pngData(), bytes, name)
        }
    }

    /// The output policy: atomic, replaced only with `force`, never a directory or an input,
    /// no temporary file left behind.
    func testOutputPolicy() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try ImageFile.read(path: ImageFixtures.path("rgb8.png"))
        let b = try ImageFile.read(path: ImageFixtures.path("gray.jpg"))
        let out = dir + "/sub/out.png"
        try a.writePNG(to: out)
        XCTAssertEqual(try ImageFile.read(path: out), a)
        let exists = expectImageError("exists") { try b.writePNG(to: out) }
        guard case .output(let why)? = exists?.reason else { return XCTFail("\(String(describing: exists))") }
        XCTAssertTrue(why.contains("exists"), why)
        XCTAssertEqual(exists?.file, out)
        XCTAssertEqual(try ImageFile.read(path: out), a)
        try b.writePNG(to: out, force: true)
        XCTAssertEqual(try ImageFile.read(path: out), b)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/sub"), ["out.png"])
        let directory = expectImageError("directory") { try a.writePNG(to: dir + "/sub", force: true) }
        guard case .output? = directory?.reason else { return XCTFail("\(String(describing: directory))") }
        let input = expectImageError("input") { try a.writePNG(to: out, force: true, inputs: [out]) }
        guard case .output? = input?.reason else { return XCTFail("\(String(describing: input))") }
        XCTAssertEqual(try ImageFile.read(path: out), b)
    }
}
