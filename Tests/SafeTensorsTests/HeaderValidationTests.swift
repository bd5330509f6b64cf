import XCTest
@testable import SafeTensors

/// One test per failure class of a hostile header: each asserts the exact reason, the file
/// and (where there is one) the tensor, both for `SafeTensorsHeader.parse` and for
/// `SafeTensorsFile(path:)`.
final class HeaderValidationTests: SafeTensorsTestCase {
    func testFileShorterThan8Bytes() {
        for n in 0..<8 {
            assertRejected(Array(repeating: 0, count: n), tensor: nil, exactly: .fileTooShort(size: n))
        }
        // Even a prefix that would announce an empty header is too short.
        assertRejected([2, 0, 0, 0, 0, 0, 0], tensor: nil, exactly: .fileTooShort(size: 7))
    }

    func testHeaderLengthBeyondTheFile() {
        let body = Array("{}      ".utf8)
        assertRejected(rawFile(length: 9, header: body), tensor: nil,
                       exactly: .headerBeyondFile(headerLength: 9, fileSize: 16))
        assertRejected(rawFile(length: 1, header: []), tensor: nil,
                       exactly: .headerBeyondFile(headerLength: 1, fileSize: 8))
        let n = UInt64(SafeTensorsHeader.maxHeaderLength)  // allowed size, but not present
        assertRejected(rawFile(length: n, header: body), tensor: nil,
                       exactly: .headerBeyondFile(headerLength: n, fileSize: 16))
    }

    func testHeaderLengthAbove100MB() {
        let limit = SafeTensorsHeader.maxHeaderLength
        XCTAssertEqual(limit, 100 * 1024 * 1024)
        for n in [UInt64(limit) + 1, 1 << 32, 1 << 63, UInt64.max] {
            assertRejected(rawFile(length: n, header: Array("{}".utf8)), tensor: nil,
                           exactly: .headerTooLarge(headerLength: n, limit: limit))
        }
    }

    func testHeaderNotValidJSON() {
        let e = entry("a", "U8", [1], 0, 1)
        let cases: [(String, [UInt8])] = [
            ("empty header", rawFile(length: 0, header: [])),
            ("truncated", fileBytes("{\"a\":{\"dtype\":\"U8\"", pad: false)),
            ("trailing comma", fileBytes("{" + e + ",}", [1])),
            ("trailing garbage", fileBytes(header(e) + "x", [1])),
            ("second object", fileBytes(header(e) + "{}", [1])),
            ("NUL padding", rawFile(length: 8, header: Array("{}".utf8) + [0, 0, 0, 0, 0, 0])),
            ("NUL inside", fileBytes("{\"a\u{0}\":1}")),
            ("single quotes", fileBytes("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", [1])),
            ("unquoted key", fileBytes("{a:1}")),
            ("comment", fileBytes("/* c */{}")),
            ("NaN", fileBytes("{\"__metadata__\":{\"k\":NaN}}")),
            ("Infinity", fileBytes("{\"a\":Infinity}")),
            ("leading zero", fileBytes("{" + "\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", [1])),
            ("plus sign", fileBytes("{" + "\"a\":{\"dtype\":\"U8\",\"shape\":[+1],\"data_offsets\":[0,1]}}", [1])),
            ("raw control character in a name", fileBytes("{\"a\u{1}\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", [1])),
            ("raw newline in a value", fileBytes("{\"__metadata__\":{\"k\":\"a\nb\"}}")),
            ("invalid escape", fileBytes("{\"__metadata__\":{\"k\":\"\\x\"}}")),
            ("lone surrogate", fileBytes("{\"__metadata__\":{\"k\":\"\\ud800\"}}")),
            ("lone low surrogate", fileBytes("{\"__metadata__\":{\"k\":\"\\udc00x\"}}")),
            ("invalid UTF-8", rawFile(length: 8, header: [0x7B, 0x22, 0xC3, 0x22, 0x3A, 0x31, 0x7D, 0x20])),
            ("overlong UTF-8", rawFile(length: 8, header: [0x7B, 0x22, 0xC0, 0xAF, 0x22, 0x3A, 0x31, 0x7D])),
            ("UTF-8 surrogate", rawFile(length: 16, header: Array("{\"".utf8) + [0xED, 0xA0, 0x80] + Array("\":1}       ".utf8))),
            ("byte order mark", fileBytes("\u{FEFF}{}")),
            ("form feed padding", fileBytes("{}\u{C}")),
            ("nesting too deep", fileBytes(String(repeating: "[", count: 100) + String(repeating: "]", count: 100))),
        ]
        for (what, bytes) in cases {
            assertRejected(bytes, tensor: nil, what) { $0.isInvalidJSON }
        }
    }

