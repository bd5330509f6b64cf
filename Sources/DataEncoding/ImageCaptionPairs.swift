import Foundation
import Images

/// The images of a folder matched with their captions: every caption must name an image file
/// that exists, and every image file of the folder (by extension, in subfolders too, hidden
/// files and folders left out) must have a caption.
public struct ImageCaptionPairs: Sendable {
    /// The file name extensions (lowercased) that make a file an image of the folder. Only PNG and
    /// JPEG are decoded; an image in another format with a caption is unreadable, one without is
    /// uncaptioned.
    public static let imageExtensions: Set<String> = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]

    /// The images folder as given.
    public let folder: String
    /// Captions whose image exists, in the order of the captions file.
    public private(set) var entries: [CaptionEntry]
    /// Images without a caption and captions without an image, in folder order then captions order.
    public private(set) var problems: [DataEncodingSkip]

    /// Lists `folder` and matches it with `captions`.
    public init(folder: String, captions: [CaptionEntry]) throws(DataEncodingError) {
        self.folder = folder
        let images = try Self.listImages(folder)
        guard !images.isEmpty else {
            throw .folder(folder, "no images (files ending in \(Self.imageExtensions.sorted().map { "." + $0 }.joined(separator: ", ")))")
        }
        let captioned = Set(captions.map(\.file))
        let present = Set(images)
        problems = images.filter { !captioned.contains($0) }.map { DataEncodingSkip(file: $0, reason: "no caption") }
        problems += captions.filter { !present.contains($0.file) }.map { DataEncodingSkip(file: $0.file, reason: "no image (a caption on line \($0.line) names it)") }
        entries = captions.filter { present.contains($0.file) }
    }

    /// The full path of an entry's image.
    public func path(of entry: CaptionEntry) -> String { (folder as NSString).appendingPathComponent(entry.file) }

    /// Leaves out the entries whose file is in `files` (images found unreadable).
    public mutating func remove(_ files: Set<String>) {
        entries.removeAll { files.contains($0.file) }
    }

    /// Image files under `folder`, relative to it, sorted by path (bytes).
    static func listImages(_ folder: String) throws(DataEncodingError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .folder(folder, "not a directory")
        }
        var found: [String] = []
        var pending = [""]
        var listed = 0
        while let relative = pending.popLast() {
            let dir = relative.isEmpty ? folder : (folder as NSString).appendingPathComponent(relative)
            let names: [String]
            do { names = try FileManager.default.contentsOfDirectory(atPath: dir) } catch {
                throw .folder(dir, "cannot list it (\(error.localizedDescription))")
            }
            for name in names where !name.hasPrefix(".") {
                listed += 1
                guard listed <= DataEncodingBounds.maxListedFiles else {
                    throw .bounds("\(folder): more than \(DataEncodingBounds.maxListedFiles) files and folders")
                }
                let rel = relative.isEmpty ? name : relative + "/" + name
                let full = (folder as NSString).appendingPathComponent(rel)
                var sub: ObjCBool = false
                // Folders are entered unless they are symbolic links (no cycles).
                let attributes = try? FileManager.default.attributesOfItem(atPath: full)
                if attributes?[.type] as? FileAttributeType == .typeDirectory,
                   FileManager.default.fileExists(atPath: full, isDirectory: &sub), sub.boolValue {
                    pending.append(rel)
                } else if imageExtensions.contains((name as NSString).pathExtension.lowercased()) {
                    found.append(rel)
                }
            }
        }
        return found.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }
}
