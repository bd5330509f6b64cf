import NN
import TensorCore

/// diffusers' `ResnetBlock2D` (default time-embedding norm).
struct ResnetBlock {
    let norm1: GroupNormLayer, conv1: Conv2dLayer, timeEmbProj: LinearLayer
    let norm2: GroupNormLayer, conv2: Conv2dLayer, shortcut: Conv2dLayer?
    let outputScale: Float

    init(_ s: some ParameterSource, _ p: String, in i: Int, out o: Int, temb: Int, groups: Int, eps: Float, outputScale: Float = 1) throws {
        norm1 = try GroupNormLayer(s, p + ".norm1", channels: i, groups: groups, eps: eps)
        conv1 = try Conv2dLayer(s, p + ".conv1", in: i, out: o, kernel: 3, padding: 1)
        timeEmbProj = try LinearLayer(s, p + ".time_emb_proj", in: temb, out: o)
        norm2 = try GroupNormLayer(s, p + ".norm2", channels: o, groups: groups, eps: eps)
        conv2 = try Conv2dLayer(s, p + ".conv2", in: o, out: o, kernel: 3, padding: 1)
        shortcut = i != o ? try Conv2dLayer(s, p + ".conv_shortcut", in: i, out: o, kernel: 1) : nil
        self.outputScale = outputScale
    }

    /// x: [N, Cin, H, W], tembSiLU: silu(temb) [N, T] -> [N, Cout, H, W].
    func callAsFunction(_ x: Var, tembSiLU: Var, on tape: Tape) -> Var {
        var h = conv1(norm1(x, on: tape, silu: true), on: tape)
        h = tape.addPerChannel(h, timeEmbProj(tembSiLU, on: tape))
        h = conv2(norm2(h, on: tape, silu: true), on: tape)
        let residual = shortcut.map { $0(x, on: tape) } ?? x
        let y = tape.add(residual, h)
        return outputScale == 1 ? y : tape.scale(y, 1 / outputScale)
    }

    var parameters: [Parameter] {
        norm1.parameters + conv1.parameters + timeEmbProj.parameters + norm2.parameters + conv2.parameters
            + (shortcut?.parameters ?? [])
    }
}

/// diffusers' `Attention` with separate q/k/v projections (no bias) and an output projection.
struct AttentionLayer {
    let toQ: LinearLayer, toK: LinearLayer, toV: LinearLayer, toOut: LinearLayer
    let heads: Int

    init(_ s: some ParameterSource, _ p: String, dim: Int, contextDim: Int, heads: Int) throws {
        toQ = try LinearLayer(s, p + ".to_q", in: dim, out: dim, bias: false)
        toK = try LinearLayer(s, p + ".to_k", in: contextDim, out: dim, bias: false)
        toV = try LinearLayer(s, p + ".to_v", in: contextDim, out: dim, bias: false)
        toOut = try LinearLayer(s, p + ".to_out.0", in: dim, out: dim)
        self.heads = heads
    }

    /// x: [N, S, C], context: [N, M, D] -> [N, S, C].
    func callAsFunction(_ x: Var, context: Var, on tape: Tape) -> Var {
        let a = tape.attention(q: toQ(x, on: tape), k: toK(context, on: tape), v: toV(context, on: tape), heads: heads)
        return toOut(a, on: tape)
    }

    var parameters: [Parameter] { toQ.parameters + toK.parameters + toV.parameters + toOut.parameters }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
struct BasicTransformerBlock {
    let norm1: LayerNormLayer, attn1: AttentionLayer
    let norm2: LayerNormLayer, attn2: AttentionLayer
    let norm3: LayerNormLayer, ffIn: LinearLayer, ffOut: LinearLayer

    init(_ s: some ParameterSource, _ p: String, dim: Int, contextDim: Int, heads: Int, eps: Float) throws {
        norm1 = try LayerNormLayer(s, p + ".norm1", channels: dim, eps: eps)
        attn1 = try AttentionLayer(s, p + ".attn1", dim: dim, contextDim: dim, heads: heads)
        norm2 = try LayerNormLayer(s, p + ".norm2", channels: dim, eps: eps)
        attn2 = try AttentionLayer(s, p + ".attn2", dim: dim, contextDim: contextDim, heads: heads)
        norm3 = try LayerNormLayer(s, p + ".norm3", channels: dim, eps: eps)
        ffIn = try LinearLayer(s, p + ".ff.net.0.proj", in: dim, out: 8 * dim)
        ffOut = try LinearLayer(s, p + ".ff.net.2", in: 4 * dim, out: dim)
    }

