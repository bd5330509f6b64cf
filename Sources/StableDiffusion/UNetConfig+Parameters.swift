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
        let temb = 4 * blockOutChannels[0]
        for m in modules() {
            let p = m.name
            switch m.kind {
            case .convIn(let i, let o): conv(p, o, i, 3)
            case .timeEmbedding(let c, let d):
                linear(p + ".linear_1", d, c)
                linear(p + ".linear_2", d, d)
            case .resnet(let i, let o, _):
                norm(p + ".norm1", i)
                conv(p + ".conv1", o, i, 3)
                linear(p + ".time_emb_proj", o, temb)
                norm(p + ".norm2", o)
                conv(p + ".conv2", o, o, 3)
                if i != o { conv(p + ".conv_shortcut", o, i, 1) }
            case .transformer(let c, _):
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
            case .downsampler(let c), .upsampler(let c): conv(p + ".conv", c, c, 3)
            case .convOut(let i, let o):
                norm("conv_norm_out", i)
                conv(p, o, i, 3)
            }
        }
        return out
    }

    /// Total number of UNet parameters.
    public var parameterCount: Int { parameters().reduce(0) { $0 + $1.shape.reduce(1, *) } }
}
