import XCTest
@testable import SafeTensors

/// Valid files: what the reader accepts and how tensors read back.
final class ReaderTests: SafeTensorsTestCase {
    func testEmptyHeader() throws {
        for bytes in [fileBytes("{}"), fileBytes("{}", pad: false), fileBytes("  {\n}\t\r\n ", pad: false)] {
            let f = try open(bytes)
            XCTAssertEqual(f.tensors, [])
            XCTAssertEqual(f.names, [])
            XCTAssertNil(f.metadata)
            XCTAssertEqual(f.header.dataSize, 0)
            XCTAssertEqual(f.fileSize, bytes.count)
        }
    }

    func testScalarShape() throws {
        let f = try open(fileBytes(header(entry("s", "F32", [], 0, 4)), f32Bytes([3.25])))
        let info = try f.require("s")
        XCTAssertEqual(info.shape, [])
        XCTAssertEqual(info.elementCount, 1)
        XCTAssertEqual(info.byteCount, 4)
        XCTAssertEqual(try f.floats("s"), [3.25])
    }

    func testZeroSizeTensors() throws {
        // Zero-size tensors may sit at any boundary, including the end and the start.
        let h = header(entry("z0", "F32", [0], 0, 0), entry("a", "U8", [2], 0, 2),
                       entry("z1", "I64", [3, 0, 5], 2, 2), entry("b", "U8", [1], 2, 3),
                       entry("z2", "BF16", [0], 3, 3))
        let f = try open(fileBytes(h, [7, 8, 9]))
        XCTAssertEqual(f.names, ["z0", "a", "z1", "b", "z2"])
        XCTAssertEqual(try f.floats("z0"), [])
        XCTAssertEqual(try f.floats("z2"), [])
        XCTAssertEqual(try f.rawBytes("z1").count, 0)
        XCTAssertEqual(try f.require("z1").elementCount, 0)
        XCTAssertEqual(Array(try f.rawBytes("b")), [9])
        f.release(try f.require("z1"))  // no-op on an empty range
        // Only zero-size tensors, no data at all.
        let g = try open(fileBytes(header(entry("e", "F16", [0, 4], 0, 0))))
        XCTAssertEqual(g.header.dataSize, 0)
    }

    func testMetadata() throws {
        let text = "{\"__metadata__\":{\"format\":\"pt\",\"empty\":\"\",\"quote\\\"d\":\"line\\nbreak \\u00e9 \\ud83d\\ude00 \\u0000 end\"},"
            + entry("w", "U8", [1], 0, 1) + "}"
        let f = try open(fileBytes(text, [5]))
        XCTAssertEqual(f.metadata, ["format": "pt", "empty": "", "quote\"d": "line\nbreak é 😀 \u{0} end"])
        XCTAssertEqual(f.names, ["w"])
        // Metadata may come after the tensors, and may be empty.
        let g = try open(fileBytes("{" + entry("w", "U8", [1], 0, 1) + ",\"__metadata__\":{}}", [5]))
        XCTAssertEqual(g.metadata, [:])
    }

    func testPaddingSpaces() throws {
        let h = header(entry("w", "U8", [2], 0, 2))
        for padding in ["", " ", "       ", String(repeating: " ", count: 1000), "\n", "\r\n\t "] {
            let f = try open(fileBytes(h + padding, [1, 2], pad: false))
            XCTAssertEqual(f.header.headerLength, h.utf8.count + padding.utf8.count)
            XCTAssertEqual(Array(try f.rawBytes("w")), [1, 2])
        }
    }

    func testEntriesInAnyOrderAreSortedByOffset() throws {
        let h = header(entry("c", "U8", [1], 2, 3), entry("a", "U8", [1], 1, 2), entry("b", "U8", [1], 0, 1))
        let f = try open(fileBytes(h, [10, 11, 12]))
        XCTAssertEqual(f.names, ["b", "a", "c"])
        XCTAssertEqual(f.tensors.map(\.dataOffsets), [0..<1, 1..<2, 2..<3])
        XCTAssertEqual(f.info("c")?.dataOffsets, 2..<3)
    }

    func testEveryDTypeIsAccepted() throws {
        var entries: [String] = []
        var offset = 0
        for d in DType.allCases {
            entries.append(entry(d.rawValue.lowercased(), d.rawValue, [2], offset, offset + 2 * d.byteSize))
            offset += 2 * d.byteSize
        }
        let f = try open(fileBytes("{" + entries.joined(separator: ",") + "}", Array(repeating: 0, count: offset)))
        XCTAssertEqual(f.tensors.map(\.dtype), DType.allCases)
        XCTAssertEqual(DType.allCases.filter(\.isFloatConvertible), [.f32, .f16, .bf16])
        XCTAssertEqual(offset, 2 * (8 * 3 + 4 * 3 + 2 * 4 + 1 * 5))
    }

