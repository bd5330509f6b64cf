/// One caption: the image it describes (a path relative to the images folder) and its text.
public struct CaptionEntry: Equatable, Sendable {
    /// The image path relative to the images folder, normalised (no `./`, no empty components).
    public var file: String
    public var text: String
    /// The 1-based line of the captions file where the entry starts.
    public var line: Int

    public init(file: String, text: String, line: Int) {
        self.file = file
        self.text = text
        self.line = line
    }
}
