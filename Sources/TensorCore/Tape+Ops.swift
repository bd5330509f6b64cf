/// Differentiable operations over the TensorCore kernels. Each computes its value with the
/// kernel's `forward` and differentiates with the kernel's `backward`.
extension Tape {
    /// x: [..., in], weight: [out, in], bias: [out] -> [..., out].
    public func linear(_ x: Var, weight: Var, bias: Var?) -> Var {
        let y = Linear.forward(x.value, weight: weight.value, bias: bias?.value)
        let (xv, wv) = (x.value, weight.value)
        let needInput = x.requiresGrad, needParams = weight.requiresGrad || (bias?.requiresGrad ?? false)
        let inputs = bias.map { [x, weight, $0] } ?? [x, weight]
        return record(y, inputs: inputs) { g in
            let r = Linear.backward(xv, weight: wv, gradOutput: g, input: needInput, parameters: needParams, hasBias: bias != nil)
            return bias == nil ? [r.input, r.weight] : [r.input, r.weight, r.bias]
        }
    }

    /// x: [N, C, H, W], weight: [O, C, k, k], bias: [O] -> [N, O, Ho, Wo]. `winograd` supplies
    /// transformed weights for the forward's Winograd path (see `Conv2d.forward`).
    public func conv2d(_ x: Var, weight: Var, bias: Var?, stride: Int, padding: Int, winograd: (() -> Tensor)? = nil) -> Var {
        let y = Conv2d.forward(x.value, weight: weight.value, bias: bias?.value, stride: stride, padding: padding, winograd: winograd)
        let (xv, wv) = (x.value, weight.value)
        let needInput = x.requiresGrad, needParams = weight.requiresGrad || (bias?.requiresGrad ?? false)
        let inputs = bias.map { [x, weight, $0] } ?? [x, weight]
        return record(y, inputs: inputs) { g in
            let r = Conv2d.backward(xv, weight: wv, stride: stride, padding: padding, gradOutput: g,
                                    input: needInput, parameters: needParams, hasBias: bias != nil)
            return bias == nil ? [r.input, r.weight] : [r.input, r.weight, r.bias]
        }
    }

    /// x: [N, C, ...], weight/bias: [C]; with `silu`, SiLU follows.
    public func groupNorm(_ x: Var, weight: Var, bias: Var, groups: Int, eps: Float, silu: Bool = false) -> Var {
        let y = GroupNorm.forward(x.value, groups: groups, weight: weight.value, bias: bias.value, eps: eps, silu: silu)
        let (xv, wv, bv) = (x.value, weight.value, bias.value)
        let needParams = weight.requiresGrad || bias.requiresGrad
        return record(y, inputs: [x, weight, bias]) { g in
            let r = GroupNorm.backward(xv, groups: groups, weight: wv, bias: bv, eps: eps, silu: silu, gradOutput: g, parameters: needParams)
            return [r.input, r.weight, r.bias]
        }
    }

    /// x: [..., C], weight/bias: [C].
    public func layerNorm(_ x: Var, weight: Var, bias: Var, eps: Float) -> Var {
        let y = LayerNorm.forward(x.value, weight: weight.value, bias: bias.value, eps: eps)
        let (xv, wv, bv) = (x.value, weight.value, bias.value)
        let needParams = weight.requiresGrad || bias.requiresGrad
        return record(y, inputs: [x, weight, bias]) { g in
            let r = LayerNorm.backward(xv, weight: wv, bias: bv, eps: eps, gradOutput: g, parameters: needParams)
            return [r.input, r.weight, r.bias]
        }
    }

    public func silu(_ x: Var) -> Var {
        let xv = x.value
        return record(SiLU.forward(xv), inputs: [x]) { [SiLU.backward(xv, gradOutput: $0)] }
    }

    public func gelu(_ x: Var) -> Var {
        let xv = x.value
        return record(GELU.forward(xv), inputs: [x]) { [GELU.backward(xv, gradOutput: $0)] }
    }

    /// x: [..., 2D] -> [..., D].
    public func geglu(_ x: Var) -> Var {
        let xv = x.value
        return record(GEGLU.forward(xv), inputs: [x]) { [GEGLU.backward(xv, gradOutput: $0)] }
    }

    public func relu(_ x: Var) -> Var {
        let xv = x.value
        return record(ReLU.forward(xv), inputs: [x]) { [ReLU.backward(xv, gradOutput: $0)] }
    }

