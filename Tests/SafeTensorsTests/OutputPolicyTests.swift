import Foundation
import XCTest
@testable import SafeTensors

/// The one output policy (`OutputTarget`), the advisory lock (`PathLock`) and the cleanup of
/// temporaries that killed processes left.
final class OutputPolicyTests: XCTestCase {
    func expectRefusal(_ target: OutputTarget, _ words: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try target.prepare(), file: file, line: line) { e in
            XCTAssertTrue("\(e)".contains(words), "\(e)", file: file, line: line)
            XCTAssertTrue("\(e)".hasPrefix(target.path), "the error names the output: \(e)", file: file, line: line)
        }
    }

    func testInputsAreNeverOutputs() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let input = dir.write("in.safetensors", [1, 2, 3])
        try FileManager.default.createSymbolicLink(atPath: dir.file("link.safetensors"), withDestinationPath: input)
        try FileManager.default.createDirectory(atPath: dir.file("folder/sub"), withIntermediateDirectories: true)
        let inFolder = dir.write("folder/sub/x.json", [0])
        for (path, kind) in [(input, OutputTarget.Kind.file), (dir.file("link.safetensors"), .file), (dir.file("./in.safetensors"), .file),
                             (dir.path, .bundle), (dir.file("folder"), .unetFolder), (dir.file("folder/sub/x.json/deeper"), .file)] {
            let inputs = path.hasSuffix("deeper") || path.hasSuffix("folder") ? [inFolder] : [input]
            expectRefusal(OutputTarget(path: path, kind: kind, replace: true, inputs: inputs), "an input of this command")
        }
        expectRefusal(OutputTarget(path: dir.file("folder/sub/new.safetensors"), kind: .file, replace: true, inputs: [dir.file("folder")]),
                      "inside an input")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: input)), Data([1, 2, 3]))
    }

    func testReplacesOnlyWithReplaceAndOnlyItsOwnKind() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let file = dir.write("out.safetensors", [1])
        expectRefusal(OutputTarget(path: file, kind: .file, replace: false, inputs: []), "already exists")
        XCTAssertNoThrow(try OutputTarget(path: file, kind: .file, replace: true, inputs: []).prepare())
        try FileManager.default.createDirectory(atPath: dir.file("plain"), withIntermediateDirectories: false)
        expectRefusal(OutputTarget(path: dir.file("plain"), kind: .file, replace: true, inputs: []), "is not a file")
        expectRefusal(OutputTarget(path: dir.file("plain"), kind: .bundle, replace: true, inputs: []), "is not a bundle")
        expectRefusal(OutputTarget(path: dir.file("plain"), kind: .unetFolder, replace: true, inputs: []), "is not a diffusers UNet folder")
        expectRefusal(OutputTarget(path: file, kind: .bundle, replace: true, inputs: []), "is not a bundle")
        // A run directory (config.json, metrics) is none of the kinds.
        try FileManager.default.createDirectory(atPath: dir.file("run"), withIntermediateDirectories: false)
        _ = dir.write("run/config.json", Array("{}".utf8))
        _ = dir.write("run/metrics.jsonl", [])
        expectRefusal(OutputTarget(path: dir.file("run"), kind: .bundle, replace: true, inputs: []), "is not a bundle")
        // A bundle replaces a bundle.
        try FileManager.default.createDirectory(atPath: dir.file("b.alter"), withIntermediateDirectories: false)
        _ = dir.write("b.alter/bundle.json", Array("{}".utf8))
        XCTAssertNoThrow(try OutputTarget(path: dir.file("b.alter"), kind: .bundle, replace: true, inputs: []).prepare())
        // Special files are never replaced.
        XCTAssertEqual(mkfifo(dir.file("fifo"), 0o600), 0)
        expectRefusal(OutputTarget(path: dir.file("fifo"), kind: .file, replace: true, inputs: []), "a FIFO")
    }

    func testParentsAreCreated() throws {
        let dir = TempDir()
        defer { dir.remove() }
        try OutputTarget(path: dir.file("a/b/c/out.safetensors"), kind: .file, replace: false, inputs: []).prepare()
        var isDir: ObjCBool = false
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.file("a/b/c"), isDirectory: &isDir) && isDir.boolValue)
        // A parent that is a file is an error naming the output.
        _ = dir.write("plainfile", [0])
        expectRefusal(OutputTarget(path: dir.file("plainfile/out.safetensors"), kind: .file, replace: false, inputs: []), "cannot create")
    }

    func testLockIsExclusiveUntilReleased() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let out = dir.file("x.alter")
        let first = try PathLock(beside: out)
        XCTAssertThrowsError(try PathLock(beside: out)) { XCTAssertTrue("\($0)".contains("another alter process"), "\($0)") }
        first.release()
        let second = try PathLock(beside: out)
        second.release()
        XCTAssertEqual(dir.contents(), [], "the sibling lock file is removed on release")
        let kept = try PathLock(lockFile: dir.file("run.lock"), describing: dir.file("run"))
        XCTAssertThrowsError(try PathLock(lockFile: dir.file("run.lock"), describing: dir.file("run")))
        kept.release()
        XCTAssertNoThrow(try PathLock(lockFile: dir.file("run.lock"), describing: dir.file("run")))
    }

    /// Temporaries of a process that no longer exists are removed when the same output is written
    /// again; those of a live process are left alone.
    func testStaleTemporariesOfDeadProcessesAreRemoved() throws {
        let dir = TempDir()
        defer { dir.remove() }
        var dead: Int32 = 4_000_000
        while kill(dead, 0) == 0 || errno != ESRCH { dead -= 1 }
        let out = dir.file("out.safetensors")
        _ = dir.write(".out.safetensors.alter-tmp-\(dead)-123", [1])
        try FileManager.default.createDirectory(atPath: dir.file(".out.safetensors.alter-tmp-\(dead)-7.old"), withIntermediateDirectories: true)
        let live = dir.write(".out.safetensors.alter-tmp-\(getppid())-5", [1])
        _ = dir.write(".other.safetensors.alter-tmp-\(dead)-1", [1])
        try AtomicFile.write(Data([9]), to: out)
        XCTAssertEqual(dir.contents(), [".other.safetensors.alter-tmp-\(dead)-1", (live as NSString).lastPathComponent, "out.safetensors"].sorted())
    }
}
