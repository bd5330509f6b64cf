import Foundation
import SafeTensors
import TensorCore

/// What `alter encode-prompt` did: the prompt through the tokenizer and the text encoder, and the
/// context file it wrote (`--json` keys: formats/cli-json.md).
public struct PromptEncodingReport: Encodable, Sendable {
    public var model: String
    public var tokenizer: String
    public var prompt: String
    public var kind: String
    public var layout: String
    /// The config.json read (nil: inferred from the tensors).
    public var configFile: String?
    public var assumptions: [String]
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var hiddenAct: String
    public var tokenCount: Int
    public var truncated: Bool
    public var inputIds: [Int]
    public var output: String
    /// Shape of `context` in the output file: [1, tokens, width].
    public var shape: [Int]
    public var loadSeconds: Double
    public var encodeSeconds: Double

    enum CodingKeys: String, CodingKey {
        case model, tokenizer, prompt, kind, layout, assumptions, truncated, output, shape
        case configFile = "config_file", hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers"
        case hiddenAct = "hidden_act", tokenCount = "token_count", inputIds = "input_ids"
        case loadSeconds = "load_seconds", encodeSeconds = "encode_seconds"
    }

    public init(checkpoint c: CLIPTextCheckpoint, tokenizerSource: String, prompt: String, tokenization t: CLIPTokenization,
                output: String, shape: [Int], loadSeconds: Double, encodeSeconds: Double) {
        model = c.path
        tokenizer = tokenizerSource
        self.prompt = prompt
        kind = c.kind.rawValue
        layout = c.layout.rawValue
        configFile = c.configFile
        assumptions = c.assumptions
        hiddenSize = c.config.hiddenSize
        numHiddenLayers = c.config.numHiddenLayers
        hiddenAct = c.config.hiddenAct.rawValue
        tokenCount = t.length
        truncated = t.truncated
        inputIds = t.inputIds
        self.output = output
        self.shape = shape
        self.loadSeconds = loadSeconds
        self.encodeSeconds = encodeSeconds
    }

    /// The name of the context tensor in the output file.
    public static let contextName = "context"

    /// Writes `context` ([B, S, D]) as the F32 tensor `context` of a safetensors file (atomically,
    /// through `SafeTensorsWriter`).
    public static func writeContext(_ context: Tensor, to path: String, metadata: [String: String]) throws(SafeTensorsError) {
        let w = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: contextName, dtype: .f32, shape: context.shape)], metadata: metadata)
        try w.write(contextName, bytes: UnsafeRawBufferPointer(start: context.data, count: context.count * 4))
        try w.finish()
    }
}
