/// The canonical parameter names of the VAE: diffusers' `AutoencoderKL` module paths, which are
/// also the key table of the diffusers layout (`vae/diffusion_pytorch_model.safetensors` stores
/// them as they are).
///
/// This file is the only place that spells them (the sub-modules of a resnet, `norm1` ...
/// `conv_shortcut`, and of an attention, `to_q` ... `to_out.0`, are NN's names).
public enum VAEKeys {
    static let encoder = "encoder", decoder = "decoder"
    static let quantConv = "quant_conv", postQuantConv = "post_quant_conv"
    /// Sub-modules of the encoder and the decoder.
    static let convIn = "conv_in", convNormOut = "conv_norm_out", convOut = "conv_out"
    static let downBlocks = "down_blocks", upBlocks = "up_blocks", resnets = "resnets"
    static let downsampler = "downsamplers.0.conv", upsampler = "upsamplers.0.conv"
    static let midBlock = "mid_block", midResnets = "mid_block.resnets", midAttention = "mid_block.attentions.0"
    /// The group norm of the mid-block attention.
    static let attentionNorm = "group_norm"
    /// The 1x1 shortcut of a resnet whose channel count changes (NN's `ResnetBlock`).
    static let shortcut = "conv_shortcut"

    static func down(_ i: Int) -> String { "\(encoder).\(downBlocks).\(i)" }
    static func up(_ i: Int) -> String { "\(decoder).\(upBlocks).\(i)" }
    static func resnet(_ block: String, _ j: Int) -> String { "\(block).\(resnets).\(j)" }
    static func midResnet(_ side: String, _ j: Int) -> String { "\(side).\(midResnets).\(j)" }

    /// Every parameter of `config` with its shape, in execution order (encoder, quant_conv,
    /// post_quant_conv, decoder).
    public static func parameters(_ config: VAEConfig) -> [(name: String, shape: [Int])] {
        var ps: [(String, [Int])] = []
        func conv(_ p: String, _ i: Int, _ o: Int, _ k: Int) { ps += [(p + ".weight", [o, i, k, k]), (p + ".bias", [o])] }
        func norm(_ p: String, _ c: Int) { ps += [(p + ".weight", [c]), (p + ".bias", [c])] }
        func resnetBlock(_ p: String, _ i: Int, _ o: Int) {
            norm(p + ".norm1", i); conv(p + ".conv1", i, o, 3); norm(p + ".norm2", o); conv(p + ".conv2", o, o, 3)
            if i != o { conv(p + "." + shortcut, i, o, 1) }
        }
        func mid(_ side: String, _ c: Int) {
            resnetBlock(midResnet(side, 0), c, c)
            if config.midBlockAddAttention {
                let a = side + "." + midAttention
                norm(a + "." + attentionNorm, c)
                for proj in ["to_q", "to_k", "to_v", "to_out.0"] { ps += [(a + "." + proj + ".weight", [c, c]), (a + "." + proj + ".bias", [c])] }
            }
            resnetBlock(midResnet(side, 1), c, c)
        }
        let ch = config.blockOutChannels, n = ch.count, l = config.latentChannels
        conv(encoder + "." + convIn, config.inChannels, ch[0], 3)
        for i in 0..<n {
            for j in 0..<config.layersPerBlock { resnetBlock(resnet(down(i), j), j == 0 ? (i == 0 ? ch[0] : ch[i - 1]) : ch[i], ch[i]) }
            if i < n - 1 { conv(down(i) + "." + downsampler, ch[i], ch[i], 3) }
        }
        mid(encoder, ch[n - 1])
        norm(encoder + "." + convNormOut, ch[n - 1])
        conv(encoder + "." + convOut, ch[n - 1], 2 * l, 3)
        if config.useQuantConv { conv(quantConv, 2 * l, 2 * l, 1) }
        if config.usePostQuantConv { conv(postQuantConv, l, l, 1) }
        conv(decoder + "." + convIn, l, ch[n - 1], 3)
        mid(decoder, ch[n - 1])
        let reversed = Array(ch.reversed())
        for i in 0..<n {
            let prev = reversed[max(i - 1, 0)]
            for j in 0...config.layersPerBlock { resnetBlock(resnet(up(i), j), j == 0 ? prev : reversed[i], reversed[i]) }
            if i < n - 1 { conv(up(i) + "." + upsampler, reversed[i], reversed[i], 3) }
        }
        norm(decoder + "." + convNormOut, ch[0])
        conv(decoder + "." + convOut, ch[0], config.outChannels, 3)
        return ps
    }
}
