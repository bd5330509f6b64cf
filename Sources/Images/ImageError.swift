/// A problem with an image: the file (when there is one) and what is wrong.
public struct ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong.
    public enum Reason: Equatable, Sendable {
        /// The path cannot be read as a regular file (missing, a directory, a FIFO, a device, too
        /// large, an I/O failure).
        case access(String)
        /// The file has no bytes.
        case empty
        /// The bytes are neither PNG nor JPEG (the associated text says what they look like).
        case notAnImage(String)
        /// A declared or requested size with no pixels.
        case zeroSize(width: Int, height: Int)
        /// A declared or requested size beyond `ImageBounds`.
        case tooLarge(width: Int, height: Int)
        /// The data ends before the image does.
        case truncated(String)
        /// The data breaks the format (bad CRC, bad marker, bad compressed data).
        case corrupt(String)
        /// A valid image of a kind that is not read (CMYK JPEG).
        case unsupported(String)
        /// Memory could not be allocated.
        case outOfMemory
        /// The output could not be written (the output policy refused it, or an I/O failure).
        case output(String)
        /// An argument that does not fit (a grid with the wrong number of images, a tensor of the
        /// wrong shape).
        case invalid(String)
    }

    /// The file concerned, if any.
    public var file: String?
    public var reason: Reason

    public init(file: String?, _ reason: Reason) {
        self.file = file
        self.reason = reason
    }

    public var description: String { file.map { "\($0): \(message)" } ?? message }

    /// What is wrong, without the file.
    public var message: String {
        switch reason {
        case .access(let why): return why
        case .empty: return "is empty (0 bytes), not an image"
        case .notAnImage(let looks): return "is not a PNG or JPEG image (\(looks))"
        case .zeroSize(let w, let h): return "size \(w)x\(h) has no pixels"
        case .tooLarge(let w, let h):
            return "size \(w)x\(h) exceeds the image bounds (at most \(ImageBounds.maxSide) pixels a side "
                + "and \(ImageBounds.maxPixels) pixels)"
        case .truncated(let why): return "truncated: \(why)"
        case .corrupt(let why): return "corrupt: \(why)"
        case .unsupported(let why): return "unsupported: \(why)"
        case .outOfMemory: return "out of memory"
        case .output(let why): return why
        case .invalid(let why): return why
        }
    }
}
