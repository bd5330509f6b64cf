/// A file that cannot be read as a regular file: missing, not a regular file (directory, FIFO,
/// device, socket), a symbolic link where none is allowed, too large, or an I/O failure.
public struct FileAccessError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The path as it was given.
    public var path: String
    /// What is wrong, without the path ("is a FIFO, not a regular file").
    public var reason: String

    public init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}
