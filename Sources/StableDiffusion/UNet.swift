import NN
import TensorCore

/// What a UNet forward pass should do besides the plain computation.
public struct UNetForwardOptions: Sendable {
    /// Per-unit, per-sample gate values in [0, 1] (unit name -> [N]); units not listed are on.
    public var gates: [String: [Float]] = [:]
    /// Units not computed at all (their output is their input).
    public var skip: Set<String> = []
    /// Whether to return the tapped block features.
    public var tapFeatures = false
    public init() {}
}

/// A UNet forward pass's results.
public struct UNetOutput {
    /// The model output, [N, outChannels, H, W].
    public var sample: Tensor
    /// Tapped features by name (`down_blocks.i`, `mid_block`, `up_blocks.i`), when asked for.
    public var features: [(name: String, tensor: Tensor)]
}

/// The SD1.x/SD2.x UNet (`UNet2DConditionModel` semantics of diffusers) with ALTER's unit gates.
public final class UNet {
    public let config: UNetConfig
    /// The prunable units in execution order.
    public let units: [UNetConfig.Unit]

    let convIn: Conv2dLayer
    let timeLinear1: LinearLayer, timeLinear2: LinearLayer
    let down: [DownBlock]
    let midResnet0: ResnetBlock, midAttention: Transformer2D, midResnet1: ResnetBlock
    let up: [UpBlock]
    let normOut: GroupNormLayer, convOut: Conv2dLayer

    struct DownBlock {
        var resnets: [ResnetBlock]
        var attentions: [Transformer2D]
        var downsampler: Conv2dLayer?
    }

    struct UpBlock {
        var resnets: [ResnetBlock]
        /// Channels of the hidden state entering each resnet before the skip concat.
        var mainChannels: [Int]
        var attentions: [Transformer2D]
        var upsampler: Conv2dLayer?
    }

