/// An 8-bit RGB image: `pixels` holds `height` rows of `width` pixels, each R, G, B (row-major,
/// interleaved, `width * height * 3` bytes), as Pillow's mode "RGB" and numpy's [H, W, 3] uint8.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    /// Row-major interleaved RGB: the pixel (x, y) is at `(y * width + x) * 3`.
    public let pixels: [UInt8]

    /// An image of `pixels` (`width * height * 3` bytes, row-major RGB).
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 1 && height >= 1, "RGBImage: size \(width)x\(height)")
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) bytes for \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The R, G, B bytes of pixel (x, y).
    public subscript(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        precondition(x >= 0 && x < width && y >= 0 && y < height, "RGBImage: pixel (\(x), \(y)) outside \(width)x\(height)")
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// Builds an image by filling its `width * height * 3` bytes.
    static func make(width: Int, height: Int, _ fill: (UnsafeMutablePointer<UInt8>) -> Void) -> RGBImage {
        let bytes = [UInt8](unsafeUninitializedCapacity: width * height * 3) { buffer, count in
            fill(buffer.baseAddress!)
            count = width * height * 3
        }
        return RGBImage(width: width, height: height, pixels: bytes)
    }
}
