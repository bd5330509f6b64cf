import Images
import SafeTensors
import TextToImage

/// Something that keeps `TrainingDataEncoder` from turning images and captions into a
/// training-data file. Every case names the file (the captions file with its line, or the image).
public enum DataEncodingError: Error, CustomStringConvertible, Sendable {
    /// The captions file cannot be read, or a line or record of it is not a caption
    /// (`line`: 1-based, the first line of a CSV record).
    case captions(file: String, line: Int?, String)
    /// Two captions name the same image file (lines of the captions file).
    case duplicateCaption(file: String, image: String, lines: [Int])
    /// The images folder cannot be listed, or holds no images.
    case folder(String, String)
    /// Images without a caption, captions without an image, unreadable images (each entry:
    /// the image path relative to the folder, and why); refused without `skipBad`.
    case badEntries([DataEncodingSkip])
    /// Nothing is left to encode (after skipping).
    case noSamples(String)
    /// An option or a count is outside its bounds.
    case bounds(String)
    /// The tokenizer, text encoder or VAE failed.
    case components(TextToImageError)
    /// An image failed when it was read for encoding (after it was checked).
    case image(ImageError)
    /// Writing the output failed.
    case output(SafeTensorsError)

    public var description: String {
        switch self {
        case .captions(let f, let line, let s): return "\(f)\(line.map { ":\($0)" } ?? ""): \(s)"
        case .duplicateCaption(let f, let image, let lines):
            return "\(f): '\(image)' has more than one caption (lines \(lines.map(String.init).joined(separator: ", "))); give each image one caption"
        case .folder(let d, let s): return "\(d): \(s)"
        case .badEntries(let entries):
            let shown = entries.prefix(10).map { "\($0.file): \($0.reason)" }.joined(separator: "; ")
            let more = entries.count > 10 ? "; ... (\(entries.count) in all)" : ""
            return "\(entries.count) bad entr\(entries.count == 1 ? "y" : "ies"): \(shown)\(more) (fix them, or skip them with skip_bad)"
        case .noSamples(let s): return s
        case .bounds(let s): return s
        case .components(let e): return e.description
        case .image(let e): return e.description
        case .output(let e): return e.description
        }
    }
}

/// An image or caption left out (with `skipBad`), or refused.
public struct DataEncodingSkip: Codable, Equatable, Sendable {
    /// The image path relative to the images folder, as the caption or the folder names it.
    public var file: String
    /// Why: `no caption`, `no image`, or the image reader's message.
    public var reason: String

    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case file
        case reason
    }
}
