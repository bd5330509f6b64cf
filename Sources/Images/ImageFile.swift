import CImageIO
import Foundation
import SafeTensors

/// Reads PNG and JPEG files as 8-bit RGB, as Pillow's `Image.open(path).convert("RGB")` gives
/// them (docs/images.md): the format comes from the first bytes, not the name; alpha and tRNS are
/// dropped (not composited), 16-bit gray is clamped to 255 and other 16-bit samples keep their
/// high byte, palettes are looked up, gray is replicated, YCbCr JPEGs are converted by
/// libjpeg(-turbo) with its default (islow) IDCT and fancy upsampling. EXIF orientation, ICC
/// profiles and gamma (gAMA, cHRM, sRGB, iCCP) are not applied, as Pillow's `convert` does not
/// apply them. CMYK and YCCK JPEGs are refused.
///
/// Hostile files give an `ImageError` naming the file, never a crash: only regular files are
/// opened (`RegularFile`), files beyond `ImageBounds.fileBytes` are not read, and the declared
/// size is checked against `ImageBounds` from the header before any pixel buffer is allocated.
/// Every PNG CRC is checked; a truncated PNG or JPEG, and any JPEG libjpeg warns about (corrupt
/// data), is an error.
public enum ImageFile {
    /// The image in the file at `path`.
    public static func read(path: String) throws(ImageError) -> RGBImage {
        let data: Data
        do { data = try RegularFile.read(path, limit: ImageBounds.fileBytes) } catch {
            throw ImageError(file: path, .access(error.reason))
        }
        return try decode(data, file: path)
    }

    /// The image encoded in `data` (PNG or JPEG); `file` names it in errors.
    public static func decode(_ data: Data, file: String?) throws(ImageError) -> RGBImage {
        guard !data.isEmpty else { throw ImageError(file: file, .empty) }
        let result: Result<RGBImage, ImageError> = data.withUnsafeBytes { raw in
            guard let format = ImageFormat.detect(raw) else {
                return .failure(ImageError(file: file, .notAnImage(ImageFormat.describeOther(raw))))
            }
            var info = alter_image_info()
            var out: UnsafeMutablePointer<UInt8>? = nil
            let base = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let side = UInt32(ImageBounds.maxSide), pixels = UInt64(ImageBounds.maxPixels)
            let status = switch format {
            case .png: alter_png_decode_rgb(base, raw.count, side, pixels, &out, &info)
            case .jpeg: alter_jpeg_decode_rgb(base, raw.count, side, pixels, &out, &info)
            }
            defer { alter_image_free(out) }
            guard status == Int32(ALTER_IMAGE_OK.rawValue), let out else {
                return .failure(error(status: status, info: &info, format: format, file: file))
            }
            let w = Int(info.width), h = Int(info.height)
            return .success(RGBImage(width: w, height: h, pixels: Array(UnsafeBufferPointer(start: out, count: w * h * 3))))
        }
        return try result.get()
    }

    /// The typed error for a failed C decode or encode.
    static func error(status: Int32, info: inout alter_image_info, format: ImageFormat, file: String?) -> ImageError {
        let text = withUnsafeBytes(of: &info.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let w = Int(info.width), h = Int(info.height)
        let reason: ImageError.Reason = switch UInt32(truncatingIfNeeded: status) {
        case ALTER_IMAGE_TRUNCATED.rawValue: .truncated("\(format.rawValue): \(text)")
        case ALTER_IMAGE_ZERO_SIZE.rawValue: .zeroSize(width: w, height: h)
        case ALTER_IMAGE_TOO_LARGE.rawValue: .tooLarge(width: w, height: h)
        case ALTER_IMAGE_UNSUPPORTED.rawValue: .unsupported("\(format.rawValue): \(text)")
        case ALTER_IMAGE_NO_MEMORY.rawValue: .outOfMemory
        default: .corrupt("\(format.rawValue): \(text)")
        }
        return ImageError(file: file, reason)
    }
}
