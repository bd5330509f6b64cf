import Foundation
import Images
import XCTest

/// Tests/Fixtures/images, written by scripts/make_image_fixtures.py with Pillow and diffusers.
enum ImageFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images")

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    static func bytes(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: directory.appendingPathComponent(name))) }

    static func floats(_ name: String) throws -> [Float] {
        let raw = try bytes(name)
        return stride(from: 0, to: raw.count, by: 4).map { i in
            Float(bitPattern: UInt32(raw[i]) | UInt32(raw[i + 1]) << 8 | UInt32(raw[i + 2]) << 16 | UInt32(raw[i + 3]) << 24)
        }
    }

    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: directory.appendingPathComponent("manifest.json")))
    }

    struct Manifest: Decodable {
        struct Decode: Decodable {
            let file, expected, note: String
            let width, height: Int
            let pillowMode: String
            enum CodingKeys: String, CodingKey { case file, expected, note, width, height, pillowMode = "pillow_mode" }
        }
        struct Resize: Decodable {
            let source, filter, expected: String
            let size, width, height: Int?
            let resized: String?
            let resizedWidth, resizedHeight: Int?
            enum CodingKeys: String, CodingKey {
                case source, filter, expected, size, width, height, resized
                case resizedWidth = "resized_width", resizedHeight = "resized_height"
            }
        }
        struct Crop: Decodable {
            let source, expected: String
            let width, height: Int
        }
        struct Preprocess: Decodable {
            let source, expected: String
            let shape: [Int]
        }
        struct Postprocess: Decodable {
            let input: String
            let shape: [Int]
            let expected: [String]
        }
        struct Grid: Decodable {
            let sources: [String]
            let rows, cols, width, height: Int
            let expected: String
        }
        let decode: [Decode]
        let resize: [Resize]
        let crop: [Crop]
        let preprocess: [Preprocess]
        let postprocess: [Postprocess]
        let grid: [Grid]
        let cmyk: String
    }
}

/// The largest per-channel difference between `actual` and the expected bytes; fails (naming
/// the worst pixel) when it exceeds `tolerance` or the sizes differ.
@discardableResult
func assertImage(_ actual: RGBImage, _ expected: [UInt8], width: Int, height: Int, tolerance: Int = 0, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) -> Int {
    XCTAssertEqual(actual.width, width, "\(what): width", file: file, line: line)
    XCTAssertEqual(actual.height, height, "\(what): height", file: file, line: line)
    guard actual.width == width, actual.height == height, expected.count == width * height * 3 else {
        XCTFail("\(what): size \(actual.width)x\(actual.height), expected \(width)x\(height) (\(expected.count) bytes)", file: file, line: line)
        return .max
    }
    var worst = 0, at = 0, differing = 0
    for i in 0..<expected.count {
        let d = abs(Int(actual.pixels[i]) - Int(expected[i]))
        if d > 0 { differing += 1 }
        if d > worst { worst = d; at = i }
    }
    if worst > tolerance {
        let p = at / 3
        XCTFail("\(what): \(differing) of \(expected.count) bytes differ; worst \(worst) at (x \(p % width), y \(p / width), channel \(at % 3)): "
                + "\(actual.pixels[at]) vs \(expected[at]) (tolerance \(tolerance))", file: file, line: line)
    }
    return worst
}

/// The error `body` throws, failing when it throws none or another type.
func expectImageError(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Any) -> ImageError? {
    do {
        _ = try body()
        XCTFail("\(what): no error", file: file, line: line)
    } catch let e as ImageError {
        return e
    } catch {
        XCTFail("\(what): \(error)", file: file, line: line)
    }
    return nil
}
