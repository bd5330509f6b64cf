import TensorCore
import XCTest

/// Tensor storage is recycled through a buffer pool, so a kernel's uninitialised output may hold
/// a previous tensor's values. These tests fill recycled buffers with NaN first: any output
/// element a kernel fails to write (or reads before writing, e.g. a BLAS beta = 1 on garbage)
/// then shows up as NaN.
final class PoisonedPoolTests: XCTestCase {
    /// Creates and drops NaN-filled tensors of `count` elements (and a few neighbouring sizes'
    /// classes), so the next allocations of those classes get NaN-filled memory.
    func poison(_ counts: [Int]) {
        var keep: [Tensor] = []
        for c in counts {
            for _ in 0..<3 { keep.append(Tensor(repeating: .nan, shape: [c])) }
        }
        keep.removeAll()
    }

    func assertFinite(_ t: Tensor, _ label: String, line: UInt = #line) {
        if let i = t.scalars.firstIndex(where: { !$0.isFinite }) {
            XCTFail("\(label): element \(multiIndex(i, t.shape)) is \(t.scalars[i])", line: line)
        }
    }

    func testKernelsWriteEveryOutputElement() {
        var rng = SplitMix64(seed: 700)
        // Sizes of at least 16384 floats (64 KB), the pool's threshold.
        let x = rng.tensor([3, 13, 33, 17])  // 21879 floats
        let conv3 = rng.tensor([17, 13, 3, 3]), conv1 = rng.tensor([17, 13, 1, 1])
        poison([3 * 17 * 33 * 17, 3 * 17 * 17 * 9])
        let c1 = Conv2d.forward(x, weight: conv3, bias: nil, stride: 1, padding: 1)
        assertFinite(c1, "Conv2d 3x3 no bias")
        let (r1, b1, _) = convReference(x, conv3, nil, stride: 1, padding: 1)
        assertClose(c1, r1, atol: 0, rtol: 1e-5, atolPerElement: b1, "Conv2d 3x3 no bias, poisoned pool")
        poison([3 * 17 * 17 * 9])
        assertFinite(Conv2d.forward(x, weight: conv3, bias: rng.tensor([17]), stride: 2, padding: 1), "Conv2d s2 bias")
        poison([3 * 17 * 33 * 17])
        let c3 = Conv2d.forward(x, weight: conv1, bias: nil)
        assertFinite(c3, "Conv2d 1x1 no bias")
        let (r3, b3, _) = convReference(x, conv1, nil, stride: 1, padding: 0)
        assertClose(c3, r3, atol: 0, rtol: 1e-5, atolPerElement: b3, "Conv2d 1x1 no bias, poisoned pool")

        let tokens = rng.tensor([3, 561, 13])
        let w = rng.tensor([17, 13])
        poison([3 * 561 * 17])
        let l = Linear.forward(tokens, weight: w, bias: nil)
        assertFinite(l, "Linear no bias")
        let (lr, lb) = linearReference(tokens, w, nil)
        assertClose(l, lr, atol: 0, rtol: 1e-5, atolPerElement: lb, "Linear no bias, poisoned pool")
        poison([3 * 561 * 17])
        assertFinite(Linear.forward(tokens, weight: w, bias: rng.tensor([17])), "Linear bias")

        let count = x.count
        let ch = Tensor(repeating: 1, shape: [13]), zero = Tensor(zeros: [13])
        poison([count]); assertFinite(GroupNorm.forward(x, groups: 13, weight: ch, bias: zero, eps: 1e-5), "GroupNorm")
        poison([count]); assertFinite(GroupNorm.forward(x, groups: 1, weight: ch, bias: zero, eps: 1e-5, silu: true), "GroupNorm silu")
        poison([tokens.count]); assertFinite(LayerNorm.forward(tokens, weight: ch, bias: zero, eps: 1e-5), "LayerNorm")
        poison([count]); assertFinite(SiLU.forward(x), "SiLU")
        poison([count]); assertFinite(GELU.forward(x), "GELU")
        let wide = rng.tensor([3, 33, 2 * 171])
        poison([wide.count / 2]); assertFinite(GEGLU.forward(wide), "GEGLU")
        poison([count]); assertFinite(Softmax.forward(x), "Softmax")
        poison([count * 4]); assertFinite(Upsample2x.forward(x), "Upsample2x")
        let y = rng.tensor([3, 5, 33, 17])
        poison([x.count + y.count]); assertFinite(ConcatChannels.forward(x, y), "ConcatChannels")
        poison([3 * 7 * 33 * 17]); assertFinite(ConcatChannels.leading(x, channels: 7), "leading")
        poison([count]); assertFinite(Transpose.channelsLast(x), "channelsLast")
        poison([count]); assertFinite(Transpose.channelsFirst(Transpose.channelsLast(x), height: 33, width: 17), "channelsFirst")
        poison([count]); assertFinite(Elementwise.add(x, x), "add")
        poison([count]); assertFinite(Elementwise.addPerChannel(x, rng.tensor([3, 13])), "addPerChannel")
        poison([count]); assertFinite(Elementwise.blend(x, x, mix: [0, 0.5, 1]), "blend")
        poison([count]); assertFinite(Elementwise.addScalar(x, 1), "addScalar")
        poison([count]); assertFinite(Elementwise.scale(x, 2), "scale")
        poison([3 * 20001]); assertFinite(TimestepEmbedding.sinusoidal([0, 1, 999], dim: 20001, flipSinToCos: true, freqShift: 1), "timestep")

        let q = rng.tensor([3, 331, 2 * 25]), k = rng.tensor([3, 77, 2 * 25])
        poison([q.count])
        let a = Attention.forward(q: q, k: k, v: k, heads: 2)
        assertFinite(a, "Attention")
        let (ar, ab) = attentionReference(q: q, k: k, v: k, heads: 2)
        assertClose(a, ar, atol: 1e-7, rtol: 0, atolPerElement: ab, "Attention, poisoned pool")
    }
}
