import XCTest
@testable import SafeTensors

/// Inputs found by SafeTensorsFuzz (see docs/fuzzing.md), rebuilt byte by byte. Each was
/// accepted by the reader although its JSON is invalid (json-c's strict mode is lax), so the
/// fuzz target's cross-check against Foundation's JSON parser stopped on it.
final class FuzzRegressionTests: SafeTensorsTestCase {
    /// crash-e6fcbbf7…: a raw 0x02 byte inside a tensor name.
    func testRawControlCharacterInAName() {
        let t0 = entry("t0", "F64", [0], 0, 0)
        let text = "{" + t0 + ",\",0]},\u{2}t8\":{\"dtype\":\"I16\",\"shape\":[0],\"data_offsets\":[0,0]}}"
        let bytes = fileBytes(text, pad: false)
        XCTAssertTrue(bytes.contains(0x02))
        assertRejected(bytes, tensor: nil, "raw control character") { reason in
            reason == .invalidJSON("unescaped control character 0x2 in a string at offset \(1 + t0.utf8.count + 1 + 6)")
        }
    }

    /// crash-5e907007…: a dimension written `00`, which json-c reads as 0.
    func testLeadingZeroInADimension() {
        let name = "t0" + String(repeating: "N", count: 83)
        let text = "{" + entry(name, "F64", [0], 0, 0) + ",\"t1\":{\"dtype\":\"F32\",\"shape\":[00],\"data_offsets\":[0,0]}}"
        assertRejected(fileBytes(text, pad: false), tensor: nil, "leading zero") { reason in
            guard case .invalidJSON(let why) = reason else { return false }
            return why.hasPrefix("number with a leading zero at offset ")
        }
        // Zeros are fine where RFC 8259 allows them.
        XCTAssertNoThrow(try parse(fileBytes(header(entry("z", "U8", [0], 0, 0)))))
        XCTAssertNoThrow(try parse(fileBytes("{\"__metadata__\":{\"00\":\"-00\"}}")))
    }

    /// Found with the replayer while writing the cross-check: `null` parses to no object at all
    /// and was reported as "header is not valid JSON: success".
    func testNullHeaderIsNotAnObject() {
        assertRejected(fileBytes("null"), tensor: nil, exactly: .headerNotObject)
        assertRejected(fileBytes(" null ", pad: false), tensor: nil, exactly: .headerNotObject)
    }

    /// More text json-c takes in strict mode and RFC 8259 does not; every one of them would give
    /// names or values that other safetensors readers refuse or read differently.
    func testOtherTextJSONCTakes() {
        let valid = entry("w", "U8", [1], 0, 1)
        let cases: [(String, [UInt8])] = [
            ("single-quoted strings", fileBytes("{'w':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", [1])),
            ("NaN", fileBytes("{\"__metadata__\":{\"k\":NaN}," + valid + "}", [1])),
            ("lowercase nan", fileBytes("{\"__metadata__\":{\"k\":nan}," + valid + "}", [1])),
            ("-Infinity", fileBytes("{\"__metadata__\":{\"k\":-Infinity}," + valid + "}", [1])),
            ("lone surrogate in a name", fileBytes("{\"\\ud800\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", [1])),
            ("reversed surrogate pair", fileBytes("{\"\\ude00\\ud83d\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", [1])),
            ("overlong '/' in a name", rawFile(length: 56, header: Array("{\"".utf8) + [0xC0, 0xAF]
                + Array("\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}".utf8) + [0x20], data: [1])),
            ("negative leading zero", fileBytes("{\"w\":{\"dtype\":\"U8\",\"shape\":[-01],\"data_offsets\":[0,1]}}", [1])),
        ]
        for (what, bytes) in cases {
            assertRejected(bytes, tensor: nil, what) { $0.isInvalidJSON }
        }
        // A proper surrogate pair is fine.
        XCTAssertEqual(try parse(fileBytes(header(entry("\u{1F600}", "U8", [0], 0, 0)))).tensors.map(\.name), ["\u{1F600}"])
        XCTAssertEqual(try parse(fileBytes("{\"\\ud83d\\ude00\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}")).tensors.map(\.name),
                       ["\u{1F600}"])
    }
}
