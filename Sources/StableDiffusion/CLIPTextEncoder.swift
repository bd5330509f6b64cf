import NN
import TensorCore

/// transformers' `CLIPTextModel` as Stable Diffusion uses it: token and position embeddings,
/// `numHiddenLayers` pre-LN encoder layers with a causal mask, and the final layer norm; the
/// output is `last_hidden_state` (for SD2.x, whose checkpoints hold 23 of OpenCLIP ViT-H/14's 24
/// layers, that is the penultimate layer through `ln_final`). No attention mask over padding:
/// diffusers' SD pipelines pass none, so padding tokens are attended to like any other (causally).
public struct CLIPTextEncoder {
    public let config: CLIPTextConfig
    /// [vocab, D].
    public let tokenEmbedding: Parameter
    /// [positions, D].
    public let positionEmbedding: Parameter
    public let layers: [CLIPEncoderLayer]
    public let finalLayerNorm: LayerNormLayer

    /// Reads every parameter of `config` from `parameters` by its transformers name.
    public init(config: CLIPTextConfig, parameters s: some ParameterSource) throws {
        self.config = config
        let d = config.hiddenSize
        tokenEmbedding = try s.parameter(CLIPTextKeys.tokenEmbedding, shape: [config.vocabSize, d])
        positionEmbedding = try s.parameter(CLIPTextKeys.positionEmbedding, shape: [config.maxPositionEmbeddings, d])
        layers = try (0..<config.numHiddenLayers).map { try CLIPEncoderLayer(s, CLIPTextKeys.layer($0), config: config) }
        finalLayerNorm = try LayerNormLayer(s, CLIPTextKeys.finalLayerNorm, channels: d, eps: Float(config.layerNormEps))
    }

    public var parameters: [Parameter] {
        [tokenEmbedding, positionEmbedding] + layers.flatMap(\.parameters) + finalLayerNorm.parameters
    }

    /// Checks token ids: at least one row, rows of one length in 1...positions, ids in 0..<vocab.
    public func validate(_ ids: [[Int]]) throws(CLIPTextEncoderError) {
        guard let s = ids.first?.count else { throw .invalidInput("no token rows") }
        guard (1...config.maxPositionEmbeddings).contains(s) else {
            throw .invalidInput("rows of \(s) tokens, expected 1...\(config.maxPositionEmbeddings) (max_position_embeddings)")
        }
        for (b, row) in ids.enumerated() {
            guard row.count == s else { throw .invalidInput("row \(b) has \(row.count) tokens, row 0 has \(s)") }
            if let bad = row.firstIndex(where: { !(0..<config.vocabSize).contains($0) }) {
                throw .invalidInput("row \(b) token \(bad) is id \(row[bad]), outside the vocabulary 0..<\(config.vocabSize)")
            }
        }
    }

    /// ids: B rows of S token ids (checked by `validate`) -> last_hidden_state [B, S, D].
    public func callAsFunction(_ ids: [[Int]], on tape: Tape) throws(CLIPTextEncoderError) -> Var {
        try validate(ids)
        let (b, s, d) = (ids.count, ids[0].count, config.hiddenSize)
        let tokens = tape.selectRows(tape.parameter(tokenEmbedding), ids.flatMap { $0 })                          // [B*S, D]
        let positions = tape.selectRows(tape.parameter(positionEmbedding), (0..<b).flatMap { _ in Array(0..<s) }) // [B*S, D]
        var h = tape.reshape(tape.add(tokens, positions), [b, s, d])
        for layer in layers { h = layer(h, on: tape) }
        return finalLayerNorm(h, on: tape)
    }

    /// `last_hidden_state` [B, S, D] of the token ids, on a tape that records nothing.
    public func encode(_ ids: [[Int]]) throws(CLIPTextEncoderError) -> Tensor {
        try self(ids, on: Tape(recording: false)).value
    }
}
