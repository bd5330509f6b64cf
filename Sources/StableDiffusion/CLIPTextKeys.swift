import NN

/// The canonical parameter names of the CLIP text encoder: transformers' `CLIPTextModel` module
/// paths, which are also the key table of the diffusers layout (a pipeline's
/// `text_encoder/model.safetensors` stores them as they are).
///
/// This file is the only place that spells them.
public enum CLIPTextKeys {
    static let tokenEmbedding = "text_model.embeddings.token_embedding.weight"
    static let positionEmbedding = "text_model.embeddings.position_embedding.weight"
    static let finalLayerNorm = "text_model.final_layer_norm"
    /// transformers before 4.31 saved the `position_ids` buffer (int64 [1, positions]) with the
    /// weights; it is the identity 0..<positions and is allowed, unused.
    static let positionIDs = "text_model.embeddings.position_ids"

    /// Module path of encoder layer `i`.
    static let layers = "text_model.encoder.layers."
    static func layer(_ i: Int) -> String { layers + "\(i)" }
    /// Sub-modules of one encoder layer.
    static let layerNorm1 = "layer_norm1", layerNorm2 = "layer_norm2", selfAttention = "self_attn"
    static let fc1 = "mlp.fc1", fc2 = "mlp.fc2"

    /// Every parameter of `config` with its shape, in execution order.
    public static func parameters(_ config: CLIPTextConfig) -> [(name: String, shape: [Int])] {
        let (d, i) = (config.hiddenSize, config.intermediateSize)
        var ps: [(String, [Int])] = [
            (tokenEmbedding, [config.vocabSize, d]),
            (positionEmbedding, [config.maxPositionEmbeddings, d]),
        ]
        let a = AttentionLayer.Names.clip
        for l in 0..<config.numHiddenLayers {
            let p = layer(l)
            ps += [(p + "." + layerNorm1 + ".weight", [d]), (p + "." + layerNorm1 + ".bias", [d])]
            for proj in [a.q, a.k, a.v, a.out] {
                ps += [(p + "." + selfAttention + "." + proj + ".weight", [d, d]), (p + "." + selfAttention + "." + proj + ".bias", [d])]
            }
            ps += [(p + "." + layerNorm2 + ".weight", [d]), (p + "." + layerNorm2 + ".bias", [d])]
            ps += [(p + "." + fc1 + ".weight", [i, d]), (p + "." + fc1 + ".bias", [i])]
            ps += [(p + "." + fc2 + ".weight", [d, i]), (p + "." + fc2 + ".bias", [d])]
        }
        ps += [(finalLayerNorm + ".weight", [d]), (finalLayerNorm + ".bias", [d])]
        return ps
    }

    /// Stored tensors of the diffusers layout that no parameter uses but that are allowed.
    static func isAllowedUnused(_ name: String) -> Bool { name == positionIDs }

    /// Why an allowed unused tensor (`isAllowedUnused`) is not written; nil for any other tensor.
    static func allowedUnusedReason(_ name: String) -> String? {
        isAllowedUnused(name) ? "transformers' position_ids buffer (the identity 0..<positions, not a weight)" : nil
    }
}
