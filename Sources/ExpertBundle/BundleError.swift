/// A bundle that cannot be written or read, naming the file and what is wrong.
public struct BundleError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file or directory concerned.
    public var path: String
    public var message: String

    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}
