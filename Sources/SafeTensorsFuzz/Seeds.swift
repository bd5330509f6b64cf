/// The seed corpus: small valid files of every shape the reader handles, and one or two
/// near-misses per failure class, each a few hundred bytes at most.
func seedFiles() -> [(name: String, bytes: [UInt8])] {
    func file(_ header: String, _ data: [UInt8] = [], pad: Bool = true) -> [UInt8] {
        var h = Array(header.utf8)
        if pad { while h.count % 8 != 0 { h.append(0x20) } }
        return withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) } + h + data
    }
    func f32(_ xs: [Float]) -> [UInt8] { xs.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } } }
    func u16(_ xs: [UInt16]) -> [UInt8] { xs.flatMap { withUnsafeBytes(of: $0.littleEndian) { Array($0) } } }
    func entry(_ name: String, _ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
    }
    let specials: [Float] = [0, -0.0, 1, -2.5, .infinity, -.infinity, .nan, 65504, 65520, 1e-8, 3.4e38, .leastNonzeroMagnitude]
    let halfBits: [UInt16] = [0x0000, 0x8000, 0x3C00, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x03FF, 0x7D01]
    let bf16Bits: [UInt16] = [0x0000, 0x3F80, 0xBF80, 0x7F7F, 0x7F80, 0x7FC0, 0xFF81, 0x0001]
    return [
        ("valid-empty", file("{}")),
        ("valid-metadata-only", file("{\"__metadata__\":{\"format\":\"pt\",\"k\\\"ey\":\"v\\u00e9\"}}")),
        ("valid-f32", file("{" + entry("w", "F32", [3, 4], 0, 48) + "}", f32(specials))),
        ("valid-f16", file("{" + entry("h", "F16", [10], 0, 20) + "}", u16(halfBits))),
        ("valid-bf16", file("{" + entry("b", "BF16", [2, 2, 2], 0, 16) + "}", u16(bf16Bits))),
        ("valid-mixed", file("{\"__metadata__\":{\"a\":\"b\"}," + entry("a.weight", "F16", [2], 0, 4) + ","
                             + entry("a.bias", "BF16", [], 4, 6) + "," + entry("ids", "I64", [1], 6, 14) + ","
                             + entry("mask", "BOOL", [2], 14, 16) + "," + entry("u", "U8", [0, 5], 16, 16) + "}",
                             u16([0x3C00, 0xC000, 0x3F80]) + [1, 0, 0, 0, 0, 0, 0, 0, 1, 0])),
        ("valid-unaligned", file("{" + entry("x", "F32", [2], 0, 8) + "}", f32([1.5, -7]), pad: false)),
        ("valid-all-dtypes", file("{" + ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8",
                                          "U64", "U32", "U16", "U8", "BOOL"].enumerated().map { i, d in
                                              entry("t\(i)", d, [0], 0, 0) }.joined(separator: ",") + "}")),
        ("valid-zero-size-shared", file("{" + entry("z", "F32", [0], 4, 4) + "," + entry("a", "F32", [1], 0, 4) + ","
                                        + entry("b", "F32", [1], 4, 8) + "}", f32([1, 2]))),
        ("bad-short", [1, 0, 0]),
        ("bad-length-beyond", [0xFF, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8)),
        ("bad-not-object", file("[1,2,3]")),
        ("bad-json", file("{\"a\":{\"dtype\":\"F32\",}")),
        ("bad-dtype", file("{" + entry("a", "F31", [1], 0, 4) + "}", f32([1]))),
        ("bad-shape-negative", file("{" + entry("a", "U8", [-1], 0, 1) + "}", [0])),
        ("bad-shape-float", file("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", [0])),
        ("bad-shape-overflow", file("{" + entry("a", "U8", [4294967296, 4294967296, 4294967296], 0, 1) + "}", [0])),
        ("bad-size", file("{" + entry("a", "F32", [2], 0, 4) + "}", f32([1]))),
        ("bad-overlap", file("{" + entry("a", "U8", [2], 0, 2) + "," + entry("b", "U8", [2], 1, 3) + "}", [1, 2, 3])),
        ("bad-gap", file("{" + entry("a", "U8", [1], 0, 1) + "," + entry("b", "U8", [1], 2, 3) + "}", [1, 2, 3])),
        ("bad-past-end", file("{" + entry("a", "U8", [4], 0, 4) + "}", [1, 2])),
        ("bad-duplicate", file("{" + entry("a", "U8", [1], 0, 1) + "," + entry("a", "U8", [1], 1, 2) + "}", [1, 2])),
        ("bad-metadata", file("{\"__metadata__\":{\"n\":1}}")),
        ("bad-trailing", file("{" + entry("a", "U8", [1], 0, 1) + "}", [1, 2])),
    ]
}

#if !FUZZING
/// Writes the seed corpus into `dir` (which must exist); returns the number of files.
func writeSeeds(to dir: String) -> Int {
    let seeds = seedFiles()
    for (name, bytes) in seeds { writeFile(dir + "/" + name + ".safetensors", bytes) }
    return seeds.count
}
#endif