    /// Builds the UNet for `config` with parameters from `source` (canonical names).
    public init(config: UNetConfig, parameters source: some ParameterSource) throws {
        self.config = config
        units = config.units()
        let c0 = config.blockOutChannels[0]
        let temb = 4 * c0
        let groups = config.normNumGroups
        let eps = Float(config.normEps)
        convIn = try Conv2dLayer(source, "conv_in", in: config.inChannels, out: c0, kernel: 3, padding: 1)
        timeLinear1 = try LinearLayer(source, "time_embedding.linear_1", in: c0, out: temb)
        timeLinear2 = try LinearLayer(source, "time_embedding.linear_2", in: temb, out: temb)
        var down: [DownBlock] = []
        var ch = c0
        for (i, kind) in config.downBlocks.enumerated() {
            let o = config.blockOutChannels[i]
            var block = DownBlock(resnets: [], attentions: [], downsampler: nil)
            for j in 0..<config.layersPerBlock {
                block.resnets.append(try ResnetBlock(source, "down_blocks.\(i).resnets.\(j)", in: j == 0 ? ch : o, out: o,
                                                     temb: temb, groups: groups, eps: eps))
                if kind == .crossAttention {
                    block.attentions.append(try Transformer2D(
                        source, "down_blocks.\(i).attentions.\(j)", channels: o, contextDim: config.crossAttentionDim,
                        heads: config.attentionHeads[i], groups: groups, linear: config.useLinearProjection, eps: 1e-5))
                }
            }
            if i < config.levels - 1 {
                block.downsampler = try Conv2dLayer(source, "down_blocks.\(i).downsamplers.0.conv", in: o, out: o, kernel: 3,
                                                    stride: 2, padding: config.downsamplePadding)
            }
            down.append(block)
            ch = o
        }
        self.down = down
        let cm = config.blockOutChannels[config.levels - 1]
        let midScale = Float(config.midBlockScaleFactor)
        midResnet0 = try ResnetBlock(source, "mid_block.resnets.0", in: cm, out: cm, temb: temb, groups: groups, eps: eps, outputScale: midScale)
        midAttention = try Transformer2D(source, "mid_block.attentions.0", channels: cm, contextDim: config.crossAttentionDim,
                                         heads: config.attentionHeads[config.levels - 1], groups: groups,
                                         linear: config.useLinearProjection, eps: 1e-5)
        midResnet1 = try ResnetBlock(source, "mid_block.resnets.1", in: cm, out: cm, temb: temb, groups: groups, eps: eps, outputScale: midScale)
        var up: [UpBlock] = []
        let reversed = Array(config.blockOutChannels.reversed())
        let reversedHeads = Array(config.attentionHeads.reversed())
        var outCh = reversed[0]
        for (i, kind) in config.upBlocks.enumerated() {
            let prev = outCh
            outCh = reversed[i]
            let inCh = reversed[min(i + 1, config.levels - 1)]
            var block = UpBlock(resnets: [], mainChannels: [], attentions: [], upsampler: nil)
            for j in 0...config.layersPerBlock {
                let skip = j == config.layersPerBlock ? inCh : outCh
                let main = j == 0 ? prev : outCh
                block.resnets.append(try ResnetBlock(source, "up_blocks.\(i).resnets.\(j)", in: main + skip, out: outCh,
                                                     temb: temb, groups: groups, eps: eps))
                block.mainChannels.append(main)
                if kind == .crossAttention {
                    block.attentions.append(try Transformer2D(
                        source, "up_blocks.\(i).attentions.\(j)", channels: outCh, contextDim: config.crossAttentionDim,
                        heads: reversedHeads[i], groups: groups, linear: config.useLinearProjection, eps: 1e-5))
                }
            }
            if i < config.levels - 1 {
                block.upsampler = try Conv2dLayer(source, "up_blocks.\(i).upsamplers.0.conv", in: outCh, out: outCh, kernel: 3, padding: 1)
            }
            up.append(block)
        }
        self.up = up
        normOut = try GroupNormLayer(source, "conv_norm_out", channels: c0, groups: groups, eps: eps)
        convOut = try Conv2dLayer(source, "conv_out", in: c0, out: config.outChannels, kernel: 3, padding: 1)
    }

    /// Builds the UNet of a checkpoint (its config must be complete: heads and norm groups known).
    public convenience init(checkpoint: UNetCheckpoint) throws {
        try checkpoint.config.validate(source: checkpoint.configOrigin)
        try self.init(config: checkpoint.config, parameters: checkpoint)
    }

    /// Checks that every gated or skipped name is a unit and every gate has one value per sample.
    public func check(_ options: UNetForwardOptions, batch: Int) throws(UNetError) {
        let names = Set(units.map(\.name))
        for name in options.skip.union(options.gates.keys).sorted() where !names.contains(name) {
            throw .notAUnit(name)
        }
        for (name, m) in options.gates.sorted(by: { $0.key < $1.key }) {
            guard m.count == batch else { throw .gateCount(unit: name, expected: batch, actual: m.count) }
            guard m.allSatisfy({ $0 >= 0 && $0 <= 1 }) else { throw .gateRange(unit: name) }
        }
    }

    /// Checks input shapes against the config.
    public func check(sample: [Int], timesteps: Int, context: [Int]) throws(UNetError) {
        let mult = 1 << (config.levels - 1)
        guard sample.count == 4, sample[1] == config.inChannels else {
            throw .shape("sample", expected: "[N, \(config.inChannels), H, W]", actual: sample)
        }
        guard sample[2] % mult == 0, sample[3] % mult == 0, sample[2] > 0, sample[3] > 0 else {
            throw .shape("sample", expected: "H and W multiples of \(mult)", actual: sample)
        }
        guard timesteps == sample[0] else { throw .shape("timestep", expected: "[\(sample[0])]", actual: [timesteps]) }
        guard context.count == 3, context[0] == sample[0], context[2] == config.crossAttentionDim else {
            throw .shape("context", expected: "[\(sample[0]), S, \(config.crossAttentionDim)]", actual: context)
        }
    }

