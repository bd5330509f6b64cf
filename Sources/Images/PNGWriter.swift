import CImageIO
import Foundation
import SafeTensors

/// Writes 8-bit RGB PNGs through libpng and zlib: non-interlaced, zlib level
/// `compressionLevel`, libpng's default filter choice, no ancillary chunks (no time stamp, no
/// gamma), so the same image always gives the same bytes with the same libpng and zlib.
public enum PNGWriter {
    /// The zlib compression level used (zlib's and Pillow's default).
    public static let compressionLevel: Int32 = 6

    /// The PNG encoding of `image`.
    public static func encode(_ image: RGBImage) throws(ImageError) -> [UInt8] {
        var info = alter_image_info()
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        let status = image.pixels.withUnsafeBufferPointer {
            alter_png_encode_rgb($0.baseAddress!, UInt32(image.width), UInt32(image.height), compressionLevel, &out, &size, &info)
        }
        defer { alter_image_free(out) }
        guard status == Int32(ALTER_IMAGE_OK.rawValue), let out else {
            throw ImageFile.error(status: status, info: &info, format: .png, file: nil)
        }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }

    /// Writes `image` as a PNG at `path` through the output policy (`OutputTarget`): an existing
    /// file is replaced only with `force` (and never a directory), `inputs` (the paths the
    /// command reads) are never overwritten, parent directories are created, the write is atomic
    /// (`AtomicFile`) and a second alter process writing the same path fails at once (`PathLock`).
    public static func write(_ image: RGBImage, to path: String, force: Bool = false, inputs: [String] = []) throws(ImageError) {
        let bytes = try encode(image)
        do throws(SafeTensorsError) {
            try OutputTarget(path: path, kind: .file, replace: force, inputs: inputs).prepare()
            let lock = try PathLock(beside: path)
            defer { lock.release() }
            let file = try AtomicFile(destination: path)
            do throws(SafeTensorsError) {
                try file.write(bytes)
                try file.commit()
            } catch {
                file.discard()
                throw error
            }
        } catch {
            throw ImageError(file: path, .output(error.message))
        }
    }
}

extension RGBImage {
    /// The PNG encoding of the image (`PNGWriter.encode`).
    public func pngData() throws(ImageError) -> [UInt8] { try PNGWriter.encode(self) }

    /// Writes the image as a PNG at `path` (`PNGWriter.write`: atomic, replaced only with `force`).
    public func writePNG(to path: String, force: Bool = false, inputs: [String] = []) throws(ImageError) {
        try PNGWriter.write(self, to: path, force: force, inputs: inputs)
    }
}