    func testRawAccessOfNonFloatDTypes() throws {
        let i64: [Int64] = [-1, 0, Int64.max, Int64.min, 1 << 40]
        let u8: [UInt8] = [0, 1, 127, 128, 255, 42]
        let bools: [UInt8] = [1, 0, 0, 1]
        let h = header(entry("ids", "I64", [5], 0, 40), entry("bytes", "U8", [2, 3], 40, 46),
                       entry("mask", "BOOL", [2, 2], 46, 50))
        // Header not padded: the I64 data starts at an odd address.
        let bytes = fileBytes(h, le(i64) + u8 + bools, pad: false)
        XCTAssertNotEqual((8 + h.utf8.count) % 8, 0)
        let f = try open(bytes)
        let raw = try f.rawBytes("ids")
        XCTAssertEqual((0..<5).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }, i64)
        XCTAssertEqual(Array(try f.rawBytes("bytes")), u8)
        XCTAssertEqual(Array(try f.rawBytes("mask")), bools)
        XCTAssertEqual(try f.require("mask").shape, [2, 2])
        for name in ["ids", "bytes", "mask"] {
            let info = try f.require(name)
            XCTAssertEqual(f.rawBytes(info).count, info.byteCount)
            f.release(info)
            XCTAssertEqual(f.rawBytes(info).count, info.byteCount)  // still readable after release
        }
        XCTAssertEqual(Array(try f.rawBytes("bytes")), u8)
    }

    func testFloatsFromF32F16BF16() throws {
        let f32: [Float] = [0, -0.0, 1, -2.5, 65504, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude]
        // F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), -inf, 0.333251953125, -0
        let f16Bits: [UInt16] = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0xFC00, 0x3555, 0x8000]
        let f16Values: [Float] = [1, -2, 65504, 0x1p-24, -.infinity, 0.333251953125, -0.0]
        // BF16: 1, -2, 3.140625, max finite, smallest subnormal, inf
        let bf16Bits: [UInt16] = [0x3F80, 0xC000, 0x4049, 0x7F7F, 0x0001, 0x7F80]
        let bf16Values: [Float] = [1, -2, 3.140625, Float(bitPattern: 0x7F7F_0000), Float(bitPattern: 0x0001_0000), .infinity]
        let a = f32.count * 4, b = a + f16Bits.count * 2, c = b + bf16Bits.count * 2
        let h = header(entry("f32", "F32", [f32.count], 0, a), entry("f16", "F16", [f16Bits.count], a, b),
                       entry("bf16", "BF16", [2, 3], b, c), entry("nan16", "F16", [2], c, c + 4),
                       entry("nanbf", "BF16", [1], c + 4, c + 6))
        for pad in [true, false] {  // aligned and unaligned data
            let f = try open(fileBytes(h, f32Bytes(f32) + le(f16Bits) + le(bf16Bits) + le([0x7E00, 0xFD01, 0xFFC1] as [UInt16]), pad: pad))
            XCTAssertEqual(try f.floats("f32").map(\.bitPattern), f32.map(\.bitPattern))
            XCTAssertEqual(try f.floats("f16").map(\.bitPattern), f16Values.map(\.bitPattern))
            XCTAssertEqual(try f.floats("bf16").map(\.bitPattern), bf16Values.map(\.bitPattern))
            let nans = try f.floats("nan16")
            XCTAssertTrue(nans[0].isNaN && nans[1].isNaN && nans[1].sign == .minus)
            XCTAssertTrue(try f.floats("nanbf")[0].isNaN)
        }
    }

    func testFloatsOfI32IsNotFloat() throws {
        let f = try open(fileBytes(header(entry("n", "I32", [2], 0, 8), entry("q", "F8_E4M3", [1], 8, 9)),
                                   le([1, 2] as [Int32]) + [0x38]))
        for (name, dtype) in [("n", DType.i32), ("q", .f8e4m3)] {
            XCTAssertThrowsError(try f.floats(name)) { error in
                let e = error as! SafeTensorsError
                XCTAssertEqual(e, SafeTensorsError(file: f.path, tensor: name, .notFloat(dtype)))
            }
        }
    }

    func testUnknownTensorName() throws {
        let f = try open(fileBytes(header(entry("w", "F32", [1], 0, 4)), f32Bytes([1])))
        XCTAssertNil(f.info("W"))
        let expected = SafeTensorsError(file: f.path, tensor: "missing", .noSuchTensor)
        XCTAssertThrowsError(try f.require("missing")) { XCTAssertEqual($0 as? SafeTensorsError, expected) }
        XCTAssertThrowsError(try f.rawBytes("missing")) { XCTAssertEqual($0 as? SafeTensorsError, expected) }
        XCTAssertThrowsError(try f.floats("missing")) { XCTAssertEqual($0 as? SafeTensorsError, expected) }
        // The metadata key is not a tensor.
        XCTAssertThrowsError(try f.require("__metadata__"))
    }

    func testLargestAcceptedValues() throws {
        // Dimensions up to 2^53 are accepted when the product fits (a zero dimension).
        let big = 1 << 53
        let f = try open(fileBytes(header(entry("z", "U8", [big, 0, big], 0, 0))))
        XCTAssertEqual(f.tensors[0].shape, [big, 0, big])
        XCTAssertEqual(f.tensors[0].elementCount, 0)
        // 64 dimensions.
        let g = try open(fileBytes(header(entry("r", "U8", Array(repeating: 1, count: 64), 0, 1)), [3]))
        XCTAssertEqual(g.tensors[0].shape.count, 64)
    }

    func testParseOfAPrefixOfTheFile() throws {
        // `parse` needs only the header bytes when given the whole file size.
        let bytes = fileBytes(header(entry("w", "U8", [3], 0, 3)), [1, 2, 3])
        let h = try bytes.withUnsafeBytes { buf in
            try SafeTensorsHeader.parse(UnsafeRawBufferPointer(rebasing: buf[0..<(bytes.count - 3)]),
                                        fileSize: bytes.count, file: "prefix")
        }
        XCTAssertEqual(h.tensors.map(\.name), ["w"])
        XCTAssertEqual(h.dataSize, 3)
    }
}
