import Images
import XCTest

/// Resizing and cropping against Pillow's `Image.resize` with torchvision's size and crop rules
/// (scripts/make_image_fixtures.py): downscaling, upscaling, one side up and one down, one side
/// unchanged, bilinear, bicubic and lanczos.
final class ImageResizeTests: XCTestCase {
    static let filters: [String: ImageResize.Filter] = ["bilinear": .bilinear, "bicubic": .bicubic, "lanczos": .lanczos]

    /// torchvision Resize(size) then CenterCrop(size): byte-identical to Pillow (tolerance 0).
    func testResizeShorterSideAndCenterCropMatchPillow() throws {
        let cases = try ImageFixtures.manifest().resize.filter { $0.size != nil }
        XCTAssertEqual(cases.count, 18)
        for c in cases {
            let filter = try XCTUnwrap(Self.filters[c.filter])
            let source = try ImageFile.read(path: ImageFixtures.path(c.source))
            let size = try XCTUnwrap(c.size)
            let resized = try ImageResize.resizeShorterSide(source, to: size, filter: filter)
            assertImage(resized, try ImageFixtures.bytes(try XCTUnwrap(c.resized)), width: try XCTUnwrap(c.resizedWidth),
                        height: try XCTUnwrap(c.resizedHeight), "\(c.source) Resize(\(size)) \(c.filter)")
            let cropped = try ImageResize.resizeAndCenterCrop(source, to: size, filter: filter)
            assertImage(cropped, try ImageFixtures.bytes(c.expected), width: size, height: size, "\(c.source) Resize+CenterCrop(\(size)) \(c.filter)")
        }
    }

    /// `Image.resize((w, h))` to both sides: byte-identical to Pillow.
    func testResizeToSizeMatchesPillow() throws {
        let cases = try ImageFixtures.manifest().resize.filter { $0.size == nil }
        XCTAssertEqual(cases.count, 15)
        for c in cases {
            let source = try ImageFile.read(path: ImageFixtures.path(c.source))
            let (w, h) = (try XCTUnwrap(c.width), try XCTUnwrap(c.height))
            let out = try ImageResize.resize(source, width: w, height: h, filter: try XCTUnwrap(Self.filters[c.filter]))
            assertImage(out, try ImageFixtures.bytes(c.expected), width: w, height: h, "\(c.source) -> \(w)x\(h) \(c.filter)")
        }
    }

    /// CenterCrop offsets (round half to even) and padding with black when the crop is larger.
    func testCenterCropMatchesTorchvision() throws {
        for c in try ImageFixtures.manifest().crop {
            let source = try ImageFile.read(path: ImageFixtures.path(c.source))
            let out = try ImageResize.centerCrop(source, width: c.width, height: c.height)
            assertImage(out, try ImageFixtures.bytes(c.expected), width: c.width, height: c.height, "crop \(c.width)x\(c.height)")
        }
    }

    func testShorterSideSize() {
        XCTAssertTrue(ImageResize.shorterSideSize(width: 300, height: 200, to: 64) == (96, 64))
        XCTAssertTrue(ImageResize.shorterSideSize(width: 37, height: 23, to: 16) == (25, 16))  // 16 * 37 / 23 = 25.7
        XCTAssertTrue(ImageResize.shorterSideSize(width: 20, height: 45, to: 33) == (33, 74))  // 33 * 45 / 20 = 74.25
        XCTAssertTrue(ImageResize.shorterSideSize(width: 512, height: 512, to: 512) == (512, 512))
    }

    /// Sizes outside the bounds are typed errors before anything is allocated: a 1x5000 image's
    /// shorter side to 20000 would be 20000 x 100,000,000.
    func testResizeBounds() throws {
        let thin = RGBImage(width: 1, height: 5000, pixels: [UInt8](repeating: 7, count: 15000))
        let e = expectImageError("huge") { try ImageResize.resizeShorterSide(thin, to: 20000) }
        guard case .tooLarge? = e?.reason else { return XCTFail("\(String(describing: e))") }
        let z = expectImageError("zero") { try ImageResize.resize(thin, width: 0, height: 3) }
        guard case .zeroSize? = z?.reason else { return XCTFail("\(String(describing: z))") }
        let c = expectImageError("crop") { try ImageResize.centerCrop(thin, width: 40000, height: 2) }
        guard case .tooLarge? = c?.reason else { return XCTFail("\(String(describing: c))") }
    }
}
