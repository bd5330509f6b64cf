import SafeTensors

extension UNetConfig {
    /// Infers the architecture from a checkpoint's tensors: levels, layers per block, which
    /// blocks have cross-attention, channels, context dim, linear vs 1x1-conv projections.
    /// Heads (head size 64 for linear projections as in SD2.x, 8 heads otherwise as in SD1.x),
    /// norm groups (32), sample size and `upcast_attention` are not stored in the weights and are
    /// assumed; the returned notes list them. The result passes `validateStructure` only.
    public static func infer(
        from store: TensorStore, layout: CheckpointLayout, file: String
    ) throws(CheckpointError) -> (config: UNetConfig, assumptions: [String]) {
        var c = UNetConfig()
        var notes: [String] = []
        let structure: (levels: Int, layers: Int, attention: [Bool])
        switch layout {
        case .original: structure = try OriginalUNetKeys.structure(store.names, file: file)
        case .diffusers: structure = try diffusersStructure(store.names, file: file)
        }
        c.layersPerBlock = structure.layers
        c.downBlocks = structure.attention.map { $0 ? .crossAttention : .plain }
        c.upBlocks = structure.attention.reversed().map { $0 ? .crossAttention : .plain }
        c.blockOutChannels = Array(repeating: 0, count: structure.levels)
        let keys = UNetKeyMap.storedNames(config: c, layout: layout)
        func shape(_ canonical: String) throws(CheckpointError) -> [Int] {
            let stored = keys(canonical)
            guard let loc = store[stored] else { throw .cannotInfer(file: file, "tensor '\(stored)' is missing") }
            return loc.info.shape
        }
        for i in 0..<structure.levels {
            let s = try shape("down_blocks.\(i).resnets.0.conv1.weight")
            guard s.count == 4 else { throw .cannotInfer(file: file, "\(keys("down_blocks.\(i).resnets.0.conv1.weight")) has shape \(s), expected 4 dimensions") }
            c.blockOutChannels[i] = s[0]
        }
        let convIn = try shape("conv_in.weight")
        let convOut = try shape("conv_out.weight")
        guard convIn.count == 4, convOut.count == 4 else { throw .cannotInfer(file: file, "conv_in/conv_out are not 4-dimensional") }
        c.inChannels = convIn[1]
        c.outChannels = convOut[0]
        let toK = try shape("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
        guard toK.count == 2 else { throw .cannotInfer(file: file, "cross-attention to_k is not 2-dimensional") }
        c.crossAttentionDim = toK[1]
        c.useLinearProjection = try shape("mid_block.attentions.0.proj_in.weight").count == 2
        if c.useLinearProjection {
            if c.blockOutChannels.allSatisfy({ $0 % 64 == 0 }) {
                c.attentionHeads = c.blockOutChannels.map { $0 / 64 }
                notes.append("attention heads: head size 64 assumed (SD2.x); heads \(c.attentionHeads)")
            } else {
                c.attentionHeads = Array(repeating: 0, count: structure.levels)
                notes.append("attention heads: unknown (channels are not multiples of the SD2.x head size 64); give a config (load option config_path)")
            }
        } else {
            c.attentionHeads = Array(repeating: 8, count: structure.levels)
            notes.append("attention heads: 8 per block assumed (SD1.x)")
        }
        c.normNumGroups = 32
        notes.append("norm_num_groups: 32 assumed")
        c.sampleSize = c.crossAttentionDim == 1024 ? 96 : 64
        notes.append("sample_size: \(c.sampleSize) assumed")
        c.upcastAttention = false
        notes.append("upcast_attention: false assumed (SD2.1 768-v uses true: load option upcast_attention)")
        try c.validateStructure(source: file)
        return (c, notes)
    }

    private static func diffusersStructure(_ names: [String], file: String) throws(CheckpointError) -> (levels: Int, layers: Int, attention: [Bool]) {
        var levels = 0, layers = 0
        var attention = Set<Int>()
        for n in names {
            let p = n.split(separator: ".")
            guard p.count > 3, p[0] == "down_blocks", let i = Int(p[1]) else { continue }
            levels = max(levels, i + 1)
            if p[2] == "resnets", i == 0, let j = Int(p[3]) { layers = max(layers, j + 1) }
            if p[2] == "attentions" { attention.insert(i) }
        }
        guard levels > 0, layers > 0 else { throw .cannotInfer(file: file, "no down_blocks.*.resnets.* tensors") }
        return (levels, layers, (0..<levels).map { attention.contains($0) })
    }
}
