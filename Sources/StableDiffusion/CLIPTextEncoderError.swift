/// A problem configuring, loading or running the CLIP text encoder. Every case names the file
/// (or the input) it is about.
public enum CLIPTextEncoderError: Error, CustomStringConvertible, Sendable {
    /// Reading or recognising the checkpoint failed (missing file, bad safetensors, strict load).
    case checkpoint(CheckpointError)
    /// The text encoder's `config.json` is unusable.
    case invalidConfig(file: String, String)
    /// `hidden_act` names an activation this implementation does not have.
    case unsupportedActivation(file: String, hiddenAct: String)
    /// The architecture cannot be read from the tensors of an original checkpoint.
    case cannotInfer(file: String, String)
    /// The token ids given to `encode` do not fit the model.
    case invalidInput(String)

    public var description: String {
        switch self {
        case .checkpoint(let e): return e.description
        case .invalidConfig(let f, let s): return "\(f): invalid text encoder config: \(s)"
        case .unsupportedActivation(let f, let a):
            return "\(f): unsupported hidden_act '\(a)' (supported: \(CLIPActivation.allCases.map(\.rawValue).joined(separator: ", ")))"
        case .cannotInfer(let f, let s): return "\(f): cannot infer the text encoder config: \(s)"
        case .invalidInput(let s): return "text encoder input: \(s)"
        }
    }
}