    /// The forward pass. sample: [N, inChannels, H, W] (H, W multiples of 2^(levels-1)),
    /// timesteps: N values, context: [N, S, crossAttentionDim].
    public func forward(sample: Tensor, timesteps: [Float], context: Tensor, options: UNetForwardOptions = UNetForwardOptions()) -> UNetOutput {
        let n = sample.shape[0]
        precondition(timesteps.count == n && context.shape[0] == n, "UNet.forward: batch sizes differ")
        var features: [(name: String, tensor: Tensor)] = []
        func gate(_ unit: String) -> UnitGate {
            if options.skip.contains(unit) { return .skip }
            if let m = options.gates[unit] { return .blend(m) }
            return .on
        }
        let x0 = config.centerInputSample ? Elementwise.addScalar(Elementwise.scale(sample, 2), -1) : sample
        let tEmb = TimestepEmbedding.sinusoidal(timesteps, dim: config.blockOutChannels[0], flipSinToCos: config.flipSinToCos,
                                                freqShift: Float(config.freqShift))
        let temb = timeLinear2(SiLU.forward(timeLinear1(tEmb)))
        let tembSiLU = SiLU.forward(temb)

        var h = convIn(x0)
        var stack: [Tensor] = [h]
        for (i, block) in down.enumerated() {
            for j in block.resnets.indices {
                h = runResnet(block.resnets[j], name: "down_blocks.\(i).resnets.\(j)", main: h, input: h, tembSiLU: tembSiLU, gate: gate)
                if !block.attentions.isEmpty {
                    let t = block.attentions[j]
                    h = t(h, context: context, gate: gate(t.blockName))
                }
                stack.append(h)
            }
            if let ds = block.downsampler {
                h = ds(h)
                stack.append(h)
            }
            if options.tapFeatures { features.append(("down_blocks.\(i)", h)) }
        }
        h = runResnet(midResnet0, name: "mid_block.resnets.0", main: h, input: h, tembSiLU: tembSiLU, gate: gate)
        h = midAttention(h, context: context, gate: gate(midAttention.blockName))
        h = runResnet(midResnet1, name: "mid_block.resnets.1", main: h, input: h, tembSiLU: tembSiLU, gate: gate)
        if options.tapFeatures { features.append(("mid_block", h)) }
        for (i, block) in up.enumerated() {
            for j in block.resnets.indices {
                let skip = stack.removeLast()
                let name = "up_blocks.\(i).resnets.\(j)"
                let g = gate(name)
                // The skip is popped either way; a skipped unit never concatenates it.
                let input: Tensor
                if case .skip = g { input = h } else { input = ConcatChannels.forward(h, skip) }
                h = runResnet(block.resnets[j], name: name, main: h, input: input, tembSiLU: tembSiLU, gate: { _ in g })
                if !block.attentions.isEmpty {
                    let t = block.attentions[j]
                    h = t(h, context: context, gate: gate(t.blockName))
                }
            }
            if let us = block.upsampler { h = us(Upsample2x.forward(h)) }
            if options.tapFeatures { features.append(("up_blocks.\(i)", h)) }
        }
        let out = convOut(normOut(h, silu: true))
        return UNetOutput(sample: out, features: features)
    }

    /// Runs a resnet with its gate. `main` is the unit's input (before any skip concat),
    /// `input` what the resnet itself takes. Only units can be skipped or blended.
    private func runResnet(
        _ r: ResnetBlock, name: String, main: Tensor, input: Tensor, tembSiLU: Tensor, gate: (String) -> UnitGate
    ) -> Tensor {
        switch gate(name) {
        case .on: return r(input, tembSiLU: tembSiLU)
        case .skip: return main
        case .blend(let m): return Elementwise.blend(main, r(input, tembSiLU: tembSiLU), mix: m)
        }
    }
}
