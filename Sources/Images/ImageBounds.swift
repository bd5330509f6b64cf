/// The limits on images read from files and on images made by resizing, cropping and grids,
/// checked before any pixel buffer is allocated (docs/images.md).
public enum ImageBounds {
    /// Largest width or height, in pixels.
    public static let maxSide = 32_768
    /// Largest pixel count (width x height): 8192 x 8192. An RGB image of this size takes 192 MiB.
    public static let maxPixels = 1 << 26
    /// Largest image file read, in bytes.
    public static let fileBytes = 256 << 20

    /// Whether a `width` x `height` image is within the bounds (and not empty).
    public static func allows(width: Int, height: Int) -> Bool {
        width >= 1 && height >= 1 && width <= maxSide && height <= maxSide && width * height <= maxPixels
    }

    /// Throws `.zeroSize` or `.tooLarge` (naming `file`, if any) unless `allows(width:height:)`.
    static func check(width: Int, height: Int, file: String?) throws(ImageError) {
        if width < 1 || height < 1 { throw ImageError(file: file, .zeroSize(width: width, height: height)) }
        if !allows(width: width, height: height) { throw ImageError(file: file, .tooLarge(width: width, height: height)) }
    }
}
