/// A tokenizer file that cannot be used: the file, the line when there is one, and what is wrong.
public struct CLIPTokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file (or folder) as it was given.
    public var file: String
    /// 1-based line of the problem (merges files), or nil.
    public var line: Int?
    /// What is wrong and what was expected.
    public var message: String

    public init(file: String, line: Int? = nil, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)" }
}
