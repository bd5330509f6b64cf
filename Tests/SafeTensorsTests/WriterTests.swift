import Foundation
import XCTest
@testable import SafeTensors

final class WriterTests: SafeTensorsTestCase {
    /// Writes `specs` in the writer's order with bytes from `bytes(spec)`.
    func writeAll(_ path: String, _ specs: [TensorSpec], metadata: [String: String]? = nil,
                  bytes: (TensorSpec) -> [UInt8]) throws {
        let w = try SafeTensorsWriter(path: path, tensors: specs, metadata: metadata)
        while let s = w.nextSpec {
            let b = bytes(s)
            try b.withUnsafeBytes { try w.write(s.name, bytes: $0) }
        }
        try w.finish()
    }

    /// Deterministic bytes for a spec.
    func pattern(_ s: TensorSpec) -> [UInt8] {
        let seed = s.name.utf8.reduce(UInt8(17)) { $0 &* 31 &+ $1 }
        return (0..<s.byteCount).map { UInt8(truncatingIfNeeded: $0 &* 7) &+ seed }
    }

    func testRoundTrip() throws {
        let specs = [
            TensorSpec(name: "z.last", dtype: .f32, shape: [2, 3]),
            TensorSpec(name: "a.first", dtype: .f16, shape: [5]),
            TensorSpec(name: "m.scalar", dtype: .bf16, shape: []),
            TensorSpec(name: "ids", dtype: .i64, shape: [3]),
            TensorSpec(name: "mask", dtype: .bool, shape: [7]),  // odd size: later data unaligned
            TensorSpec(name: "empty", dtype: .u8, shape: [0, 4]),
            TensorSpec(name: "B.upper", dtype: .f64, shape: [1]),
        ]
        let metadata = ["format": "pt", "note": "quote \" backslash \\ newline \n é 😀", "": "empty key"]
        let path = dir.file("model.safetensors")
        try writeAll(path, specs, metadata: metadata, bytes: pattern)

        let f = try SafeTensorsFile(path: path)
        // Names sorted by their UTF-8 bytes, which is also the data order.
        XCTAssertEqual(f.names, ["B.upper", "a.first", "empty", "ids", "m.scalar", "mask", "z.last"])
        XCTAssertEqual(f.header.headerLength % 8, 0)
        XCTAssertEqual(f.metadata, metadata)
        for s in specs {
            let info = try f.require(s.name)
            XCTAssertEqual(info.dtype, s.dtype, s.name)
            XCTAssertEqual(info.shape, s.shape, s.name)
            XCTAssertEqual(Array(f.rawBytes(info)), pattern(s), s.name)
        }
        // The header bytes are exactly what `headerBytes` produces, and the file is no longer.
        let raw = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(raw.count, 8 + f.header.headerLength + specs.map(\.byteCount).reduce(0, +))
    }

    func testNamesWithQuotesBackslashesUnicodeAndControlCharacters() throws {
        let names = ["q\"uote", "back\\slash", "\\\"both\\\"", "ünï©ødé", "日本語", "emoji 😀", "tab\there",
                     "line\nfeed", "cr\rlf", "bell\u{7}", "esc\u{1B}", "del\u{7F}", "u+001f\u{1F}", "/slash/", " ", ""]
        let specs = names.enumerated().map { TensorSpec(name: $1, dtype: .u8, shape: [$0 + 1]) }
        let path = dir.file("names.safetensors")
        try writeAll(path, specs, metadata: ["k\u{1}\"": "v\u{2}\\"], bytes: pattern)
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(Set(f.names), Set(names))
        XCTAssertEqual(f.metadata, ["k\u{1}\"": "v\u{2}\\"])
        for s in specs { XCTAssertEqual(Array(try f.rawBytes(s.name)), pattern(s), s.name) }
        XCTAssertEqual(f.header.headerLength % 8, 0)
    }

