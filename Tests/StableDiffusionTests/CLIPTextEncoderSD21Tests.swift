import Foundation
import NN
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// The full SD2.1 text encoder (23 layers, width 1024, 16 heads) at alter's deterministic random
/// init (`RandomParameters`, ported to numpy by scripts/make_text_encoder_fixtures.py) against
/// transformers' CLIPTextModel in float64, for one prompt tokenized by `CLIPTokenizer`.
final class CLIPTextEncoderSD21Tests: XCTestCase {
    func testFullSizeRandomInit() throws {
        let file = try SafeTensorsFile(path: Fixtures.path("text-encoder/sd21-random.safetensors"))
        let meta = try XCTUnwrap(file.metadata)
        let seed = try XCTUnwrap(UInt64(try XCTUnwrap(meta["seed"])))
        let info = try file.require("input_ids")
        let raw = file.rawBytes(info)
        let ids = (0..<info.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }

        // The stored ids are the prompt as alter's tokenizer gives it.
        let tokenizer = try CLIPTokenizer(folder: Fixtures.path("tokenizer/sd21-tokenizer"))
        XCTAssertEqual(tokenizer.tokenize(try XCTUnwrap(meta["prompt"])).inputIds, ids)

        let parameters = RandomParameters(seed: seed)
        // The numpy port draws the same values (the script stores two of them).
        let probe = try parameters.tensor("text_model.encoder.layers.0.mlp.fc1.weight", shape: [4096, 1024])
        XCTAssertEqual(meta["probe"], "[\(Double(probe.data[0])), \(Double(probe.data[1]))]")

        let encoder = try CLIPTextEncoder(config: .sd21, parameters: parameters)
        let out = try encoder.encode([ids])
        let expected = try file.require("last_hidden_state")
        let reference = Tensor(shape: expected.shape, values: try file.floats("last_hidden_state"))
        XCTAssertEqual(out.shape, [1, 77, 1024])
        assertParity(out, reference, "SD2.1 random init")
    }
}
