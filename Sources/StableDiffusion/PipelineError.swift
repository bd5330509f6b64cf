/// A problem reading or converting a whole pipeline (UNet, text encoder, VAE, tokenizer,
/// scheduler). Every case names the file or the part it is about.
public enum PipelineError: Error, CustomStringConvertible, Sendable {
    case unet(CheckpointError)
    case textEncoder(CLIPTextEncoderError)
    case vae(VAEError)
    case tokenizer(CLIPTokenizerError)
    case scheduler(SchedulerError)
    /// The path is not something a whole pipeline is read from.
    case notAPipeline(file: String, String)
    /// Tensors of the source that no model reads and no allow-list names.
    case unusedTensors(file: String, [String])
    /// A conversion request that cannot be carried out as given (what is missing, how to give it).
    case request(String)
    /// Writing the output failed.
    case output(CheckpointError)

    public var description: String {
        switch self {
        case .unet(let e), .output(let e): return e.description
        case .textEncoder(let e): return e.description
        case .vae(let e): return e.description
        case .tokenizer(let e): return e.description
        case .scheduler(let e): return e.description
        case .notAPipeline(let f, let s): return "\(f): not a whole pipeline: \(s)"
        case .unusedTensors(let f, let names):
            let shown = names.prefix(20).joined(separator: "\n    ")
            return "\(f): \(names.count) tensors that no model reads and no allow-list names (load option allow_unused loads anyway):\n    \(shown)"
                + (names.count > 20 ? "\n    ... and \(names.count - 20) more" : "")
        case .request(let s): return s
        }
    }
}
