/// The correspondence between the VAE's canonical parameter names (`VAEKeys`) and the tensors one
/// checkpoint layout stores them in, for one architecture.
public struct VAEKeyMap: Sendable {
    public struct Entry: Sendable, Equatable {
        /// diffusers module path of the parameter.
        public var canonical: String
        /// Name of the stored tensor.
        public var stored: String
        /// Shape of the parameter.
        public var shape: [Int]
        /// Shape of the stored tensor ([C, C, 1, 1] for the original layout's attention projections).
        public var storedShape: [Int]
    }

    public let layout: CheckpointLayout
    /// Entries in execution order.
    public let entries: [Entry]

    public init(config: VAEConfig, layout: CheckpointLayout) {
        self.layout = layout
        entries = VAEKeys.parameters(config).map { p in
            switch layout {
            case .diffusers:
                return Entry(canonical: p.name, stored: p.name, shape: p.shape, storedShape: p.shape)
            case .original:
                guard let s = OriginalVAEKeys.stored(p.name, levels: config.levels) else {
                    preconditionFailure("OriginalVAEKeys has no entry for '\(p.name)'")
                }
                return Entry(canonical: p.name, stored: s.name, shape: p.shape, storedShape: s.conv1x1 ? p.shape + [1, 1] : p.shape)
            }
        }
    }

    /// Whether a stored tensor that no entry uses belongs to the VAE (and so must be used).
    func isInNamespace(_ stored: String) -> Bool {
        switch layout {
        case .diffusers: return true
        case .original: return OriginalVAEKeys.inNamespace(stored)
        }
    }
}
