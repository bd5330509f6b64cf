import NN
import TensorCore
import XCTest

/// Random parameters that record the names asked for.
final class RecordingParameters: ParameterSource {
    let inner = RandomParameters(seed: 7)
    private(set) var names: [String] = []

    func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        names.append(name)
        return try inner.tensor(name, shape: shape)
    }
}

func randomTensor(_ shape: [Int], seed: UInt64) -> Tensor {
    try! RandomParameters(seed: seed).tensor("input", shape: shape)
}

/// The shared layers ask for diffusers' parameter names, build the optional parts only when asked,
/// and compute what their parts compute.
final class LayerTests: XCTestCase {
    func testResnetBlockNames() throws {
        let s = RecordingParameters()
        let withTemb = try ResnetBlock(s, "r", in: 8, out: 16, temb: 12, groups: 4, eps: 1e-5)
        XCTAssertEqual(s.names, ["r.norm1.weight", "r.norm1.bias", "r.conv1.weight", "r.conv1.bias", "r.time_emb_proj.weight",
                                 "r.time_emb_proj.bias", "r.norm2.weight", "r.norm2.bias", "r.conv2.weight", "r.conv2.bias",
                                 "r.conv_shortcut.weight", "r.conv_shortcut.bias"])
        XCTAssertEqual(withTemb.parameters.map(\.name), s.names)
        let t = RecordingParameters()
        let plain = try ResnetBlock(t, "v", in: 8, out: 8, temb: nil, groups: 4, eps: 1e-6)
        XCTAssertNil(plain.timeEmbProj)
        XCTAssertNil(plain.shortcut)
        XCTAssertEqual(t.names, ["v.norm1.weight", "v.norm1.bias", "v.conv1.weight", "v.conv1.bias", "v.norm2.weight", "v.norm2.bias",
                                 "v.conv2.weight", "v.conv2.bias"])
        XCTAssertEqual(plain.parameters.map(\.name), t.names)
    }

    /// Without a time embedding the block computes what a block with one computes when the
    /// projection adds zeros (h + 0 = h exactly), including the output scale.
    func testResnetBlockWithoutTimeEmbedding() throws {
        let s = RandomParameters(seed: 3)
        let plain = try ResnetBlock(s, "r", in: 4, out: 8, temb: nil, groups: 2, eps: 1e-6, outputScale: 2)
        var zeroed = ParameterDictionary()
        for p in plain.parameters { zeroed.tensors[p.name] = p.value }
        zeroed.tensors["r.time_emb_proj.weight"] = Tensor(zeros: [8, 6])
        zeroed.tensors["r.time_emb_proj.bias"] = Tensor(zeros: [8])
        let timed = try ResnetBlock(zeroed, "r", in: 4, out: 8, temb: 6, groups: 2, eps: 1e-6, outputScale: 2)
        let tape = Tape(recording: false)
        let x = tape.constant(randomTensor([2, 4, 5, 6], seed: 11))
        let y = plain(x, on: tape)
        XCTAssertEqual(y.shape, [2, 8, 5, 6])
        XCTAssertEqual(y.value.scalars, timed(x, tembSiLU: tape.constant(randomTensor([2, 6], seed: 12)), on: tape).value.scalars)
    }

    func testAttentionLayerNamesAndBiases() throws {
        let s = RecordingParameters()
        let unet = try AttentionLayer(s, "a", dim: 8, contextDim: 6, heads: 2)
        XCTAssertEqual(s.names, ["a.to_q.weight", "a.to_k.weight", "a.to_v.weight", "a.to_out.0.weight", "a.to_out.0.bias"])
        XCTAssertEqual(unet.toK.inFeatures, 6)
        let t = RecordingParameters()
        let clip = try AttentionLayer(t, "self_attn", dim: 8, heads: 2, qkvBias: true, names: .clip)
        XCTAssertEqual(t.names, ["self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
                                 "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias"])
        XCTAssertEqual(clip.toK.inFeatures, 8)
        XCTAssertEqual(clip.parameters.map(\.name), t.names)
    }

    /// Self-attention is attention with the input as context; under a causal mask the first
    /// query sees the first token only, so its output is out(v(x_0)) (computed by other
    /// products, hence compared within float32 rounding, not bit for bit).
    func testAttentionLayerSelfAndCausal() throws {
        let layer = try AttentionLayer(RandomParameters(seed: 5), "a", dim: 8, heads: 2, qkvBias: true)
        let tape = Tape(recording: false)
        let x = tape.constant(randomTensor([2, 5, 8], seed: 21))
        XCTAssertEqual(layer(x, on: tape).value.scalars, layer(x, context: x, on: tape).value.scalars)
        let causal = layer(x, mask: .causal, on: tape).value
        let first = Tensor(shape: [2, 1, 8], values: (0..<2).flatMap { s in x.value.scalars[(s * 40)..<(s * 40 + 8)] })
        let expected = layer.toOut(layer.toV(tape.constant(first), on: tape), on: tape).value.scalars
        for s in 0..<2 {
            for e in 0..<8 {
                XCTAssertEqual(causal.data[s * 40 + e], expected[s * 8 + e], accuracy: 1e-5 * max(1, abs(expected[s * 8 + e])),
                               "sample \(s) channel \(e)")
            }
        }
        // A padding mask that keeps every key is no mask.
        let all = layer(x, mask: .keyLengths([5, 5]), on: tape).value.scalars
        let none = layer(x, on: tape).value.scalars
        for i in all.indices { XCTAssertEqual(all[i], none[i], accuracy: 1e-6 * max(1, abs(none[i]))) }
    }

    func testBasicTransformerBlockNames() throws {
        let s = RecordingParameters()
        let block = try BasicTransformerBlock(s, "t", dim: 8, contextDim: 6, heads: 2, eps: 1e-5)
        let attention = { (a: String) in ["to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias"].map { "t.\(a).\($0)" } }
        let norm = { (n: String) in ["t.\(n).weight", "t.\(n).bias"] }
        XCTAssertEqual(s.names, norm("norm1") + attention("attn1") + norm("norm2") + attention("attn2") + norm("norm3")
                       + ["t.ff.net.0.proj.weight", "t.ff.net.0.proj.bias", "t.ff.net.2.weight", "t.ff.net.2.bias"])
        XCTAssertEqual(block.parameters.map(\.name), s.names)
        XCTAssertEqual(block.attn2.toK.inFeatures, 6)
        XCTAssertEqual(block.ffIn.outFeatures, 64)
        let tape = Tape(recording: false)
        let y = block(tape.constant(randomTensor([2, 3, 8], seed: 31)), context: tape.constant(randomTensor([2, 4, 6], seed: 32)), on: tape)
        XCTAssertEqual(y.shape, [2, 3, 8])
    }
}