    func testHeaderNotAnObject() {
        for text in ["[]", "[{}]", "\"{}\"", "1", "null", "true"] {
            assertRejected(fileBytes(text), tensor: nil, exactly: .headerNotObject)
        }
    }

    func testUnknownDType() {
        for d in ["F31", "f32", "FLOAT", "", "F8_E4M3FN", "C64"] {
            assertRejected(fileBytes(header(entry("w", d, [1], 0, 4)), [0, 0, 0, 0]), tensor: "w",
                           exactly: .unknownDType(d))
        }
        // A dtype that is not a string at all.
        assertRejected(fileBytes("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", [0, 0, 0, 0]),
                       tensor: "w", "numeric dtype") { $0.isInvalidEntry }
    }

    func testNegativeShape() {
        assertRejected(fileBytes(header(entry("a.b", "U8", [2, -1], 0, 0))), tensor: "a.b",
                       exactly: .invalidShape("dimension 1 is negative (-1)"))
        // Two negatives whose product is positive and matches the span.
        assertRejected(fileBytes(header(entry("a", "U8", [-2, -2], 0, 4)), [1, 2, 3, 4]), tensor: "a",
                       exactly: .invalidShape("dimension 0 is negative (-2)"))
        assertRejected(fileBytes(header(entry("a", "U8", [Int.min], 0, 0))), tensor: "a",
                       exactly: .invalidShape("dimension 0 is negative (\(Int.min))"))
    }

    func testNonIntegerShape() {
        for dim in ["1.0", "1e0", "0.5", "\"1\"", "true", "null", "[1]", "{}"] {
            let text = "{\"t\":{\"dtype\":\"U8\",\"shape\":[\(dim)],\"data_offsets\":[0,1]}}"
            assertRejected(fileBytes(text, [1]), tensor: "t",
                           exactly: .invalidShape("dimension 0 is not an integer"))
        }
        for shape in ["4", "\"[4]\"", "null", "{}"] {
            assertRejected(fileBytes("{\"t\":{\"dtype\":\"U8\",\"shape\":\(shape),\"data_offsets\":[0,4]}}", [1, 2, 3, 4]),
                           tensor: "t", exactly: .invalidShape("missing or not an array"))
        }
        assertRejected(fileBytes("{\"t\":{\"dtype\":\"U8\",\"data_offsets\":[0,0]}}"), tensor: "t",
                       exactly: .invalidShape("missing or not an array"))
        let rank65 = "[" + Array(repeating: "1", count: 65).joined(separator: ",") + "]"
        assertRejected(fileBytes("{\"t\":{\"dtype\":\"U8\",\"shape\":\(rank65),\"data_offsets\":[0,1]}}", [1]),
                       tensor: "t", exactly: .invalidShape("65 entries (at most 64)"))
    }

    func testOverflowingShape() {
        func shaped(_ dims: String, _ dtype: String = "U8") -> [UInt8] {
            fileBytes("{\"t\":{\"dtype\":\"\(dtype)\",\"shape\":[\(dims)],\"data_offsets\":[0,1]}}", [1])
        }
        let cases = [
            "9007199254740993",                       // 2^53 + 1: above the per-value bound
            "9223372036854775807",                    // Int64.max
            "9223372036854775808",                    // Int64.max + 1 (json-c reads it as UInt64)
            "18446744073709551615",                   // UInt64.max
            "18446744073709551616",                   // beyond UInt64
            "100000000000000000000000000000",
            "4294967296,4294967296,4294967296",       // product overflows Int64
            "4294967296,4294967296",                  // product 2^64 wraps to 0 in UInt64
            "3037000500,3037000500",                  // product just above Int64.max
            "94906267,94906267",                      // 2^53 < product, each below
        ]
        for dims in cases {
            assertRejected(shaped(dims), tensor: "t", dims) { $0 == .shapeOverflow }
        }
        // The element size counts: 2^51 elements of 8 bytes is 2^54 bytes.
        assertRejected(shaped("2251799813685248", "F64"), tensor: "t", exactly: .shapeOverflow)
    }

    func testShapeTimesDTypeSizeDiffersFromSpan() {
        assertRejected(fileBytes(header(entry("w", "F32", [2], 0, 4)), [0, 0, 0, 0]), tensor: "w",
                       exactly: .sizeMismatch(expected: 8, actual: 4))
        assertRejected(fileBytes(header(entry("w", "F16", [3, 1], 0, 8)), Array(repeating: 0, count: 8)),
                       tensor: "w", exactly: .sizeMismatch(expected: 6, actual: 8))
        // A scalar is one element; a zero dimension is zero bytes.
        assertRejected(fileBytes(header(entry("s", "I64", [], 0, 0))), tensor: "s",
                       exactly: .sizeMismatch(expected: 8, actual: 0))
        assertRejected(fileBytes(header(entry("z", "I64", [0, 3], 0, 8)), Array(repeating: 0, count: 8)),
                       tensor: "z", exactly: .sizeMismatch(expected: 0, actual: 8))
    }

