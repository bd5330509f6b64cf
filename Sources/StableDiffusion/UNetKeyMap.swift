/// How a checkpoint stores the UNet's tensors.
public enum CheckpointLayout: String, Sendable, CaseIterable, Codable {
    /// diffusers' `UNet2DConditionModel` names (`down_blocks.0.resnets.0.conv1.weight`).
    case diffusers
    /// The original (CompVis/Stability) single-file names (`model.diffusion_model.input_blocks.1.0.in_layers.2.weight`).
    case original
}

/// The correspondence between the UNet's canonical parameter names and the names one
/// checkpoint layout stores them under, for one architecture.
public struct UNetKeyMap: Sendable {
    public struct Entry: Sendable, Equatable {
        /// diffusers module path of the parameter.
        public var canonical: String
        /// Name in the checkpoint file.
        public var stored: String
        public var shape: [Int]
    }

    public let layout: CheckpointLayout
    /// Entries in execution order.
    public let entries: [Entry]

    /// A function from canonical name to stored name for `config` in `layout`.
    static func storedNames(config: UNetConfig, layout: CheckpointLayout) -> (String) -> String {
        switch layout {
        case .diffusers: return { $0 }
        case .original:
            let table = OriginalUNetKeys(config: config)
            return { table.storedName($0) }
        }
    }

    /// The map for `config` in `layout`; with `ema`, the original layout's EMA copies.
    public init(config: UNetConfig, layout: CheckpointLayout, ema: Bool = false) {
        self.layout = layout
        let table = OriginalUNetKeys(config: config)
        entries = config.parameters().map { p in
            let stored: String
            switch layout {
            case .diffusers: stored = p.name
            case .original: stored = ema ? table.emaName(p.name) : table.storedName(p.name)
            }
            return Entry(canonical: p.name, stored: stored, shape: p.shape)
        }
    }
}
