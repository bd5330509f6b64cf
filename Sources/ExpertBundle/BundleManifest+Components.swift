import Foundation

extension BundleManifest {
    /// `bundle.json` `components` (format version 3, formats/bundle.md "Pipeline components"):
    /// the tokenizer, text encoder and VAE of the pipeline the bundle was compressed from, stored
    /// under `tokenizer/`, `text_encoder/` and `vae/` as a diffusers pipeline folder has them.
    public struct Components: Codable, Equatable, Sendable {
        public var tokenizer: Component
        public var textEncoder: Component
        public var vae: Component

        public init(tokenizer: Component, textEncoder: Component, vae: Component) {
            self.tokenizer = tokenizer
            self.textEncoder = textEncoder
            self.vae = vae
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case tokenizer, textEncoder = "text_encoder", vae
        }

        /// The components by their key in `components`.
        public var all: [(kind: ComponentKind, component: Component)] {
            [(.tokenizer, tokenizer), (.textEncoder, textEncoder), (.vae, vae)]
        }

        /// Every file the components list.
        public var files: [FileDigest] { all.flatMap(\.component.files) }
    }

    /// One component: its files (each with size and SHA-256) and, for the text encoder and VAE,
    /// every tensor of its weight file with the SHA-256 of its stored bytes (empty for the tokenizer).
    public struct Component: Codable, Equatable, Sendable {
        public var files: [FileDigest]
        public var tensors: [ExpertManifest.TensorEntry]

        public init(files: [FileDigest], tensors: [ExpertManifest.TensorEntry]) {
            self.files = files
            self.tensors = tensors
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case files, tensors
        }
    }
}