    func testOffsetsOutOfOrder() {
        // begin after end
        assertRejected(fileBytes(header(entry("a", "U8", [0], 4, 0)), [1, 2, 3, 4]), tensor: "a",
                       exactly: .invalidOffsets("begin 4 is after end 0"))
        // not a pair of non-negative integers
        for (offsets, why) in [
            ("[0]", "expected [begin, end], got 1 numbers"),
            ("[0,1,1]", "expected [begin, end], got 3 numbers"),
            ("[-1,0]", "offset 0 is negative (-1)"),
            ("[0,1.0]", "offset 1 is not an integer"),
            ("\"0,1\"", "missing or not an array"),
            ("[0,9007199254740993]", "offset too large"),
            ("[0,18446744073709551616]", "offset too large"),
        ] {
            assertRejected(fileBytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":\(offsets)}}", [1]),
                           tensor: "a", exactly: .invalidOffsets(why))
        }
        assertRejected(fileBytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", [1]), tensor: "a",
                       exactly: .invalidOffsets("missing or not an array"))
    }

    func testOffsetsOverlapping() {
        assertRejected(fileBytes(header(entry("a", "U8", [2], 0, 2), entry("b", "U8", [2], 1, 3)), [1, 2, 3]),
                       tensor: "b", exactly: .offsetsOverlap(previous: "a"))
        // Listed in the other order: the later-starting tensor is still the one named.
        assertRejected(fileBytes(header(entry("b", "U8", [2], 1, 3), entry("a", "U8", [2], 0, 2)), [1, 2, 3]),
                       tensor: "b", exactly: .offsetsOverlap(previous: "a"))
        // Same range twice.
        assertRejected(fileBytes(header(entry("x", "U8", [2], 0, 2), entry("y", "U8", [2], 0, 2)), [1, 2]),
                       tensor: "y", exactly: .offsetsOverlap(previous: "x"))
        // A zero-size tensor inside another one.
        assertRejected(fileBytes(header(entry("a", "U8", [4], 0, 4), entry("z", "U8", [0], 2, 2)), [1, 2, 3, 4]),
                       tensor: "z", exactly: .offsetsOverlap(previous: "a"))
    }

    func testOffsetsLeavingGaps() {
        assertRejected(fileBytes(header(entry("a", "U8", [1], 0, 1), entry("b", "U8", [1], 3, 4)), [1, 2, 3, 4]),
                       tensor: "b", exactly: .offsetsGap(previous: "a", gapBytes: 2))
        assertRejected(fileBytes(header(entry("a", "U8", [1], 2, 3)), [1, 2, 3]),
                       tensor: "a", exactly: .offsetsGap(previous: nil, gapBytes: 2))
        // Unused bytes after the last tensor, and data with no tensors at all.
        assertRejected(fileBytes(header(entry("a", "U8", [1], 0, 1)), [1, 2, 3]),
                       tensor: nil, exactly: .trailingBytes(count: 2))
        assertRejected(fileBytes("{}", [1]), tensor: nil, exactly: .trailingBytes(count: 1))
    }

    func testOffsetsRunningPastTheEnd() {
        assertRejected(fileBytes(header(entry("a", "U8", [4], 0, 4)), [1, 2]), tensor: "a",
                       exactly: .dataPastEnd(end: 4, dataSize: 2))
        assertRejected(fileBytes(header(entry("a", "U8", [1], 0, 1), entry("b", "F32", [1], 1, 5)), [1, 2, 3]),
                       tensor: "b", exactly: .dataPastEnd(end: 5, dataSize: 3))
        // Far past the end, with the largest accepted offset.
        let big = 1 << 53
        assertRejected(fileBytes(header(entry("a", "U8", [big], 0, big))), tensor: "a",
                       exactly: .dataPastEnd(end: big, dataSize: 0))
    }

    func testDuplicateNames() {
        let a1 = entry("a", "U8", [1], 0, 1), a2 = entry("a", "U8", [1], 1, 2)
        assertRejected(fileBytes(header(a1, a2), [1, 2]), tensor: "a", exactly: .duplicateName)
        // The same name spelled with an escape.
        assertRejected(fileBytes("{" + a1 + ",\"\\u0061\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", [1, 2]),
                       tensor: "a", exactly: .duplicateName)
        // Canonically equivalent names (precomposed and decomposed é) are the same Swift string.
        assertRejected(fileBytes(header(entry("\u{E9}", "U8", [1], 0, 1), entry("e\u{301}", "U8", [1], 1, 2)), [1, 2]),
                       tensor: "e\u{301}", exactly: .duplicateName)
        // A duplicate with identical content, and a duplicated __metadata__.
        assertRejected(fileBytes(header(a1, a1), [1]), tensor: "a", exactly: .duplicateName)
        assertRejected(fileBytes("{\"__metadata__\":{},\"__metadata__\":{}}"), tensor: "__metadata__",
                       exactly: .duplicateName)
    }

    func testNonStringMetadataValues() {
        for value in ["1", "1.5", "true", "null", "[\"a\"]", "{\"b\":\"c\"}"] {
            assertRejected(fileBytes("{\"__metadata__\":{\"ok\":\"x\",\"n\":\(value)}}"), tensor: nil,
                           exactly: .invalidMetadata("value of 'n' is not a string"))
        }
        for value in ["\"x\"", "[]", "1", "null"] {
            assertRejected(fileBytes("{\"__metadata__\":\(value)}"), tensor: nil, exactly: .invalidMetadata("not an object"))
        }
    }

    func testInvalidEntries() {
        for value in ["1", "\"F32\"", "[]", "null"] {
            assertRejected(fileBytes("{\"w\":\(value)}"), tensor: "w", exactly: .invalidEntry("not an object"))
        }
        assertRejected(fileBytes("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"extra\":1}}"),
                       tensor: "w", exactly: .invalidEntry("unexpected field 'extra'"))
        assertRejected(fileBytes("{\"w\":{\"shape\":[0],\"data_offsets\":[0,0]}}"),
                       tensor: "w", exactly: .invalidEntry("missing or non-string 'dtype'"))
    }

    /// Keys json-c would silently merge or cut short (found while fuzzing).
    func testKeysJSONCWouldHide() {
        // A duplicated field inside an entry: json-c keeps the last one.
        assertRejected(fileBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1],\"dtype\":\"U8\"}}", [1]),
                       tensor: "w", exactly: .invalidEntry("field 'dtype' appears more than once"))
        // A duplicated metadata key.
        assertRejected(fileBytes("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"), tensor: nil,
                       exactly: .invalidMetadata("key 'k' appears more than once"))
        // Canonically equivalent metadata keys would collapse into one dictionary entry.
        assertRejected(fileBytes("{\"__metadata__\":{\"\u{E9}\":\"1\",\"e\u{301}\":\"2\"}}"), tensor: nil,
                       exactly: .invalidMetadata("key 'e\u{301}' appears more than once"))
        // An escaped NUL in a name: json-c cuts the key at the NUL, so two different names
        // would become one and a tensor would vanish.
        assertRejected(fileBytes(header(entry("a\u{0}x", "U8", [0], 0, 0), entry("a\u{0}y", "U8", [1], 0, 1)), [1]),
                       tensor: "a\u{0}x", exactly: .invalidEntry("name contains a NUL character"))
        assertRejected(fileBytes(header(entry("a\u{0}", "U8", [1], 0, 1)), [1]),
                       tensor: "a\u{0}", exactly: .invalidEntry("name contains a NUL character"))
        assertRejected(fileBytes("{\"__metadata__\":{\"k\\u0000\":\"v\"}}"), tensor: nil,
                       exactly: .invalidMetadata("key 'k\u{0}' contains a NUL character"))
    }

    func testMissingOrUnreadableFile() {
        for path in [dir.file("does-not-exist.safetensors"), dir.path] {
            XCTAssertThrowsError(try SafeTensorsFile(path: path)) { error in
                let e = error as! SafeTensorsError
                XCTAssertEqual(e.file, path)
                XCTAssertNil(e.tensor)
                XCTAssertTrue(e.reason.isCannotOpen, "\(e)")
            }
        }
    }

    /// Every error message names the file and the tensor.
    func testErrorDescriptionNamesFileAndTensor() {
        let e = SafeTensorsError(file: "/x/y.safetensors", tensor: "down.0", .sizeMismatch(expected: 8, actual: 4))
        XCTAssertEqual(e.description, "/x/y.safetensors: tensor 'down.0': shape x dtype size is 8 bytes but data_offsets span 4")
        XCTAssertEqual(SafeTensorsError(file: "f", .fileTooShort(size: 3)).description,
                       "f: file is 3 bytes; a safetensors file needs at least 8 (header length)")
    }
}
