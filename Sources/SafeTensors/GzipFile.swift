import CZlib
import Foundation

/// Reads gzip files (RFC 1952) through zlib, bounded: the compressed file is read with
/// `RegularFile` (at most `compressedLimit` bytes) and inflation stops with an error as soon as
/// the output would pass `limit` bytes, so a gzip bomb costs at most `limit` bytes of memory.
/// One gzip member only: a truncated stream, a bad checksum or bytes after the member are errors.
///
/// It lives in SafeTensors beside `RegularFile` and `StrictJSON` because this target is where
/// alter reads untrusted files; the zlib shim (`CZlib`) is then a dependency of this target only.
public enum GzipFile {
    /// Default bound on the decompressed size (16 MB).
    public static let defaultLimit = 16 << 20

    /// The decompressed content of the gzip file at `path`.
    public static func read(_ path: String, compressedLimit: Int = 16 << 20, limit: Int = defaultLimit) throws(GzipError) -> Data {
        let data: Data
        do { data = try RegularFile.read(path, limit: compressedLimit) } catch { throw GzipError(file: path, error.reason) }
        return try decompress(data, source: path, limit: limit)
    }

    /// Inflates the gzip stream `data` (one member); `source` names it in errors.
    public static func decompress(_ data: Data, source: String, limit: Int = defaultLimit) throws(GzipError) -> Data {
        precondition(limit >= 0, "GzipFile.decompress: negative limit")
        guard data.count >= 18 else { throw GzipError(file: source, "not a gzip file (\(data.count) bytes, shorter than a gzip header and trailer)") }
        guard data[data.startIndex] == 0x1F, data[data.startIndex + 1] == 0x8B else {
            throw GzipError(file: source, "not a gzip file (no 1f 8b magic bytes)")
        }
        guard data.count <= Int(UInt32.max) else { throw GzipError(file: source, "compressed data larger than 4 GB") }
        var stream = z_stream()
        // 15 + 16: a gzip wrapper (not zlib, not raw deflate), the largest window.
        let rc = inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else { throw GzipError(file: source, "zlib inflateInit2 failed (\(rc))") }
        defer { inflateEnd(&stream) }
        var out = Data()
        let chunk = 1 << 16
        var buffer = [UInt8](repeating: 0, count: chunk)
        let result: GzipError? = data.withUnsafeBytes { (input: UnsafeRawBufferPointer) -> GzipError? in
            guard let base = input.baseAddress else { return GzipError(file: source, "empty") }
            stream.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            while true {
                let (status, produced) = buffer.withUnsafeMutableBufferPointer { buf -> (Int32, Int) in
                    stream.next_out = buf.baseAddress
                    stream.avail_out = uInt(chunk)
                    let s = inflate(&stream, Z_NO_FLUSH)
                    return (s, chunk - Int(stream.avail_out))
                }
                if produced > 0 {
                    guard out.count + produced <= limit else {
                        return GzipError(file: source, "inflates to more than the \(limit)-byte limit for this file")
                    }
                    out.append(buffer, count: produced)
                }
                switch status {
                case Z_STREAM_END:
                    if stream.avail_in != 0 {
                        return GzipError(file: source, "\(stream.avail_in) bytes after the end of the gzip stream")
                    }
                    return nil
                case Z_OK:
                    continue
                case Z_BUF_ERROR:
                    // No progress possible: all input used without reaching the end of the stream.
                    if stream.avail_in == 0 { return GzipError(file: source, "truncated gzip stream (ends before its trailer)") }
                    continue
                case Z_NEED_DICT, Z_DATA_ERROR:
                    let why = stream.msg.map { String(cString: $0) } ?? "invalid deflate data"
                    return GzipError(file: source, "corrupt gzip data: \(why)")
                case Z_MEM_ERROR:
                    return GzipError(file: source, "zlib ran out of memory")
                default:
                    return GzipError(file: source, "zlib inflate failed (\(status))")
                }
            }
        }
        if let result { throw result }
        return out
    }
}

/// A gzip file that cannot be read or decompressed.
public struct GzipError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file (or a label for in-memory data).
    public var file: String
    /// What is wrong ("truncated gzip stream (ends before its trailer)").
    public var message: String

    public init(file: String, _ message: String) {
        self.file = file
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}
