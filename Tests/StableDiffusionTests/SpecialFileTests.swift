import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// A FIFO or a device given to `inspect`, as a config or as a scheduler config: refused before it
/// is opened (nothing blocks), naming the file.
final class SpecialFileTests: XCTestCase {
    func testModelsAndConfigsThatAreNotRegularFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("alter-special-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/model.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        for path in [fifo, "/dev/zero"] {
            XCTAssertThrowsError(try CheckpointSource.locate(path)) { e in
                XCTAssertTrue("\(e)".contains(path) && "\(e)".contains("not a regular file"), "\(e)")
            }
            XCTAssertThrowsError(try SchedulerConfig(contentsOfFile: path)) { e in
                XCTAssertTrue("\(e)".contains(path) && "\(e)".contains("not a regular file"), "\(e)")
            }
            var options = LoadOptions()
            options.configPath = path
            let model = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/sd21-tiny.safetensors").path
            XCTAssertThrowsError(try UNetCheckpoint(path: model, options: options)) { e in
                XCTAssertTrue("\(e)".contains(path) && "\(e)".contains("not a regular file"), "\(e)")
            }
        }
        // A unet folder whose config.json is a FIFO.
        let folder = dir + "/unet"
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny-sd2/diffusers"), toPath: folder)
        try FileManager.default.removeItem(atPath: folder + "/config.json")
        XCTAssertEqual(mkfifo(folder + "/config.json", 0o644), 0)
        XCTAssertThrowsError(try UNetCheckpoint(path: folder)) { e in XCTAssertTrue("\(e)".contains("not a regular file"), "\(e)") }
    }
}
