/// The UNet's modules in execution order, with channels and resolution level: the one walk of the
/// architecture from which the parameter list, the unit list and the cost model are derived.
extension UNetConfig {
    public struct Module: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case convIn(in: Int, out: Int)
            case timeEmbedding(channels: Int, dim: Int)
            /// `mainIn`: channels of the hidden state before the skip concat (up blocks), else `in`.
            case resnet(in: Int, out: Int, mainIn: Int)
            case transformer(channels: Int, heads: Int)
            case downsampler(channels: Int)
            case upsampler(channels: Int)
            case convOut(in: Int, out: Int)
        }
        /// diffusers module path.
        public var name: String
        public var kind: Kind
        /// Resolution level of the module's input: spatial size divided by 2^level.
        public var level: Int
    }

    /// Every module that holds parameters, in execution order.
    public func modules() -> [Module] {
        var out: [Module] = []
        let c0 = blockOutChannels[0]
        out.append(Module(name: "conv_in", kind: .convIn(in: inChannels, out: c0), level: 0))
        out.append(Module(name: "time_embedding", kind: .timeEmbedding(channels: c0, dim: 4 * c0), level: 0))
        var ch = c0
        for (i, kind) in downBlocks.enumerated() {
            let o = blockOutChannels[i]
            for j in 0..<layersPerBlock {
                let inCh = j == 0 ? ch : o
                out.append(Module(name: "down_blocks.\(i).resnets.\(j)", kind: .resnet(in: inCh, out: o, mainIn: inCh), level: i))
                if kind == .crossAttention {
                    out.append(Module(name: "down_blocks.\(i).attentions.\(j)", kind: .transformer(channels: o, heads: attentionHeads[i]), level: i))
                }
            }
            if i < levels - 1 { out.append(Module(name: "down_blocks.\(i).downsamplers.0", kind: .downsampler(channels: o), level: i)) }
            ch = o
        }
        let cm = blockOutChannels[levels - 1]
        let deepest = levels - 1
        out.append(Module(name: "mid_block.resnets.0", kind: .resnet(in: cm, out: cm, mainIn: cm), level: deepest))
        out.append(Module(name: "mid_block.attentions.0", kind: .transformer(channels: cm, heads: attentionHeads[deepest]), level: deepest))
        out.append(Module(name: "mid_block.resnets.1", kind: .resnet(in: cm, out: cm, mainIn: cm), level: deepest))
        let reversed = Array(blockOutChannels.reversed())
        let reversedHeads = Array(attentionHeads.reversed())
        var outCh = reversed[0]
        for (i, kind) in upBlocks.enumerated() {
            let prev = outCh
            outCh = reversed[i]
            let inCh = reversed[min(i + 1, levels - 1)]
            let level = levels - 1 - i
            for j in 0...layersPerBlock {
                let skip = j == layersPerBlock ? inCh : outCh
                let main = j == 0 ? prev : outCh
                out.append(Module(name: "up_blocks.\(i).resnets.\(j)", kind: .resnet(in: main + skip, out: outCh, mainIn: main), level: level))
                if kind == .crossAttention {
                    out.append(Module(name: "up_blocks.\(i).attentions.\(j)", kind: .transformer(channels: outCh, heads: reversedHeads[i]), level: level))
                }
            }
            if i < levels - 1 { out.append(Module(name: "up_blocks.\(i).upsamplers.0", kind: .upsampler(channels: outCh), level: level)) }
        }
        out.append(Module(name: "conv_out", kind: .convOut(in: c0, out: outChannels), level: 0))
        return out
    }
}