    /// x: [N, S, C], context: [N, M, D] -> [N, S, C].
    func callAsFunction(_ x: Var, context: Var, on tape: Tape) -> Var {
        let n1 = norm1(x, on: tape)
        var h = tape.add(attn1(n1, context: n1, on: tape), x)
        h = tape.add(attn2(norm2(h, on: tape), context: context, on: tape), h)
        return tape.add(ffOut(tape.geglu(ffIn(norm3(h, on: tape), on: tape)), on: tape), h)
    }

    var parameters: [Parameter] {
        norm1.parameters + attn1.parameters + norm2.parameters + attn2.parameters + norm3.parameters
            + ffIn.parameters + ffOut.parameters
    }
}

/// diffusers' `Transformer2DModel` (continuous input, one transformer block).
struct Transformer2D {
    let norm: GroupNormLayer
    let projIn: LinearLayer?, projInConv: Conv2dLayer?
    /// The unit; nil when built without its parameters (it must then be skipped).
    let block: BasicTransformerBlock?
    let projOut: LinearLayer?, projOutConv: Conv2dLayer?
    /// Unit name of the inner block.
    let blockName: String

    init(_ s: some ParameterSource, _ p: String, channels c: Int, contextDim: Int, heads: Int, groups: Int, linear: Bool, eps: Float,
         blockAbsent: Bool = false) throws {
        norm = try GroupNormLayer(s, p + ".norm", channels: c, groups: groups, eps: 1e-6)
        if linear {
            projIn = try LinearLayer(s, p + ".proj_in", in: c, out: c)
            projOut = try LinearLayer(s, p + ".proj_out", in: c, out: c)
            projInConv = nil
            projOutConv = nil
        } else {
            projInConv = try Conv2dLayer(s, p + ".proj_in", in: c, out: c, kernel: 1)
            projOutConv = try Conv2dLayer(s, p + ".proj_out", in: c, out: c, kernel: 1)
            projIn = nil
            projOut = nil
        }
        blockName = p + ".transformer_blocks.0"
        block = blockAbsent ? nil : try BasicTransformerBlock(s, blockName, dim: c, contextDim: contextDim, heads: heads, eps: eps)
    }

    /// x: [N, C, H, W] -> [N, C, H, W]. `gate` applies to the inner block (the unit).
    func callAsFunction(_ x: Var, context: Var, gate: UnitGate, on tape: Tape) -> Var {
        let (h, w) = (x.shape[2], x.shape[3])
        let normed = norm(x, on: tape)
        var tokens: Var
        if let projInConv {
            tokens = tape.channelsLast(projInConv(normed, on: tape))
        } else {
            tokens = projIn!(tape.channelsLast(normed), on: tape)
        }
        switch (gate, block) {
        case (.skip, _): break
        case (.on, let block?): tokens = block(tokens, context: context, on: tape)
        case (.blend(let m), let block?): tokens = tape.blend(tokens, block(tokens, context: context, on: tape), mix: m)
        case (_, nil): preconditionFailure("Transformer2D: \(blockName) has no parameters and must be skipped")
        }
        let out: Var
        if let projOutConv {
            out = projOutConv(tape.channelsFirst(tokens, height: h, width: w), on: tape)
        } else {
            out = tape.channelsFirst(projOut!(tokens, on: tape), height: h, width: w)
        }
        return tape.add(out, x)
    }

    var parameters: [Parameter] {
        norm.parameters + (projIn?.parameters ?? []) + (projInConv?.parameters ?? []) + (block?.parameters ?? [])
            + (projOut?.parameters ?? []) + (projOutConv?.parameters ?? [])
    }
}

/// How a unit takes part in a forward pass.
enum UnitGate {
    /// Computed normally.
    case on
    /// Not computed: output = input.
    case skip
    /// Blended per sample: (1 - m) * input + m * f(input), m: [N].
    case blend(Var)
}

/// A forward request that does not fit the model.
public enum UNetError: Error, CustomStringConvertible, Equatable {
    case notAUnit(String)
    case gateCount(unit: String, expected: Int, actual: Int)
    case gateRange(unit: String)
    case shape(String, expected: String, actual: [Int])
    case absentUnit(String)

    public var description: String {
        switch self {
        case .notAUnit(let n): return "'\(n)' is not a prunable unit of this UNet (see `alter inspect MODEL --units`)"
        case .gateCount(let u, let e, let a): return "gate '\(u)' has \(a) values for a batch of \(e)"
        case .gateRange(let u): return "gate '\(u)' has values outside [0, 1]"
        case .shape(let n, let e, let a): return "\(n) has shape \(a), expected \(e)"
        case .absentUnit(let u): return "unit '\(u)' is not stored in this model (every expert skips it) and must be skipped"
        }
    }
}
