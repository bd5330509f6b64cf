import Images
import TensorCore
import XCTest

/// Image <-> tensor as diffusers' VaeImageProcessor does it, and make_image_grid.
final class RGBImageTensorTests: XCTestCase {
    /// preprocess: x / 255 * 2 - 1 in Float32, [1, 3, H, W]; bit-identical to diffusers.
    func testPreprocessMatchesDiffusers() throws {
        for c in try ImageFixtures.manifest().preprocess {
            let t = try ImageFile.read(path: ImageFixtures.path(c.source)).tensor()
            XCTAssertEqual(t.shape, c.shape)
            let expected = try ImageFixtures.floats(c.expected)
            XCTAssertEqual(t.scalars.map(\.bitPattern), expected.map(\.bitPattern))
        }
    }

    /// postprocess + numpy_to_pil: identical bytes, including values outside [-1, 1] and values
    /// that land exactly on .5 before rounding (half to even).
    func testPostprocessMatchesDiffusers() throws {
        for c in try ImageFixtures.manifest().postprocess {
            let t = Tensor(shape: c.shape, values: try ImageFixtures.floats(c.input))
            let images = try RGBImage.images(from: t)
            XCTAssertEqual(images.count, c.expected.count)
            for (image, name) in zip(images, c.expected) {
                assertImage(image, try ImageFixtures.bytes(name), width: c.shape[3], height: c.shape[2], "postprocess \(name)")
            }
        }
    }

    func testRoundTripAndShapeErrors() throws {
        let image = try ImageFile.read(path: ImageFixtures.path("rgb8.png"))
        XCTAssertEqual(try RGBImage(tensor: image.tensor()), image)
        let bad = expectImageError("channels") { try RGBImage(tensor: Tensor(zeros: [1, 4, 2, 2])) }
        guard case .invalid? = bad?.reason else { return XCTFail("\(String(describing: bad))") }
        let index = expectImageError("index") { try RGBImage(tensor: Tensor(zeros: [1, 3, 2, 2]), index: 1) }
        guard case .invalid? = index?.reason else { return XCTFail("\(String(describing: index))") }
        XCTAssertEqual(try RGBImage(tensor: Tensor(repeating: .nan, shape: [1, 3, 1, 1])).pixels, [0, 0, 0])
    }

    /// make_image_grid: cells of the first image's size, other sizes pasted at the corner.
    func testGridMatchesDiffusers() throws {
        for c in try ImageFixtures.manifest().grid {
            let images = try c.sources.map { try ImageFile.read(path: ImageFixtures.path($0)) }
            let grid = try RGBImage.grid(images, rows: c.rows, cols: c.cols)
            assertImage(grid, try ImageFixtures.bytes(c.expected), width: c.width, height: c.height, "grid")
            let e = expectImageError("count") { try RGBImage.grid(Array(images.prefix(5)), rows: c.rows, cols: c.cols) }
            guard case .invalid? = e?.reason else { return XCTFail("\(String(describing: e))") }
            let huge = expectImageError("rows") { try RGBImage.grid(images, rows: .max, cols: .max) }
            guard case .invalid? = huge?.reason else { return XCTFail("\(String(describing: huge))") }
        }
    }
}
