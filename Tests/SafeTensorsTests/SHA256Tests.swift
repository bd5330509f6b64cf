import Foundation
import SafeTensors
import XCTest

final class SHA256Tests: XCTestCase {
    /// FIPS 180-4 examples and padding boundaries (55, 56, 63, 64 bytes), checked against
    /// Python's hashlib.
    func testKnownDigests() {
        let cases: [(String, String)] = [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
            (String(repeating: "a", count: 55), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"),
            (String(repeating: "a", count: 56), "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"),
            (String(repeating: "a", count: 63), "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"),
            (String(repeating: "a", count: 64), "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"),
        ]
        for (msg, hex) in cases {
            var s = SHA256()
            s.update(Array(msg.utf8))
            XCTAssertEqual(s.hexDigest(), hex, "\(msg.count) bytes")
        }
    }

    /// Feeding the message in uneven pieces gives the digest of the whole.
    func testStreamingEqualsOneShot() {
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ $0 >> 3) }
        var whole = SHA256()
        whole.update(bytes)
        var pieces = SHA256()
        var i = 0, step = 1
        while i < bytes.count {
            let j = min(bytes.count, i + step)
            pieces.update(Array(bytes[i..<j]))
            i = j
            step = step * 3 % 97 + 1
        }
        XCTAssertEqual(whole.hexDigest(), pieces.hexDigest())
        // One million 'a' (FIPS 180-4 example).
        var million = SHA256()
        let a = [UInt8](repeating: 0x61, count: 1000)
        for _ in 0..<1000 { million.update(a) }
        XCTAssertEqual(million.hexDigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
