import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// Inferring the UNet config from tensor names and shapes, the SD2.1 parameter list and the
/// original-layout key table on the full-size SD2.1 config.
final class ConfigInferenceTests: XCTestCase {
    func assertSameStructure(_ a: UNetConfig, _ b: UNetConfig, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.blockOutChannels, b.blockOutChannels, "\(label): block_out_channels", file: file, line: line)
        XCTAssertEqual(a.layersPerBlock, b.layersPerBlock, "\(label): layers_per_block", file: file, line: line)
        XCTAssertEqual(a.downBlocks, b.downBlocks, "\(label): down_block_types", file: file, line: line)
        XCTAssertEqual(a.upBlocks, b.upBlocks, "\(label): up_block_types", file: file, line: line)
        XCTAssertEqual(a.crossAttentionDim, b.crossAttentionDim, "\(label): cross_attention_dim", file: file, line: line)
        XCTAssertEqual(a.useLinearProjection, b.useLinearProjection, "\(label): use_linear_projection", file: file, line: line)
        XCTAssertEqual(a.inChannels, b.inChannels, "\(label): in_channels", file: file, line: line)
        XCTAssertEqual(a.outChannels, b.outChannels, "\(label): out_channels", file: file, line: line)
        XCTAssertEqual(a.parameters(), b.parameters(), "\(label): parameter list", file: file, line: line)
    }

    func testInferTinySD2FromOriginal() throws {
        let expected = try Fixtures.sd2ConfigValue()
        let store = try TensorStore(paths: [Fixtures.sd2Original])
        let (config, notes) = try UNetConfig.infer(from: store, layout: .original, file: Fixtures.sd2Original)
        assertSameStructure(config, expected, "tiny-sd2 original")
        XCTAssertTrue(config.useLinearProjection)
        XCTAssertEqual(config.blockOutChannels, [4, 8, 8, 8])
        XCTAssertEqual(config.crossAttentionDim, 16)
        // What the weights cannot tell is listed.
        for topic in ["attention heads", "norm_num_groups", "sample_size", "upcast_attention"] {
            XCTAssertTrue(notes.contains { $0.hasPrefix(topic) }, "no assumption about \(topic) in \(notes)")
        }
        // Channels are not multiples of 64: heads are unknown, and say so.
        XCTAssertEqual(config.attentionHeads, [0, 0, 0, 0])
        XCTAssertTrue(notes.contains { $0.contains("unknown") && $0.contains("config_path") }, "\(notes)")
        XCTAssertNoThrow(try config.validateStructure(source: "inferred"))
        XCTAssertThrowsError(try config.validate(source: "inferred"))

        // Through UNetCheckpoint: same config, assumptions carried, overrides drop theirs.
        let ckpt = try UNetCheckpoint(path: Fixtures.sd2Original)
        XCTAssertEqual(ckpt.config, config)
        XCTAssertEqual(ckpt.assumptions, notes)
        var o = LoadOptions()
        o.upcastAttention = true
        o.sampleSize = 8
        let overridden = try UNetCheckpoint(path: Fixtures.sd2Original, options: o)
        XCTAssertTrue(overridden.config.upcastAttention)
        XCTAssertEqual(overridden.config.sampleSize, 8)
        XCTAssertFalse(overridden.assumptions.contains { $0.hasPrefix("upcast_attention") || $0.hasPrefix("sample_size") })
    }

    func testInferTinySD2FromDiffusersWeightsFile() throws {
        let expected = try Fixtures.sd2ConfigValue()
        let store = try TensorStore(paths: [Fixtures.sd2DiffusersWeights])
        let (config, _) = try UNetConfig.infer(from: store, layout: .diffusers, file: Fixtures.sd2DiffusersWeights)
        assertSameStructure(config, expected, "tiny-sd2 diffusers weights")
    }

    func testInferTinySD1ConvProjections() throws {
        let expected = try Fixtures.sd1ConfigValue()
        for (path, layout) in [(Fixtures.sd1Original, CheckpointLayout.original), (Fixtures.sd1Diffusers, .diffusers)] {
            let store = try TensorStore(paths: [path])
            let (config, notes) = try UNetConfig.infer(from: store, layout: layout, file: path)
            assertSameStructure(config, expected, "tiny-sd1 \(layout)")
            XCTAssertFalse(config.useLinearProjection, "\(layout): tiny-sd1 has 1x1 conv projections")
            XCTAssertEqual(config.crossAttentionDim, 12)
            XCTAssertTrue(notes.contains { $0.hasPrefix("attention heads") }, "\(notes)")
        }
    }

    /// A linear-projection model whose channels are multiples of 64 gets SD2.x heads (head size 64).
    func testInferHeadsForSD2Channels() throws {
        var c = UNetConfig()
        c.blockOutChannels = [64, 64, 128, 128]
        c.attentionHeads = [1, 1, 2, 2]
        c.crossAttentionDim = 32
        c.layersPerBlock = 1
        let tmp = try TemporaryDirectory()
        let path = tmp.path("sd2-shaped.safetensors")
        let entries = UNetKeyMap(config: c, layout: .original).entries
        let w = try SafeTensorsWriter(path: path, tensors: entries.map { TensorSpec(name: $0.stored, dtype: .bf16, shape: $0.shape) })
        while let spec = w.nextSpec {
            let zeros = [UInt8](repeating: 0, count: spec.byteCount)
            try zeros.withUnsafeBytes { try w.write(spec.name, bytes: $0) }
        }
        try w.finish()
        let (inferred, notes) = try UNetConfig.infer(from: try TensorStore(paths: [path]), layout: .original, file: path)
        assertSameStructure(inferred, c, "synthetic SD2-shaped")
        XCTAssertEqual(inferred.layersPerBlock, 1)
        XCTAssertEqual(inferred.attentionHeads, [1, 1, 2, 2])
        XCTAssertTrue(notes.contains { $0.contains("head size 64") }, "\(notes)")
        XCTAssertEqual(inferred.normNumGroups, 32)
        XCTAssertNoThrow(try inferred.validate(source: path))
    }

    /// Other shapes of the family (1 to 4 levels, 1 to 3 layers, attention anywhere, conv or
    /// linear projections): the key table is injective in both layouts and inference from the
    /// written names and shapes recovers the structure, in both layouts.
    func testInferenceRecoversSyntheticStructures() throws {
        let tmp = try TemporaryDirectory()
        let shapes: [(channels: [Int], layers: Int, attention: [Bool], linear: Bool)] = [
            ([2], 1, [true], true),
            ([2, 4], 3, [false, true], false),
            ([2, 2, 4], 2, [true, true, true], true),
            ([4, 2, 2, 6], 1, [false, false, true, false], false),
            ([2, 4, 4, 4], 2, [true, true, true, false], true),
        ]
        for (n, s) in shapes.enumerated() {
            var c = UNetConfig()
            c.blockOutChannels = s.channels
            c.layersPerBlock = s.layers
            c.downBlocks = s.attention.map { $0 ? .crossAttention : .plain }
            c.upBlocks = s.attention.reversed().map { $0 ? .crossAttention : .plain }
            c.attentionHeads = s.channels.map { _ in 1 }
            c.useLinearProjection = s.linear
            c.crossAttentionDim = 6
            c.inChannels = 3
            c.outChannels = 5
            let label = "\(s)"
            XCTAssertNoThrow(try c.validateStructure(source: label))
            for layout in CheckpointLayout.allCases {
                let entries = UNetKeyMap(config: c, layout: layout).entries
                XCTAssertEqual(Set(entries.map(\.stored)).count, entries.count, "\(label) \(layout): stored names collide")
                if layout == .original {
                    let ema = UNetKeyMap(config: c, layout: .original, ema: true).entries
                    XCTAssertEqual(Set(ema.map(\.stored)).count, ema.count, "\(label): EMA names collide")
                }
                let path = tmp.path("synthetic-\(n)-\(layout).safetensors")
                let w = try SafeTensorsWriter(path: path, tensors: entries.map { TensorSpec(name: $0.stored, dtype: .f16, shape: $0.shape) })
                while let spec = w.nextSpec {
                    try w.write(spec.name, floats: [Float](repeating: 0.5, count: spec.elementCount))
                }
                try w.finish()
                let store = try TensorStore(paths: [path])
                let (inferred, _) = try UNetConfig.infer(from: store, layout: layout, file: path)
                assertSameStructure(inferred, c, "\(label) \(layout)")
                XCTAssertEqual(try CheckpointSource.locate(path).layout, layout, label)
            }
        }
    }

    func testSD21ParameterCount() {
        let params = UNetConfig.sd21.parameters()
        XCTAssertEqual(params.count, 686)
        XCTAssertEqual(UNetConfig.sd21.parameterCount, 865_910_724)
        XCTAssertEqual(Set(params.map(\.name)).count, params.count, "parameter names are unique")
        XCTAssertNoThrow(try UNetConfig.sd21.validate(source: "sd21"))
        XCTAssertEqual(UNetConfig.sd21.attentionHeads, [5, 10, 20, 20])
        XCTAssertEqual(params.first?.name, "conv_in.weight")
        XCTAssertEqual(params.last?.name, "conv_out.bias")
    }

    func testSD21OriginalKeyNames() throws {
        let map = UNetKeyMap(config: .sd21, layout: .original)
        let byCanonical = Dictionary(uniqueKeysWithValues: map.entries.map { ($0.canonical, $0) })
        let known: [(String, String)] = [
            ("down_blocks.0.downsamplers.0.conv.weight", "model.diffusion_model.input_blocks.3.0.op.weight"),
            ("up_blocks.0.upsamplers.0.conv.weight", "model.diffusion_model.output_blocks.2.1.conv.weight"),
            ("up_blocks.1.upsamplers.0.conv.weight", "model.diffusion_model.output_blocks.5.2.conv.weight"),
            ("mid_block.resnets.1.conv2.weight", "model.diffusion_model.middle_block.2.out_layers.3.weight"),
            ("mid_block.attentions.0.proj_in.weight", "model.diffusion_model.middle_block.1.proj_in.weight"),
            ("down_blocks.1.resnets.0.conv_shortcut.weight", "model.diffusion_model.input_blocks.4.0.skip_connection.weight"),
            ("time_embedding.linear_2.bias", "model.diffusion_model.time_embed.2.bias"),
            ("up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight",
             "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.weight"),
            ("conv_in.weight", "model.diffusion_model.input_blocks.0.0.weight"),
            ("conv_norm_out.bias", "model.diffusion_model.out.0.bias"),
            ("conv_out.weight", "model.diffusion_model.out.2.weight"),
            ("mid_block.resnets.0.norm1.weight", "model.diffusion_model.middle_block.0.in_layers.0.weight"),
            ("down_blocks.2.downsamplers.0.conv.bias", "model.diffusion_model.input_blocks.9.0.op.bias"),
            ("up_blocks.2.upsamplers.0.conv.bias", "model.diffusion_model.output_blocks.8.2.conv.bias"),
            ("down_blocks.3.resnets.1.time_emb_proj.weight", "model.diffusion_model.input_blocks.11.0.emb_layers.1.weight"),
        ]
        for (canonical, stored) in known {
            XCTAssertEqual(byCanonical[canonical]?.stored, stored, canonical)
        }
        XCTAssertEqual(byCanonical["mid_block.resnets.1.conv2.weight"]?.shape, [1280, 1280, 3, 3])
        XCTAssertEqual(Set(map.entries.map(\.stored)).count, 686, "original-layout names are unique")
        XCTAssertTrue(map.entries.allSatisfy { $0.stored.hasPrefix("model.diffusion_model.") })

        let ema = UNetKeyMap(config: .sd21, layout: .original, ema: true)
        XCTAssertEqual(ema.entries.first { $0.canonical == "conv_in.weight" }?.stored, "model_ema.diffusion_modelinput_blocks00weight")
        XCTAssertEqual(Set(ema.entries.map(\.stored)).count, 686, "EMA names are unique")
        XCTAssertEqual(
            ema.entries.first { $0.canonical == "up_blocks.1.upsamplers.0.conv.weight" }?.stored,
            "model_ema.diffusion_modeloutput_blocks52convweight")

        let diffusers = UNetKeyMap(config: .sd21, layout: .diffusers)
        XCTAssertTrue(diffusers.entries.allSatisfy { $0.stored == $0.canonical })
    }
}
