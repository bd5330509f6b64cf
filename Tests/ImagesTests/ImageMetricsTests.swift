import Foundation
import Images
import XCTest

/// PSNR and SSIM against scikit-image 0.26 (Tests/Fixtures/image-metrics, written by
/// scripts/make_image_metric_fixtures.py).
final class ImageMetricsTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/image-metrics")

    struct Expected: Decodable {
        struct Pair: Decodable {
            let name: String
            let width, height: Int
            let psnr: Double?
            let ssim: Double?
            let ssimError: String?
            enum CodingKeys: String, CodingKey { case name, width, height, psnr, ssim, ssimError = "ssim_error" }
        }
        let pairs: [Pair]
    }

    /// The relative tolerance reached against scikit-image (measured: see the test's output).
    static let tolerance = 1e-12

    func testMatchesScikitImage() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: Self.directory.appendingPathComponent("expected.json")))
        XCTAssertEqual(expected.pairs.count, 7)
        var worst = (error: 0.0, what: "")
        for pair in expected.pairs {
            let a = try ImageFile.read(path: Self.directory.appendingPathComponent("a-\(pair.name).png").path)
            let b = try ImageFile.read(path: Self.directory.appendingPathComponent("b-\(pair.name).png").path)
            XCTAssertEqual([a.width, a.height], [pair.width, pair.height], pair.name)
            let psnr = try ImageMetrics.psnr(a, b)
            if let e = pair.psnr {
                let rel = abs(psnr - e) / max(abs(e), 1e-300)
                if rel > worst.error { worst = (rel, "\(pair.name) PSNR \(psnr) vs \(e)") }
                XCTAssertEqual(psnr, e, accuracy: Self.tolerance * max(abs(e), 1), "\(pair.name): PSNR")
            } else {
                XCTAssertEqual(psnr, .infinity, "\(pair.name): identical images")
            }
            if let e = pair.ssim {
                let ssim = try ImageMetrics.ssim(a, b)
                let rel = abs(ssim - e) / abs(e)
                if rel > worst.error { worst = (rel, "\(pair.name) SSIM \(ssim) vs \(e)") }
                XCTAssertLessThanOrEqual(rel, Self.tolerance, "\(pair.name): SSIM \(ssim), scikit-image \(e)")
            } else {
                XCTAssertNotNil(pair.ssimError)
                XCTAssertThrowsError(try ImageMetrics.ssim(a, b), pair.name) { error in
                    XCTAssertEqual(error as? ImageMetricsError, .tooSmall(width: pair.width, height: pair.height, minimum: 11))
                }
            }
        }
        print("ImageMetrics vs scikit-image: worst relative error \(worst.error) (\(worst.what))")
    }

    func testIdenticalImages() throws {
        var bytes = [UInt8](repeating: 0, count: 13 * 17 * 3)
        for i in bytes.indices { bytes[i] = UInt8((i * 37 + i / 5) % 256) }
        let image = RGBImage(width: 13, height: 17, pixels: bytes)
        XCTAssertEqual(try ImageMetrics.psnr(image, image), .infinity)
        XCTAssertEqual(try ImageMetrics.ssim(image, image), 1, accuracy: 1e-15)
        XCTAssertEqual(try ImageMetrics.meanSquaredError(image, image), 0)
    }

    func testRefusals() throws {
        let a = RGBImage(width: 12, height: 11, pixels: [UInt8](repeating: 9, count: 12 * 11 * 3))
        let b = RGBImage(width: 11, height: 12, pixels: [UInt8](repeating: 9, count: 12 * 11 * 3))
        XCTAssertThrowsError(try ImageMetrics.psnr(a, b)) { XCTAssertEqual($0 as? ImageMetricsError, .sizeMismatch(a: [11, 12], b: [12, 11])) }
        XCTAssertThrowsError(try ImageMetrics.ssim(a, b))
        let thin = RGBImage(width: 40, height: 10, pixels: [UInt8](repeating: 9, count: 40 * 10 * 3))
        XCTAssertThrowsError(try ImageMetrics.ssim(thin, thin)) { XCTAssertTrue("\($0)".contains("at least 11"), "\($0)") }
    }
}
