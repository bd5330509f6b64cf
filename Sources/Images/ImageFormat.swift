/// The image formats read, recognised by their first bytes (never by the file name).
public enum ImageFormat: String, Sendable, CaseIterable {
    case png = "PNG"
    case jpeg = "JPEG"

    /// The format whose signature starts `bytes`, or nil.
    public static func detect(_ bytes: UnsafeRawBufferPointer) -> ImageFormat? {
        if starts(bytes, [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts(bytes, [0xFF, 0xD8, 0xFF]) { return .jpeg }
        return nil
    }

    /// What bytes that are neither PNG nor JPEG look like, for error messages.
    static func describeOther(_ bytes: UnsafeRawBufferPointer) -> String {
        if starts(bytes, Array("GIF8".utf8)) { return "a GIF image" }
        if starts(bytes, Array("BM".utf8)) { return "looks like a BMP image" }
        if starts(bytes, Array("RIFF".utf8)) && bytes.count >= 12 && starts(UnsafeRawBufferPointer(rebasing: bytes[8...]), Array("WEBP".utf8)) {
            return "a WebP image"
        }
        if starts(bytes, [0x49, 0x49, 0x2A, 0x00]) || starts(bytes, [0x4D, 0x4D, 0x00, 0x2A]) { return "a TIFF image" }
        if bytes.count >= 8, bytes[0] == 0x89, starts(UnsafeRawBufferPointer(rebasing: bytes[1...]), Array("PNG".utf8)) {
            return "a PNG signature with altered line-ending bytes"
        }
        let head = bytes.prefix(16).map { String($0, radix: 16, uppercase: true) }.map { $0.count == 1 ? "0" + $0 : $0 }
        return "starts with bytes \(head.joined(separator: " "))"
    }

    private static func starts(_ bytes: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
        bytes.count >= prefix.count && zip(bytes, prefix).allSatisfy { $0 == $1 }
    }
}
