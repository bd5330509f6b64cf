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

    public init(sample: Tensor, features: [(name: String, tensor: Tensor)]) {
        self.sample = sample
        self.features = features
    }
}

/// The SD1.x/SD2.x UNet (`UNet2DConditionModel` semantics of diffusers) with ALTER's unit gates.
public final class UNet {
    public let config: UNetConfig
    /// The prunable units in execution order.
    public let units: [UNetConfig.Unit]
    /// Units built without parameters (not stored in a bundle): every forward must skip them.
    public let absentUnits: Set<String>

    let convIn: Conv2dLayer
    let timeLinear1: LinearLayer, timeLinear2: LinearLayer
    let down: [DownBlock]
    let midResnet0: ResnetBlock?, midAttention: Transformer2D, midResnet1: ResnetBlock?
    let up: [UpBlock]
    let normOut: GroupNormLayer, convOut: Conv2dLayer

    struct DownBlock {
        var resnets: [ResnetBlock?]
        var attentions: [Transformer2D]
        var downsampler: Conv2dLayer?
    }

    struct UpBlock {
        var resnets: [ResnetBlock?]
        var attentions: [Transformer2D]
        var upsampler: Conv2dLayer?
    }

    /// Builds the UNet for `config` with parameters from `source` (canonical names), module by
    /// module in the order of `UNetConfig.modules()`, which holds the channel arithmetic.
    /// The parameters of `absentUnits` are not requested; forwards must skip those units.
    public init(config: UNetConfig, parameters source: some ParameterSource, absentUnits: Set<String> = []) throws {
        self.config = config
        units = config.units()
        let unitNames = Set(units.map(\.name))
        if let bad = absentUnits.sorted().first(where: { !unitNames.contains($0) }) { throw UNetError.notAUnit(bad) }
        self.absentUnits = absentUnits
        let groups = config.normNumGroups
        let eps = Float(config.normEps)
        let temb = 4 * config.blockOutChannels[0]
        var convIn: Conv2dLayer?, convOut: Conv2dLayer?, normOut: GroupNormLayer?
        var time: (LinearLayer, LinearLayer)?
        var down = Array(repeating: DownBlock(resnets: [], attentions: [], downsampler: nil), count: config.levels)
        var up = Array(repeating: UpBlock(resnets: [], attentions: [], upsampler: nil), count: config.levels)
        var midResnets: [ResnetBlock?] = [], midAttention: Transformer2D?
        for m in config.modules() {
            let parts = m.name.split(separator: ".")
            let block = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            switch m.kind {
            case .convIn(let i, let o):
                convIn = try Conv2dLayer(source, m.name, in: i, out: o, kernel: 3, padding: 1)
            case .timeEmbedding(let c, let d):
                time = (try LinearLayer(source, m.name + ".linear_1", in: c, out: d),
                        try LinearLayer(source, m.name + ".linear_2", in: d, out: d))
            case .resnet(let i, let o, _):
                let isMid = parts[0] == "mid_block"
                let r = absentUnits.contains(m.name) ? nil : try ResnetBlock(
                    source, m.name, in: i, out: o, temb: temb, groups: groups, eps: eps,
                    outputScale: isMid ? Float(config.midBlockScaleFactor) : 1)
                if isMid { midResnets.append(r) } else if parts[0] == "down_blocks" { down[block].resnets.append(r) } else { up[block].resnets.append(r) }
            case .transformer(let c, let heads):
                let t = try Transformer2D(source, m.name, channels: c, contextDim: config.crossAttentionDim, heads: heads,
                                          groups: groups, linear: config.useLinearProjection, eps: 1e-5,
                                          blockAbsent: absentUnits.contains(m.name + ".transformer_blocks.0"))
                if parts[0] == "mid_block" { midAttention = t } else if parts[0] == "down_blocks" { down[block].attentions.append(t) } else { up[block].attentions.append(t) }
            case .downsampler(let c):
                down[block].downsampler = try Conv2dLayer(source, m.name + ".conv", in: c, out: c, kernel: 3, stride: 2,
                                                          padding: config.downsamplePadding)
            case .upsampler(let c):
                up[block].upsampler = try Conv2dLayer(source, m.name + ".conv", in: c, out: c, kernel: 3, padding: 1)
            case .convOut(let i, let o):
                normOut = try GroupNormLayer(source, "conv_norm_out", channels: i, groups: groups, eps: eps)
                convOut = try Conv2dLayer(source, m.name, in: i, out: o, kernel: 3, padding: 1)
            }
        }
        guard let convIn, let convOut, let normOut, let time, let midAttention, midResnets.count == 2 else {
            preconditionFailure("UNetConfig.modules() lacks a required module")
        }
        self.convIn = convIn
        timeLinear1 = time.0
        timeLinear2 = time.1
        self.down = down
        midResnet0 = midResnets[0]
        self.midAttention = midAttention
        midResnet1 = midResnets[1]
        self.up = up
        self.normOut = normOut
        self.convOut = convOut
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
        for name in absentUnits.sorted() where !options.skip.contains(name) {
            throw .absentUnit(name)
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
        let tape = Tape(recording: false)
        let gates = options.gates.mapValues { tape.constant(Tensor(shape: [$0.count], values: $0)) }
        let out = forward(on: tape, sample: tape.constant(sample), timesteps: timesteps, context: tape.constant(context),
                          gates: gates, skip: options.skip, tapFeatures: options.tapFeatures)
        return UNetOutput(sample: out.sample.value, features: out.features.map { ($0.name, $0.value.value) })
    }

    /// The forward pass on a tape, differentiable with respect to the sample, the context, the
    /// gates (unit name -> [N] values in [0, 1]) and the trainable parameters. With
    /// `checkpointing`, each resnet and each transformer is recomputed during `backward` instead of
    /// keeping its activations.
    public func forward(
        on tape: Tape, sample: Var, timesteps: [Float], context: Var, gates: [String: Var] = [:], skip: Set<String> = [],
        tapFeatures: Bool = false, checkpointing: Bool = true
    ) -> (sample: Var, features: [(name: String, value: Var)]) {
        let n = sample.shape[0]
        precondition(timesteps.count == n && context.shape[0] == n, "UNet.forward: batch sizes differ")
        var features: [(name: String, value: Var)] = []
        func gate(_ unit: String) -> UnitGate {
            if skip.contains(unit) { return .skip }
            precondition(!absentUnits.contains(unit), "UNet.forward: unit \(unit) has no parameters here and must be skipped")
            if let m = gates[unit] { return .blend(m) }
            return .on
        }
        func segment(_ inputs: [Var], _ body: @escaping (Tape, [Var]) -> Var) -> Var {
            checkpointing ? tape.checkpoint(inputs, body) : body(tape, inputs)
        }
        func resnet(_ r: ResnetBlock?, _ name: String, main: Var, extra: Var?, tembSiLU: Var) -> Var {
            let g = gate(name)
            if case .skip = g { return main }
            guard let r else { preconditionFailure("UNet.forward: resnet \(name) has no parameters") }
            let input = extra.map { tape.concatChannels(main, $0) } ?? main
            let y = segment([input, tembSiLU]) { t, v in r(v[0], tembSiLU: v[1], on: t) }
            if case .blend(let m) = g { return tape.blend(main, y, mix: m) }
            return y
        }
        func transformer(_ t2d: Transformer2D, _ x: Var) -> Var {
            switch gate(t2d.blockName) {
            case .blend(let m):
                return segment([x, context, m]) { t, v in t2d(v[0], context: v[1], gate: .blend(v[2]), on: t) }
            case let g:
                return segment([x, context]) { t, v in t2d(v[0], context: v[1], gate: g, on: t) }
            }
        }

        var x0 = sample
        if config.centerInputSample { x0 = tape.addScalar(tape.scale(sample, 2), -1) }
        let tEmb = TimestepEmbedding.sinusoidal(timesteps, dim: config.blockOutChannels[0], flipSinToCos: config.flipSinToCos,
                                                freqShift: Float(config.freqShift))
        let temb = timeLinear2(tape.silu(timeLinear1(tape.constant(tEmb), on: tape)), on: tape)
        let tembSiLU = tape.silu(temb)

        var h = convIn(x0, on: tape)
        var stack: [Var] = [h]
        for (i, block) in down.enumerated() {
            for j in block.resnets.indices {
                h = resnet(block.resnets[j], "down_blocks.\(i).resnets.\(j)", main: h, extra: nil, tembSiLU: tembSiLU)
                if !block.attentions.isEmpty { h = transformer(block.attentions[j], h) }
                stack.append(h)
            }
            if let ds = block.downsampler {
                h = ds(h, on: tape)
                stack.append(h)
            }
            if tapFeatures { features.append(("down_blocks.\(i)", h)) }
        }
        h = resnet(midResnet0, "mid_block.resnets.0", main: h, extra: nil, tembSiLU: tembSiLU)
        h = transformer(midAttention, h)
        h = resnet(midResnet1, "mid_block.resnets.1", main: h, extra: nil, tembSiLU: tembSiLU)
        if tapFeatures { features.append(("mid_block", h)) }
        for (i, block) in up.enumerated() {
            for j in block.resnets.indices {
                // The skip is popped either way; a skipped unit never concatenates it.
                let skipConnection = stack.removeLast()
                h = resnet(block.resnets[j], "up_blocks.\(i).resnets.\(j)", main: h, extra: skipConnection, tembSiLU: tembSiLU)
                if !block.attentions.isEmpty { h = transformer(block.attentions[j], h) }
            }
            if let us = block.upsampler { h = us(tape.upsample2x(h), on: tape) }
            if tapFeatures { features.append(("up_blocks.\(i)", h)) }
        }
        let out = convOut(normOut(h, on: tape, silu: true), on: tape)
        return (out, features)
    }

    /// Every parameter, in module order, named as in diffusers.
    public var parameters: [Parameter] {
        var ps = convIn.parameters + timeLinear1.parameters + timeLinear2.parameters
        for b in down {
            for j in b.resnets.indices {
                ps += b.resnets[j]?.parameters ?? []
                if !b.attentions.isEmpty { ps += b.attentions[j].parameters }
            }
            ps += b.downsampler?.parameters ?? []
        }
        ps += (midResnet0?.parameters ?? []) + midAttention.parameters + (midResnet1?.parameters ?? [])
        for b in up {
            for j in b.resnets.indices {
                ps += b.resnets[j]?.parameters ?? []
                if !b.attentions.isEmpty { ps += b.attentions[j].parameters }
            }
            ps += b.upsampler?.parameters ?? []
        }
        return ps + normOut.parameters + convOut.parameters
    }
}
