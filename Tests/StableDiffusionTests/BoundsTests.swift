import ExampleSupport
import Foundation
import XCTest
@testable import StableDiffusion

/// Every number from a file or an argument is checked against `Bounds` before use: edited
/// architecture fields, latent sizes and context lengths (too large, negative, zero, not a
/// multiple, overflow-sized) are errors that name the field, never a trap or a runaway allocation.
final class BoundsTests: XCTestCase {
    /// The example's config.json as an object.
    func exampleConfig() throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Example.config))) as? [String: Any])
    }

    /// Parses the example's config with `key` set to `value`; the error must name `field`.
    func assertConfigRefused(_ key: String, _ value: Any, naming field: String, line: UInt = #line) throws {
        var o = try exampleConfig()
        o[key] = value
        let data = try JSONSerialization.data(withJSONObject: o)
        XCTAssertThrowsError(try UNetConfig(diffusersJSON: data, source: "edited.json"), "\(key) = \(value)", line: line) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("edited.json"), text, line: line)
            XCTAssertTrue(text.contains(field), "\(key) = \(value): '\(text)' does not name \(field)", line: line)
        }
    }

    func testArchitectureFieldsOutOfBounds() throws {
        // The example's own config is within bounds.
        XCTAssertNoThrow(try UNetConfig(diffusersJSON: JSONSerialization.data(withJSONObject: exampleConfig()), source: "example"))
        for v in [1_000_000_000, 17, 0, -1] { try assertConfigRefused("layers_per_block", v, naming: "layers_per_block") }
        for v in [1_000_000_000_000_000, 16384, 0, -32] {
            try assertConfigRefused("block_out_channels", [v, 32, 32, 32], naming: "block_out_channels[0]")
        }
        try assertConfigRefused("block_out_channels", [Int](repeating: 32, count: 9), naming: "block_out_channels")
        for v in [1_000_000_000_000, 0, -8] { try assertConfigRefused("cross_attention_dim", v, naming: "cross_attention_dim") }
        for v in [100_000, 0, -4] { try assertConfigRefused("in_channels", v, naming: "in_channels") }
        try assertConfigRefused("out_channels", 1_000_000, naming: "out_channels")
        for v in [1_000_000_000, 0, -8] { try assertConfigRefused("norm_num_groups", v, naming: "norm_num_groups") }
        try assertConfigRefused("attention_head_dim", [2, 4, 4, 1_000_000_000], naming: "attention_head_dim[3]")
        for v in [1_000_000_000, 4097, 0, -96] { try assertConfigRefused("sample_size", v, naming: "sample_size") }
        try assertConfigRefused("freq_shift", 1_000_000, naming: "freq_shift")
        try assertConfigRefused("downsample_padding", 1_000_000, naming: "downsample_padding")
        try assertConfigRefused("norm_eps", -1, naming: "norm_eps")
    }

    func testLatentSizes() throws {
        let config = try Example.checkpoint().config  // 4 levels: sides are multiples of 8
        XCTAssertNoThrow(try LatentSize(height: 16, width: 8, contextLength: 5, config: config))
        XCTAssertNoThrow(try LatentSize(height: Bounds.latentSide.upperBound, width: 8, contextLength: Bounds.contextLength.upperBound, config: config))
        for (h, w, s, field) in [
            (1_000_000_000_000, 16, 5, "latent_height"), (-16, 16, 5, "latent_height"), (0, 16, 5, "latent_height"),
            (12, 16, 5, "latent_height"), (4104, 16, 5, "latent_height"), (16, -8, 5, "latent_width"), (16, 7, 5, "latent_width"),
            (16, Int.max, 5, "latent_width"), (16, 16, 0, "context_length"), (16, 16, -77, "context_length"),
            (16, 16, 1_000_000_000, "context_length"),
        ] {
            XCTAssertThrowsError(try LatentSize(height: h, width: w, contextLength: s, config: config), "\(h)x\(w), \(s)") { e in
                XCTAssertEqual((e as? SizeError)?.field, field, "\(h)x\(w), \(s): \(e)")
            }
            // The cost model checks the same sizes first.
            XCTAssertThrowsError(try CostModel(config: config, latentHeight: h, latentWidth: w, contextLength: s)) { e in
                XCTAssertEqual((e as? SizeError)?.field, field, "\(e)")
            }
        }
    }

    func testCostModelOverflowIsAnErrorNamingMACs() throws {
        // Within every bound, but its MACs at the largest latent do not fit in 64 bits.
        var c = UNetConfig()
        c.blockOutChannels = [8192, 8192, 8192, 8192]
        c.attentionHeads = [8, 8, 8, 8]
        c.crossAttentionDim = 8192
        c.layersPerBlock = Bounds.layersPerBlock.upperBound
        try c.validate(source: "big")
        let side = Bounds.latentSide.upperBound, tokens = Bounds.contextLength.upperBound
        XCTAssertThrowsError(try CostModel(config: c, latentHeight: side, latentWidth: side, contextLength: tokens)) { e in
            let error = e as? SizeError
            XCTAssertEqual(error?.field, "macs", "\(e)")
            XCTAssertTrue(error?.message.contains("overflow") ?? false, "\(e)")
        }
        XCTAssertNoThrow(try CostModel(config: c, latentHeight: 64, latentWidth: 64, contextLength: 77))
    }

    func testCheckedArithmetic() {
        XCTAssertEqual(try Bounds.product(3, 4, 5, field: "x"), 60)
        XCTAssertThrowsError(try Bounds.product(1 << 40, 1 << 30, field: "files[].bytes")) { XCTAssertEqual(($0 as? SizeError)?.field, "files[].bytes") }
        XCTAssertEqual(try Bounds.sum([1, 2, 3], field: "x"), 6)
        XCTAssertThrowsError(try Bounds.sum([Int.max, 1], field: "files[].bytes")) { XCTAssertEqual(($0 as? SizeError)?.field, "files[].bytes") }
        XCTAssertThrowsError(try Bounds.check(-1, in: Bounds.fileBytes, field: "files[0].bytes")) { e in
            XCTAssertEqual("\(e)", "`files[0].bytes` is -1, expected 0...\(1 << 50)")
        }
        XCTAssertEqual(SizeError(field: "latent_height", "is 7").nested(in: "macs").field, "macs.latent_height")
    }

    func testSchedulerTrainTimestepsBounds() {
        for v in [0, 1, -1000, 1_000_000_000_000] {
            let json = Data("{\"num_train_timesteps\": \(v)}".utf8)
            XCTAssertThrowsError(try SchedulerConfig(diffusersJSON: json, source: "s.json")) { e in
                XCTAssertTrue("\(e)".contains("num_train_timesteps"), "\(e)")
            }
        }
    }
}
