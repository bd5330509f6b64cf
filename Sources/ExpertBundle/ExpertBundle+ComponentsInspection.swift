import Foundation
import StableDiffusion

extension ExpertBundle {
    /// The pipeline components of `alter inspect NAME.alter --json` (formats/cli-json.md): files,
    /// sizes, storage dtype and the numbers that decide whether they fit the UNet.
    public struct ComponentsInspection: Encodable, Sendable {
        public struct Tokenizer: Encodable, Sendable {
            public var files: [String]
            public var bytes: Int
            /// Ids in the vocabulary (highest id + 1).
            public var vocabSize: Int
            public var maxLength: Int
            public var padToken: String

            enum CodingKeys: String, CodingKey, CaseIterable {
                case files, bytes, vocabSize = "vocab_size", maxLength = "max_length", padToken = "pad_token"
            }
        }

        public struct TextEncoder: Encodable, Sendable {
            public var files: [String]
            public var bytes: Int
            /// Storage dtypes of its tensors (one, as export writes them).
            public var dtype: String
            public var tensorCount: Int
            public var parameterCount: Int
            public var hiddenSize: Int
            public var numHiddenLayers: Int
            public var numAttentionHeads: Int
            public var vocabSize: Int
            public var maxPositionEmbeddings: Int
            public var hiddenAct: String

            enum CodingKeys: String, CodingKey, CaseIterable {
                case files, bytes, dtype, tensorCount = "tensor_count", parameterCount = "parameter_count", hiddenSize = "hidden_size"
                case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads", vocabSize = "vocab_size"
                case maxPositionEmbeddings = "max_position_embeddings", hiddenAct = "hidden_act"
            }
        }

        public struct VAE: Encodable, Sendable {
            public var files: [String]
            public var bytes: Int
            public var dtype: String
            public var tensorCount: Int
            public var parameterCount: Int
            public var latentChannels: Int
            public var blockOutChannels: [Int]
            public var scalingFactor: Double

            enum CodingKeys: String, CodingKey, CaseIterable {
                case files, bytes, dtype, tensorCount = "tensor_count", parameterCount = "parameter_count"
                case latentChannels = "latent_channels", blockOutChannels = "block_out_channels", scalingFactor = "scaling_factor"
            }
        }

        public var tokenizer: Tokenizer
        public var textEncoder: TextEncoder
        public var vae: VAE

        enum CodingKeys: String, CodingKey, CaseIterable {
            case tokenizer, textEncoder = "text_encoder", vae
        }
    }

    /// The inspection of the carried components (read with the strict loaders), nil without them.
    public func componentsInspection() throws(BundleError) -> ComponentsInspection? {
        guard let c = manifest.components, let tokenizer = try tokenizer(), let text = try textEncoderCheckpoint(),
              let vae = try vaeCheckpoint() else { return nil }
        func bytes(_ m: BundleManifest.Component) throws(BundleError) -> Int {
            do { return try Bounds.sum(m.files.map(\.bytes), field: "components files bytes") } catch { throw BundleError(path + "/bundle.json", error.description) }
        }
        func dtype(_ m: BundleManifest.Component) -> String { Set(m.tensors.map(\.dtype)).sorted().joined(separator: ",") }
        func parameters(_ m: BundleManifest.Component) -> Int { m.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) } }
        return ComponentsInspection(
            tokenizer: .init(files: c.tokenizer.files.map(\.path), bytes: try bytes(c.tokenizer), vocabSize: tokenizer.tokens.count,
                             maxLength: tokenizer.maxLength, padToken: tokenizer.padToken.content),
            textEncoder: .init(files: c.textEncoder.files.map(\.path), bytes: try bytes(c.textEncoder), dtype: dtype(c.textEncoder),
                               tensorCount: c.textEncoder.tensors.count, parameterCount: parameters(c.textEncoder),
                               hiddenSize: text.config.hiddenSize, numHiddenLayers: text.config.numHiddenLayers,
                               numAttentionHeads: text.config.numAttentionHeads, vocabSize: text.config.vocabSize,
                               maxPositionEmbeddings: text.config.maxPositionEmbeddings, hiddenAct: text.config.hiddenAct.rawValue),
            vae: .init(files: c.vae.files.map(\.path), bytes: try bytes(c.vae), dtype: dtype(c.vae), tensorCount: c.vae.tensors.count,
                       parameterCount: parameters(c.vae), latentChannels: vae.config.latentChannels,
                       blockOutChannels: vae.config.blockOutChannels, scalingFactor: vae.config.scalingFactor))
    }
}
