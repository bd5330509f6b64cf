import NN
import TensorCore

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
