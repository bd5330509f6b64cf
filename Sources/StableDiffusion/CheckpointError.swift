import SafeTensors

/// A problem reading, recognising or converting a checkpoint. Every case names the file.
public enum CheckpointError: Error, CustomStringConvertible, Sendable {
    case notFound(String)
    case safetensors(SafeTensorsError)
    case unsupportedFormat(file: String, String)
    case unrecognisedLayout(file: String, String)
    case invalidConfig(file: String, String)
    case cannotInfer(file: String, String)
    case shardIndex(file: String, String)
    case duplicateTensor(name: String, first: String, second: String)
    case strictLoad(LoadReport)
    case io(file: String, String)

    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such file or directory"
        case .safetensors(let e): return e.description
        case .unsupportedFormat(let f, let s): return "\(f): unsupported format: \(s)"
        case .unrecognisedLayout(let f, let s): return "\(f): not a recognised Stable Diffusion checkpoint: \(s)"
        case .invalidConfig(let f, let s): return "\(f): invalid UNet config: \(s)"
        case .cannotInfer(let f, let s): return "\(f): cannot infer the UNet config: \(s)"
        case .shardIndex(let f, let s): return "\(f): invalid shard index: \(s)"
        case .duplicateTensor(let n, let a, let b): return "tensor '\(n)' appears in both \(a) and \(b)"
        case .strictLoad(let r): return r.description
        case .io(let f, let s): return "\(f): \(s)"
        }
    }
}
