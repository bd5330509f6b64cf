/// The correspondence between the text encoder's canonical parameter names (`CLIPTextKeys`) and
/// the tensors one checkpoint layout stores them in, for one architecture.
public struct CLIPTextKeyMap: Sendable {
    public struct Entry: Sendable, Equatable {
        /// transformers module path of the parameter.
        public var canonical: String
        /// Name of the stored tensor.
        public var stored: String
        /// Shape of the parameter.
        public var shape: [Int]
        /// Shape of the stored tensor (three times as many rows for a fused q/k/v projection).
        public var storedShape: [Int]
        /// For a fused projection: the parameter is rows part*shape[0]..<(part+1)*shape[0].
        public var part: Int?
    }

    public let layout: CheckpointLayout
    /// Entries in execution order.
    public let entries: [Entry]
    private let layers: Int

    public init(config: CLIPTextConfig, layout: CheckpointLayout) {
        self.layout = layout
        layers = config.numHiddenLayers
        entries = CLIPTextKeys.parameters(config).map { p in
            switch layout {
            case .diffusers:
                return Entry(canonical: p.name, stored: p.name, shape: p.shape, storedShape: p.shape)
            case .original:
                guard let s = OriginalCLIPTextKeys.stored(p.name) else {
                    preconditionFailure("OriginalCLIPTextKeys has no entry for '\(p.name)'")
                }
                var storedShape = p.shape
                if s.part != nil { storedShape[0] *= 3 }
                return Entry(canonical: p.name, stored: s.name, shape: p.shape, storedShape: storedShape, part: s.part)
            }
        }
    }

    /// The original layout's resblock after the last of `config`'s layers, one entry per stored
    /// tensor (the fused q/k/v projection once, `part` nil), which a diffusers text encoder
    /// converted to an original file gets as zeros. SD2.x readers use the output of the
    /// penultimate resblock (LDM's `FrozenOpenCLIPEmbedder(layer="penultimate")`, alter's
    /// `OriginalCLIPTextKeys.infer`) or skip `resblocks.23` by name (diffusers' single-file
    /// loader), so every real layer must come before one more; an all-zero pre-LN residual block
    /// adds nothing to its input, so whoever runs it too gets the same hidden state.
    public static func placeholderLayer(after config: CLIPTextConfig) -> [Entry] {
        let real = Set(CLIPTextKeyMap(config: config, layout: .original).entries.map(\.stored))
        var deeper = config
        deeper.numHiddenLayers += 1
        var seen = Set<String>()
        return CLIPTextKeyMap(config: deeper, layout: .original).entries.compactMap { e in
            guard !real.contains(e.stored), seen.insert(e.stored).inserted else { return nil }
            return Entry(canonical: e.canonical, stored: e.stored, shape: e.storedShape, storedShape: e.storedShape, part: nil)
        }
    }

    /// Whether a stored tensor that no entry uses belongs to the text encoder (and so must be used).
    func isInNamespace(_ stored: String) -> Bool {
        switch layout {
        case .diffusers: return true
        case .original: return OriginalCLIPTextKeys.inNamespace(stored)
        }
    }

    /// Whether a stored text encoder tensor may stay unused (the layout's documented allow-list).
    func isAllowedUnused(_ stored: String) -> Bool {
        switch layout {
        case .diffusers: return CLIPTextKeys.isAllowedUnused(stored)
        case .original: return OriginalCLIPTextKeys.isAllowedUnused(stored, layers: layers)
        }
    }
}
