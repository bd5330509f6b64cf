/// ALTER's prunable units (ALTER.md section 2), named by diffusers module path, in execution order.
extension UNetConfig {
    /// A prunable unit.
    public struct Unit: Equatable, Sendable, Hashable {
        public enum Kind: String, Sendable { case resnet, transformer }
        /// diffusers module path, e.g. `down_blocks.0.resnets.1` or
        /// `up_blocks.1.attentions.2.transformer_blocks.0`.
        public var name: String
        public var kind: Kind
    }

    /// Every BasicTransformerBlock, and every ResnetBlock2D whose main-path input channels equal its
    /// output channels (for up-block resnets, the channels before the skip concat), in execution order.
    public func units() -> [Unit] {
        modules().compactMap { m in
            switch m.kind {
            case .resnet(_, let o, let main) where main == o: return Unit(name: m.name, kind: .resnet)
            case .transformer: return Unit(name: m.name + ".transformer_blocks.0", kind: .transformer)
            default: return nil
            }
        }
    }

    /// Names of the tapped features: each down block, the mid block, each up block.
    public var featureNames: [String] {
        (0..<levels).map { "down_blocks.\($0)" } + ["mid_block"] + (0..<levels).map { "up_blocks.\($0)" }
    }
}
