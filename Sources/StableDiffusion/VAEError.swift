/// A problem configuring, loading or running the VAE. Every case names the file (or the input)
/// it is about.
public enum VAEError: Error, CustomStringConvertible, Sendable {
    /// Reading or recognising the checkpoint failed (missing file, bad safetensors, strict load).
    case checkpoint(CheckpointError)
    /// The VAE's `config.json` is unusable.
    case invalidConfig(file: String, String)
    /// The config asks for something this implementation does not do (another block type,
    /// activation, a `shift_factor`).
    case unsupportedConfig(file: String, String)
    /// The architecture cannot be read from the tensors of an original checkpoint.
    case cannotInfer(file: String, String)
    /// An image or latent given to the VAE does not fit it.
    case invalidInput(String)

    public var description: String {
        switch self {
        case .checkpoint(let e): return e.description
        case .invalidConfig(let f, let s): return "\(f): invalid VAE config: \(s)"
        case .unsupportedConfig(let f, let s): return "\(f): unsupported VAE config: \(s)"
        case .cannotInfer(let f, let s): return "\(f): cannot infer the VAE config: \(s)"
        case .invalidInput(let s): return "VAE input: \(s)"
        }
    }
}
