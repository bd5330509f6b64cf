import ExampleSupport
import Foundation
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// `convert --pipeline` (`PipelineCheckpoint.convert`) on Tests/Fixtures/pipeline-convert
/// (scripts/make_pipeline_convert_fixtures.py): original -> pipeline -> original is bit-exact for
/// every tensor that survives, the dropped and added tensors are exactly the documented ones, and
/// the models alter writes load in alter with outputs equal to the source's.
final class PipelineConvertTests: XCTestCase {
    static var original: String { Fixtures.path("pipeline-convert/original.safetensors") }
    static var pipeline: String { Fixtures.path("pipeline-convert/pipeline") }
    static var tokenizer: String { Fixtures.path("tokenizer/sd21-tokenizer") }

    /// Load options for the tiny original file, whose numbers inference cannot guess.
    static func originalOptions() -> PipelineLoadOptions {
        var o = PipelineLoadOptions()
        o.unet.configPath = Fixtures.path("pipeline-convert/configs/unet/config.json")
        o.textEncoder.configPath = Fixtures.path("pipeline-convert/configs/text_encoder/config.json")
        o.vae.configPath = Fixtures.path("pipeline-convert/configs/vae/config.json")
        return o
    }

    static func toPipeline(_ dtype: DType? = nil) -> PipelineConversionOptions {
        var o = PipelineConversionOptions()
        o.tokenizer = tokenizer
        o.predictionType = .vPrediction
        o.dtype = dtype
        return o
    }

