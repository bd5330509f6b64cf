/// The UNet's parameters, named by their diffusers module paths (the canonical names
/// everywhere in `alter`), with shapes, in execution order.
extension UNetConfig {
    /// One parameter: canonical (diffusers) name and shape.
    public struct Parameter: Equatable, Sendable {
        public var name: String
        public var shape: [Int]
    }

    /// Every parameter of the UNet in execution order.
    public func parameters() -> [Parameter] {
        var out: [Parameter] = []
        func add(_ name: String, _ shape: [Int]) { out.append(Parameter(name: name, shape: shape)) }
        func linear(_ p: String, _ o: Int, _ i: Int, bias: Bool = true) {
            add(p + ".weight", [o, i])
            if bias { add(p + ".bias", [o]) }
        }
        func conv(_ p: String, _ o: Int, _ i: Int, _ k: Int) {
            add(p + ".weight", [o, i, k, k])
            add(p + ".bias", [o])
        }
        func norm(_ p: String, _ c: Int) {
            add(p + ".weight", [c])
            add(p + ".bias", [c])
        }
        let c0 = blockOutChannels[0]
        let temb = 4 * c0
        func resnet(_ p: String, _ i: Int, _ o: Int) {
            norm(p + ".norm1", i)
            conv(p + ".conv1", o, i, 3)
            linear(p + ".time_emb_proj", o, temb)
            norm(p + ".norm2", o)
            conv(p + ".conv2", o, o, 3)
            if i != o { conv(p + ".conv_shortcut", o, i, 1) }
        }
        func transformer(_ p: String, _ c: Int) {
            norm(p + ".norm", c)
            if useLinearProjection { linear(p + ".proj_in", c, c) } else { conv(p + ".proj_in", c, c, 1) }
            let b = p + ".transformer_blocks.0"
            norm(b + ".norm1", c)
            for x in ["to_q", "to_k", "to_v"] { linear(b + ".attn1." + x, c, c, bias: false) }
            linear(b + ".attn1.to_out.0", c, c)
            norm(b + ".norm2", c)
            linear(b + ".attn2.to_q", c, c, bias: false)
            linear(b + ".attn2.to_k", c, crossAttentionDim, bias: false)
            linear(b + ".attn2.to_v", c, crossAttentionDim, bias: false)
            linear(b + ".attn2.to_out.0", c, c)
            norm(b + ".norm3", c)
            linear(b + ".ff.net.0.proj", 8 * c, c)
            linear(b + ".ff.net.2", c, 4 * c)
            if useLinearProjection { linear(p + ".proj_out", c, c) } else { conv(p + ".proj_out", c, c, 1) }
        }

        conv("conv_in", c0, inChannels, 3)
        linear("time_embedding.linear_1", temb, c0)
        linear("time_embedding.linear_2", temb, temb)
        var ch = c0
        for (i, kind) in downBlocks.enumerated() {
            let o = blockOutChannels[i]
            for j in 0..<layersPerBlock {
                resnet("down_blocks.\(i).resnets.\(j)", j == 0 ? ch : o, o)
                if kind == .crossAttention { transformer("down_blocks.\(i).attentions.\(j)", o) }
            }
            if i < levels - 1 { conv("down_blocks.\(i).downsamplers.0.conv", o, o, 3) }
            ch = o
        }
        let cm = blockOutChannels[levels - 1]
        resnet("mid_block.resnets.0", cm, cm)
        transformer("mid_block.attentions.0", cm)
        resnet("mid_block.resnets.1", cm, cm)
        let reversed = Array(blockOutChannels.reversed())
        var outCh = reversed[0]
        for (i, kind) in upBlocks.enumerated() {
            let prev = outCh
            outCh = reversed[i]
            let inCh = reversed[min(i + 1, levels - 1)]
            for j in 0...layersPerBlock {
                let skip = j == layersPerBlock ? inCh : outCh
                let resIn = j == 0 ? prev : outCh
                resnet("up_blocks.\(i).resnets.\(j)", resIn + skip, outCh)
                if kind == .crossAttention { transformer("up_blocks.\(i).attentions.\(j)", outCh) }
            }
            if i < levels - 1 { conv("up_blocks.\(i).upsamplers.0.conv", outCh, outCh, 3) }
        }
        norm("conv_norm_out", c0)
        conv("conv_out", outChannels, c0, 3)
        return out
    }

    /// Total number of UNet parameters.
    public var parameterCount: Int { parameters().reduce(0) { $0 + $1.shape.reduce(1, *) } }
}
