/// JSON text that `StrictJSON` refuses, naming the file (or other source) and what is wrong.
public struct StrictJSONError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file (or a label for in-memory text) the JSON came from.
    public var file: String
    /// What is wrong ("duplicate key \"prediction_type\" at the top level").
    public var message: String

    public init(file: String, _ message: String) {
        self.file = file
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}