    func testOriginalPipelineOriginalIsBitExact() throws {
        let tmp = try TemporaryDirectory()
        let source = try PipelineCheckpoint(path: Self.original, options: Self.originalOptions())
        XCTAssertEqual(source.layout, .original)
        let folder = tmp.path("pipeline")
        let s1 = try source.convert(to: folder, options: Self.toPipeline())
        XCTAssertEqual(s1.layout, .diffusers)
        XCTAssertEqual(s1.components.map(\.component), ["unet", "vae", "text_encoder"])
        XCTAssertEqual(s1.tokenizer, Self.tokenizer)
        XCTAssertEqual(s1.predictionType, "v_prediction")
        XCTAssertTrue(s1.unusedTensors.isEmpty)
        let droppedOut = Set(s1.dropped.flatMap(\.tensors))
        XCTAssertEqual(droppedOut, Set([
            "alphas_cumprod", "betas", "cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection",
            "model_ema.decay", "model_ema.num_updates", "model_ema.diffusion_modeltime_embed0weight",
        ]).union((try SafeTensorsFile(path: Self.original)).names.filter { $0.hasPrefix("cond_stage_model.model.transformer.resblocks.2.") }))
        for f in ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
                  "unet/config.json", "vae/config.json", "text_encoder/config.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/" + f), f)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: folder + "/tokenizer/vocab.json")),
                       try Data(contentsOf: URL(fileURLWithPath: Self.tokenizer + "/vocab.json")))
        let scheduler = try SchedulerConfig(contentsOfFile: folder + "/scheduler/scheduler_config.json")
        XCTAssertEqual(scheduler.predictionType, .vPrediction)
        XCTAssertEqual(scheduler.className, "DDIMScheduler")

        // The folder alter wrote holds the same bytes as the fixture pipeline diffusers saved.
        for (sub, weights) in [("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")] {
            let a = try SafeTensorsFile(path: "\(Self.pipeline)/\(sub)/\(weights).safetensors")
            let b = try SafeTensorsFile(path: "\(folder)/\(sub)/\(weights).safetensors")
            XCTAssertEqual(Set(a.names), Set(b.names), sub)
            for info in a.tensors {
                let other = try b.require(info.name)
                XCTAssertEqual(other.shape, info.shape, info.name)
                XCTAssertTrue(rawBytes(a, info) == rawBytes(b, other), "\(sub): \(info.name) differs from diffusers' own file")
            }
        }

        let middle = try PipelineCheckpoint(path: folder)
        XCTAssertEqual(middle.layout, .diffusers)
        XCTAssertEqual(middle.scheduler?.predictionType, .vPrediction)
        let back = tmp.path("back.safetensors")
        let s2 = try middle.convert(to: back, options: PipelineConversionOptions())
        XCTAssertEqual(s2.layout, .original)
        XCTAssertEqual(s2.predictionType, "v_prediction")

        let a = try SafeTensorsFile(path: Self.original), b = try SafeTensorsFile(path: back)
        let placeholder = Set(b.names.filter { $0.hasPrefix("cond_stage_model.model.transformer.resblocks.2.") })
        XCTAssertEqual(placeholder.count, 12)
        XCTAssertEqual(Set(s2.added.flatMap(\.tensors)), placeholder)
        XCTAssertEqual(Set(b.names).subtracting(a.names), [], "no tensor the source lacks")
        XCTAssertEqual(Set(a.names).subtracting(b.names), droppedOut.subtracting(placeholder))
        var exact = 0
        for info in b.tensors {
            if placeholder.contains(info.name) {
                XCTAssertTrue(rawBytes(b, info).allSatisfy { $0 == 0 }, "\(info.name) is not all zeros")
                continue
            }
            let src = try a.require(info.name)
            XCTAssertEqual(info.dtype, src.dtype, info.name)
            XCTAssertEqual(info.shape, src.shape, info.name)
            XCTAssertTrue(rawBytes(a, src) == rawBytes(b, info), "\(info.name) differs after original -> pipeline -> original")
            exact += 1
        }
        XCTAssertEqual(exact, 836)
    }

    func testWrittenModelsGiveTheSourceOutputs() throws {
        let tmp = try TemporaryDirectory()
        let folder = tmp.path("pipeline")
        _ = try PipelineCheckpoint(path: Self.original, options: Self.originalOptions()).convert(to: folder, options: Self.toPipeline(.f32))
        let back = tmp.path("back.safetensors")
        _ = try PipelineCheckpoint(path: folder).convert(to: back, options: PipelineConversionOptions())
        let source = try PipelineCheckpoint(path: Self.pipeline)
        let written = try PipelineCheckpoint(path: folder)
        // The original file alter wrote, read with inferred text encoder depth: 3 resblocks -> 2 layers.
        var o = Self.originalOptions()
        o.textEncoder.configPath = nil
        o.textEncoder.heads = 2
        let roundTrip = try PipelineCheckpoint(path: back, options: o)
        XCTAssertEqual(roundTrip.textEncoder.config, source.textEncoder.config)

        var g = SeededGenerator(seed: 11)
        let ids = [(0..<77).map { _ in Int(g.next() % 512) }, [0, 5, 7, 2] + Array(repeating: 1, count: 73)]
        let sample = Tensor(shape: [2, 4, 8, 8], values: g.normalsCopy(2 * 4 * 8 * 8))
        let context = Tensor(shape: [2, 5, 16], values: g.normalsCopy(2 * 5 * 16))
        let latent = Tensor(shape: [1, 4, 8, 8], values: g.normalsCopy(4 * 8 * 8))
        let image = Tensor(shape: [1, 3, 16, 16], values: g.normalsCopy(3 * 16 * 16))
        let expectedText = try source.textEncoder.encoder().encode(ids)
        let expectedUNet = try UNet(config: source.unet.config, parameters: source.unet).forward(sample: sample, timesteps: [10, 900], context: context).sample
        let sourceVAE = try source.vae.autoencoder()
        let expectedDecode = try sourceVAE.decode(latent), expectedMean = try sourceVAE.encode(image).mean
        for (label, p) in [("pipeline alter wrote", written), ("original file alter wrote", roundTrip)] {
            XCTAssertEqual(try p.textEncoder.encoder().encode(ids).scalars, expectedText.scalars, "\(label): text encoder")
            let unet = try UNet(config: p.unet.config, parameters: p.unet)
            XCTAssertEqual(unet.forward(sample: sample, timesteps: [10, 900], context: context).sample.scalars, expectedUNet.scalars, "\(label): UNet")
            let vae = try p.vae.autoencoder()
            XCTAssertEqual(try vae.decode(latent).scalars, expectedDecode.scalars, "\(label): VAE decoder")
            XCTAssertEqual(try vae.encode(image).mean.scalars, expectedMean.scalars, "\(label): VAE encoder")
        }
    }

    func testDTypeAndJSONKeys() throws {
        let tmp = try TemporaryDirectory()
        let source = try PipelineCheckpoint(path: Self.original, options: Self.originalOptions())
        let summary = try source.convert(to: tmp.path("bf16"), options: Self.toPipeline(.bf16))
        XCTAssertEqual(summary.dtype, "BF16")
        for p in summary.components {
            let f = try SafeTensorsFile(path: p.weightsPath)
            XCTAssertTrue(f.tensors.allSatisfy { $0.dtype == .bf16 }, p.component)
            XCTAssertEqual(f.tensors.count, p.tensors, p.component)
        }
        XCTAssertEqual(summary.tensors, 844)
        var listed = summary
        // `added` is empty in this direction (pipeline -> original fills it): set so the list holds its keys.
        listed.added = [.init(reason: "listed", tensors: ["listed"])]
        try GoldenKeys.check(listed, name: "convert-pipeline")
    }

    func testRequestErrors() throws {
        let tmp = try TemporaryDirectory()
        let source = try PipelineCheckpoint(path: Self.original, options: Self.originalOptions())
        func message(_ options: PipelineConversionOptions, _ out: String) -> String {
            do {
                _ = try source.convert(to: out, options: options)
                XCTFail("expected an error")
            } catch { return error.description }
            return ""
        }
        var o = Self.toPipeline()
        o.tokenizer = nil
        XCTAssertTrue(message(o, tmp.path("a")).contains("needs a tokenizer"))
        o.tokenizer = Fixtures.path("tokenizer/bpe_simple_vocab_16e6.txt.gz")
        XCTAssertTrue(message(o, tmp.path("b")).contains("vocab.json"))
        o = Self.toPipeline()
        o.predictionType = nil
        XCTAssertTrue(message(o, tmp.path("c")).contains("prediction type"))
        XCTAssertEqual(try tmp.contents(), [], "nothing written on a refused request")
        // Without a tokenizer, when asked for: model_index.json lists none.
        o = Self.toPipeline()
        o.tokenizer = nil
        o.withoutTokenizer = true
        let s = try source.convert(to: tmp.path("d"), options: o)
        XCTAssertNil(s.tokenizer)
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tmp.path("d/model_index.json")))) as? [String: Any]
        XCTAssertEqual((index?["tokenizer"] as? [Any])?.count, 2)
        XCTAssertTrue((index?["tokenizer"] as? [Any])?.first is NSNull)
        // An existing output is replaced only with overwrite.
        XCTAssertTrue(message(Self.toPipeline(), tmp.path("d")).contains("exists"))
        var force = Self.toPipeline()
        force.overwrite = true
        XCTAssertEqual(try source.convert(to: tmp.path("d"), options: force).tokenizer, Self.tokenizer)

        // A UNet folder is no pipeline.
        XCTAssertThrowsError(try PipelineCheckpoint(path: Fixtures.sd2Diffusers)) { e in
            guard case PipelineError.notAPipeline? = e as? PipelineError else { return XCTFail("\(e)") }
        }
    }

    /// At SD2.1's size the placeholder is `resblocks.23`, exactly the resblock diffusers' single-file
    /// loader skips by name (`SD_2_TEXT_ENCODER_KEYS_TO_IGNORE`, without `text_projection`).
    func testSD21PlaceholderIsTheResblockDiffusersSkips() {
        let names = CLIPTextKeyMap.placeholderLayer(after: .sd21).map(\.stored)
        let p = "cond_stage_model.model.transformer.resblocks.23."
        XCTAssertEqual(Set(names), Set(["attn.in_proj_bias", "attn.in_proj_weight", "attn.out_proj.bias", "attn.out_proj.weight",
                                         "ln_1.bias", "ln_1.weight", "ln_2.bias", "ln_2.weight", "mlp.c_fc.bias", "mlp.c_fc.weight",
                                         "mlp.c_proj.bias", "mlp.c_proj.weight"].map { p + $0 }))
        let shapes = Dictionary(uniqueKeysWithValues: CLIPTextKeyMap.placeholderLayer(after: .sd21).map { ($0.stored, $0.storedShape) })
        XCTAssertEqual(shapes[p + "attn.in_proj_weight"], [3072, 1024])
        XCTAssertEqual(shapes[p + "mlp.c_fc.weight"], [4096, 1024])
    }

    func testUnlistedTensorIsAnError() throws {
        let tmp = try TemporaryDirectory()
        let a = try SafeTensorsFile(path: Self.original)
        let path = tmp.path("extra.safetensors")
        let extra = TensorSpec(name: "loss.discriminator.main.0.weight", dtype: .f32, shape: [2])
        let writer = try SafeTensorsWriter(path: path, tensors: a.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) } + [extra])
        for spec in writer.order {
            if spec.name == extra.name { try writer.write(spec.name, floats: [1, 2]) } else { try writer.write(spec.name, bytes: a.rawBytes(try a.require(spec.name))) }
        }
        try writer.finish()
        XCTAssertThrowsError(try PipelineCheckpoint(path: path, options: Self.originalOptions())) { e in
            XCTAssertTrue("\(e)".contains("loss.discriminator.main.0.weight"), "\(e)")
        }
        var o = Self.originalOptions()
        o.unet.allowUnused = true
        XCTAssertEqual(try PipelineCheckpoint(path: path, options: o).unused, ["loss.discriminator.main.0.weight"])
    }
}