    /// Softmax over the last axis.
    public func softmax(_ x: Var) -> Var {
        let y = Softmax.forward(x.value)
        return record(y, inputs: [x]) { [Softmax.backward(output: y, gradOutput: $0)] }
    }

    /// q: [B, N, H*d], k, v: [B, M, H*d] -> [B, N, H*d]; `mask`: the keys each query attends to.
    public func attention(q: Var, k: Var, v: Var, heads: Int, mask: AttentionMask? = nil) -> Var {
        let (qv, kv, vv) = (q.value, k.value, v.value)
        let y = Attention.forward(q: qv, k: kv, v: vv, heads: heads, mask: mask)
        return record(y, inputs: [q, k, v]) { g in
            let r = Attention.backward(q: qv, k: kv, v: vv, heads: heads, mask: mask, output: y, gradOutput: g)
            return [r.q, r.k, r.v]
        }
    }

    /// a + b (same element count; the result has a's shape).
    public func add(_ a: Var, _ b: Var) -> Var {
        let y = Elementwise.add(a.value, b.value.reshaped(a.shape))
        let bs = b.shape
        return record(y, inputs: [a, b]) { g in [g, g.reshaped(bs)] }
    }

    /// x: [N, C, ...] plus b: [N, C] broadcast over the trailing axes.
    public func addPerChannel(_ x: Var, _ b: Var) -> Var {
        let y = Elementwise.addPerChannel(x.value, b.value)
        return record(y, inputs: [x, b]) { g in [g, Elementwise.sumTrailing(g)] }
    }

    /// x * s.
    public func scale(_ x: Var, _ s: Float) -> Var {
        record(Elementwise.scale(x.value, s), inputs: [x]) { [Elementwise.scale($0, s)] }
    }

    /// x + s.
    public func addScalar(_ x: Var, _ s: Float) -> Var {
        record(Elementwise.addScalar(x.value, s), inputs: [x]) { [$0] }
    }

    /// a * b element-wise (same shape).
    public func multiply(_ a: Var, _ b: Var) -> Var {
        let (av, bv) = (a.value, b.value)
        return record(Elementwise.multiply(av, bv), inputs: [a, b]) { g in
            [a.requiresGrad ? Elementwise.multiply(g, bv) : nil, b.requiresGrad ? Elementwise.multiply(g, av) : nil]
        }
    }

    /// Per-sample blend (1 - m) * a + m * b; a, b: [N, ...], mix: [N].
    public func blend(_ a: Var, _ b: Var, mix: Var) -> Var {
        let m = mix.value.scalars
        let (av, bv) = (a.value, b.value)
        let y = Elementwise.blend(av, bv, mix: m)
        let ms = mix.shape
        return record(y, inputs: [a, b, mix]) { g in
            let r = Elementwise.blendBackward(av, bv, mix: m, gradOutput: g)
            return [r.a, r.b, Tensor(shape: ms, values: r.mix)]
        }
    }

    /// [N, C, H, W] -> [N, C, 2H, 2W], nearest neighbour.
    public func upsample2x(_ x: Var) -> Var {
        record(Upsample2x.forward(x.value), inputs: [x]) { [Upsample2x.backward($0)] }
    }

    /// a: [N, C1, ...], b: [N, C2, ...] -> [N, C1+C2, ...].
    public func concatChannels(_ a: Var, _ b: Var) -> Var {
        let c1 = a.shape[1]
        return record(ConcatChannels.forward(a.value, b.value), inputs: [a, b]) { g in
            let r = ConcatChannels.backward(g, leadingChannels: c1)
            return [r.0, r.1]
        }
    }

    /// [N, C, H, W] -> [N, H*W, C].
    public func channelsLast(_ x: Var) -> Var {
        let (h, w) = (x.shape[2], x.shape[3])
        return record(Transpose.channelsLast(x.value), inputs: [x]) { [Transpose.channelsFirst($0, height: h, width: w)] }
    }

    /// [N, H*W, C] -> [N, C, H, W].
    public func channelsFirst(_ x: Var, height: Int, width: Int) -> Var {
        record(Transpose.channelsFirst(x.value, height: height, width: width), inputs: [x]) { [Transpose.channelsLast($0)] }
    }

    /// The same elements with another shape.
    public func reshape(_ x: Var, _ shape: [Int]) -> Var {
        let s = x.shape
        return record(x.value.reshaped(shape), inputs: [x]) { [$0.reshaped(s)] }
    }
}