    func testWriteFloatsConvertsToTheSpecDType() throws {
        let values: [Float] = [1, -2, 0.1, 65504, 1e-8, .infinity]
        let specs = [TensorSpec(name: "f16", dtype: .f16, shape: [6]), TensorSpec(name: "bf16", dtype: .bf16, shape: [2, 3]),
                     TensorSpec(name: "f32", dtype: .f32, shape: [6])]
        let path = dir.file("floats.safetensors")
        let w = try SafeTensorsWriter(path: path, tensors: specs)
        XCTAssertEqual(w.order.map(\.name), ["bf16", "f16", "f32"])
        for name in ["bf16", "f16", "f32"] { try w.write(name, floats: values) }
        XCTAssertNil(w.nextSpec)
        try w.finish()
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(try f.floats("f32"), values)
        XCTAssertEqual(try f.floats("f16"), values.map { Float(Float16($0)) })
        XCTAssertEqual(try f.floats("bf16"), [1, -2, 0.10009765625, 65536, Float(bitPattern: 0x322C_0000), .infinity])
    }

    /// A tensor written in parts equals one written whole; a part past the end, a whole write in
    /// the middle of a tensor and a finish before its last part are refused.
    func testWritePartsAppendUntilTheTensorIsComplete() throws {
        let specs = [TensorSpec(name: "a", dtype: .u8, shape: [2, 3]), TensorSpec(name: "b", dtype: .u8, shape: [2])]
        let path = dir.file("parts.safetensors")
        let w = try SafeTensorsWriter(path: path, tensors: specs)
        let a = pattern(specs[0]), b = pattern(specs[1])
        try Array(a[0..<3]).withUnsafeBytes { try w.write("a", part: $0) }
        XCTAssertEqual(w.nextSpec?.name, "a")
        XCTAssertThrowsError(try Array(a[3..<6]).withUnsafeBytes { try w.write("a", bytes: $0) }) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "a", .writeOrder(expected: "a")))
        }
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try w.write("a", part: $0) }) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "a", .sizeMismatch(expected: 3, actual: 4)))
        }
        XCTAssertThrowsError(try w.finish())
        try Array(a[3..<6]).withUnsafeBytes { try w.write("a", part: $0) }
        XCTAssertEqual(w.nextSpec?.name, "b")
        try b.withUnsafeBytes { try w.write("b", part: $0) }
        XCTAssertNil(w.nextSpec)
        try w.finish()
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(Array(try f.rawBytes("a")), a)
        XCTAssertEqual(Array(try f.rawBytes("b")), b)
    }

    func testWrongOrderIsAnError() throws {
        let path = dir.file("order.safetensors")
        let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "b", dtype: .u8, shape: [1]),
                                                            TensorSpec(name: "a", dtype: .u8, shape: [1])])
        XCTAssertThrowsError(try [UInt8(1)].withUnsafeBytes { try w.write("b", bytes: $0) }) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "b", .writeOrder(expected: "a")))
        }
        XCTAssertThrowsError(try w.write("nope", floats: [1])) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "nope", .writeOrder(expected: "a")))
        }
        try [UInt8(1)].withUnsafeBytes { try w.write("a", bytes: $0) }
        try [UInt8(2)].withUnsafeBytes { try w.write("b", bytes: $0) }
        // Nothing is left to write.
        XCTAssertThrowsError(try [UInt8(3)].withUnsafeBytes { try w.write("c", bytes: $0) }) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "c", .writeOrder(expected: "(none)")))
        }
        try w.finish()
        XCTAssertEqual(try SafeTensorsFile(path: path).names, ["a", "b"])
    }

    func testWrongSizeIsAnError() throws {
        let path = dir.file("size.safetensors")
        let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "w", dtype: .f32, shape: [2]),
                                                            TensorSpec(name: "x", dtype: .i32, shape: [1])])
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 7).withUnsafeBytes { try w.write("w", bytes: $0) }) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "w", .sizeMismatch(expected: 8, actual: 7)))
        }
        XCTAssertThrowsError(try w.write("w", floats: [1, 2, 3])) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "w", .countMismatch(expected: 2, actual: 3)))
        }
        try w.write("w", floats: [1, 2])
        XCTAssertThrowsError(try w.write("x", floats: [1])) {
            XCTAssertEqual($0 as? SafeTensorsError, SafeTensorsError(file: path, tensor: "x", .notFloat(.i32)))
        }
        // finish() before every tensor is written fails and leaves nothing behind.
        XCTAssertThrowsError(try w.finish()) { error in
            let e = error as! SafeTensorsError
            XCTAssertEqual(e.tensor, "x")
            XCTAssertTrue(e.reason.isIO)
        }
        w.abort()
        XCTAssertEqual(dir.contents(), [])
    }

    func testInvalidSpecsAreRefusedBeforeAnythingIsCreated() {
        let path = dir.file("bad.safetensors")
        let cases: [([TensorSpec], [String: String]?, SafeTensorsError)] = [
            ([TensorSpec(name: "a", dtype: .u8, shape: [1]), TensorSpec(name: "a", dtype: .f32, shape: [2])], nil,
             SafeTensorsError(file: path, tensor: "a", .duplicateName)),
            // Canonically equivalent names, which the reader would refuse as duplicates.
            ([TensorSpec(name: "\u{E9}", dtype: .u8, shape: [1]), TensorSpec(name: "f", dtype: .u8, shape: [1]),
              TensorSpec(name: "e\u{301}", dtype: .u8, shape: [1])], nil,
             SafeTensorsError(file: path, tensor: "\u{E9}", .duplicateName)),
            ([TensorSpec(name: "n", dtype: .u8, shape: [2, -3])], nil,
             SafeTensorsError(file: path, tensor: "n", .invalidShape("dimension -3 is negative"))),
            ([TensorSpec(name: "o", dtype: .f64, shape: [1 << 30, 1 << 30, 1 << 30])], nil,
             SafeTensorsError(file: path, tensor: "o", .shapeOverflow)),
            ([TensorSpec(name: "__metadata__", dtype: .u8, shape: [1])], nil,
             SafeTensorsError(file: path, tensor: "__metadata__", .invalidEntry("'__metadata__' is reserved for metadata"))),
            ([TensorSpec(name: "nul\u{0}", dtype: .u8, shape: [1])], nil,
             SafeTensorsError(file: path, tensor: "nul\u{0}", .invalidEntry("name contains a NUL character"))),
            ([], ["k\u{0}": "v"], SafeTensorsError(file: path, .invalidMetadata("key 'k\u{0}' contains a NUL character"))),
        ]
        for (specs, metadata, expected) in cases {
            XCTAssertThrowsError(try SafeTensorsWriter(path: path, tensors: specs, metadata: metadata)) {
                XCTAssertEqual($0 as? SafeTensorsError, expected)
            }
            XCTAssertEqual(dir.contents(), [])
        }
    }

    func testDroppedWriterLeavesNoFile() throws {
        let path = dir.file("dropped.safetensors")
        do {
            let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "a", dtype: .u8, shape: [4]),
                                                                TensorSpec(name: "b", dtype: .u8, shape: [4])])
            try [UInt8](repeating: 1, count: 4).withUnsafeBytes { try w.write("a", bytes: $0) }
            XCTAssertEqual(dir.contents().count, 1)  // the temporary file, hidden
            XCTAssertTrue(dir.contents()[0].hasPrefix(".dropped.safetensors."))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(dir.contents(), [])
        // Fully written but not finished: also nothing.
        do {
            let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "a", dtype: .u8, shape: [1])])
            try [UInt8(1)].withUnsafeBytes { try w.write("a", bytes: $0) }
        }
        XCTAssertEqual(dir.contents(), [])
        // abort() then drop.
        let w = try SafeTensorsWriter(path: path, tensors: [])
        w.abort()
        XCTAssertEqual(dir.contents(), [])
        w.abort()
    }

    func testExistingDestinationUntouchedUntilFinishThenReplaced() throws {
        let path = dir.file("model.safetensors")
        try writeAll(path, [TensorSpec(name: "old", dtype: .u8, shape: [3])]) { _ in [1, 2, 3] }
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "new", dtype: .f32, shape: [1000])])
        try w.write("new", floats: Array(repeating: 2, count: 1000))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertEqual(try SafeTensorsFile(path: path).names, ["old"])
        try w.finish()
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(f.names, ["new"])
        XCTAssertEqual(try f.floats("new"), Array(repeating: 2, count: 1000))
        XCTAssertEqual(dir.contents(), ["model.safetensors"])

        // A writer dropped over an existing file leaves it as it was.
        let after = try Data(contentsOf: URL(fileURLWithPath: path))
        do {
            let w2 = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "x", dtype: .u8, shape: [1])])
            try [UInt8(9)].withUnsafeBytes { try w2.write("x", bytes: $0) }
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), after)
        XCTAssertEqual(dir.contents(), ["model.safetensors"])
    }

    func testTemporaryPathsRemovesRegisteredFiles() throws {
        // A writer's temporary file is registered, so an interrupt handler calling removeAll()
        // deletes it.
        let path = dir.file("interrupted.safetensors")
        let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "a", dtype: .u8, shape: [1])])
        XCTAssertEqual(dir.contents().count, 1)
        // Registered paths of other kinds: a file and a directory tree.
        let extra = dir.write("extra.tmp", [1, 2, 3])
        let tree = dir.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: tree + "/sub/f", contents: Data([1]))
        TemporaryPaths.shared.add(extra)
        TemporaryPaths.shared.add(tree)
        let keep = dir.write("keep", [0])  // not registered

        TemporaryPaths.shared.removeAll()
        XCTAssertEqual(dir.contents(), ["keep"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: keep))
        // The writer can no longer finish (its file is gone), but it fails with an error.
        try [UInt8(1)].withUnsafeBytes { try w.write("a", bytes: $0) }
        XCTAssertThrowsError(try w.finish())
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        // remove() forgets a path without deleting it.
        TemporaryPaths.shared.add(keep)
        XCTAssertTrue(TemporaryPaths.shared.remove(keep))
        XCTAssertFalse(TemporaryPaths.shared.remove(keep))
        TemporaryPaths.shared.removeAll()
        XCTAssertTrue(FileManager.default.fileExists(atPath: keep))
    }

    func testFinishTwiceAndWriteAfterFinish() throws {
        let path = dir.file("twice.safetensors")
        let w = try SafeTensorsWriter(path: path, tensors: [])
        try w.finish()
        XCTAssertEqual(try SafeTensorsFile(path: path).names, [])
        XCTAssertThrowsError(try w.finish())
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
        w.abort()  // no effect after finish
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
    }

    func testLargeTensorsBypassTheBuffer() throws {
        // More than the 1 MiB write buffer, in one write and in several.
        let n = 600_000
        let specs = [TensorSpec(name: "a", dtype: .f32, shape: [n]), TensorSpec(name: "b", dtype: .u8, shape: [3]),
                     TensorSpec(name: "c", dtype: .f16, shape: [n])]
        let path = dir.file("large.safetensors")
        let values = (0..<n).map { Float($0 % 2048) }
        let w = try SafeTensorsWriter(path: path, tensors: specs)
        try w.write("a", floats: values)
        try [UInt8](arrayLiteral: 1, 2, 3).withUnsafeBytes { try w.write("b", bytes: $0) }
        try w.write("c", floats: values)
        try w.finish()
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(try f.floats("a"), values)
        XCTAssertEqual(Array(try f.rawBytes("b")), [1, 2, 3])
        XCTAssertEqual(try f.floats("c"), values)
    }
}
