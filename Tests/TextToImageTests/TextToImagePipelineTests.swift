import ExpertBundle
import Experts
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import TextToImage
import XCTest

/// The prompt-to-image path against diffusers' `StableDiffusionPipeline` on a tiny random-init
/// SD2.1-structured pipeline (Tests/Fixtures/pipeline, scripts/make_pipeline_fixtures.py): the same
/// initial latents, prompts, negative prompts, scheduler, steps and guidance give the same prompt
/// embeddings (rel. L2 1e-5), final latents and image (per-pixel max difference of the [0, 1] image
/// at most 2/255), from the diffusers folder and from the original single file.
final class TextToImagePipelineTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/pipeline")
    static var folder: String { root.appendingPathComponent("sd21-tiny").path }
    static var single: String { root.appendingPathComponent("sd21-tiny-original.safetensors").path }
    /// The bar for the [0, 1] image.
    static let pixelTolerance: Float = 2.0 / 255.0

    struct Reference {
        let file: SafeTensorsFile
        let prompts: [String], negatives: [String], steps: Int, guidance: Float

        init() throws {
            file = try SafeTensorsFile(path: TextToImagePipelineTests.root.appendingPathComponent("expected.safetensors").path)
            let meta = try XCTUnwrap(file.metadata)
            prompts = try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(meta["prompts"]).utf8))
            negatives = try JSONDecoder().decode([String].self, from: Data(try XCTUnwrap(meta["negative_prompts"]).utf8))
            steps = try XCTUnwrap(Int(try XCTUnwrap(meta["steps"])))
            guidance = try XCTUnwrap(Float(try XCTUnwrap(meta["guidance"])))
        }

        func tensor(_ name: String) throws -> Tensor { Tensor(shape: try file.require(name).shape, values: try file.floats(name)) }

        func ids(_ name: String) throws -> [[Int]] {
            let info = try file.require(name)
            XCTAssertEqual(info.dtype, .i64)
            let raw = file.rawBytes(info)
            let values = (0..<(raw.count / 8)).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
            return stride(from: 0, to: values.count, by: info.shape[1]).map { Array(values[$0..<($0 + info.shape[1])]) }
        }

        func meta(_ key: String) -> String? { file.metadata?[key] }
    }

    /// Relative L2 error of `a` against `b`; fails above `bound` (prints the figure either way).
    @discardableResult
    func assertRelativeL2(_ a: Tensor, _ b: Tensor, _ what: String, _ bound: Double, line: UInt = #line) -> Double {
        XCTAssertEqual(a.shape, b.shape, what, line: line)
        guard a.shape == b.shape else { return .infinity }
        var d = 0.0, n = 0.0
        for i in 0..<a.count {
            let x = Double(a.data[i]), y = Double(b.data[i])
            d += (x - y) * (x - y)
            n += y * y
        }
        let rel = (d / max(n, 1e-30)).squareRoot()
        print(String(format: "%@: relative L2 error %.3g", what, rel))
        XCTAssertLessThanOrEqual(rel, bound, "\(what): relative L2 error \(rel)", line: line)
        return rel
    }

    /// The worst pixel of the [0, 1] images (`denormalize` of both): fails above 2/255.
    @discardableResult
    func assertImages(_ actual: Tensor, _ decoded: Tensor, _ what: String, line: UInt = #line) -> Float {
        XCTAssertEqual(actual.shape, decoded.shape, what, line: line)
        guard actual.shape == decoded.shape else { return .infinity }
        let a = TextToImagePipeline.denormalize(actual), b = TextToImagePipeline.denormalize(decoded)
        var worst: Float = -1, at = 0
        for i in 0..<a.count where !(abs(a.data[i] - b.data[i]) <= worst) {
            (worst, at) = (abs(a.data[i] - b.data[i]), i)
        }
        let message = String(format: "%@: worst pixel difference %.3g (%.4f of 1/255) at element %d: %.6f vs diffusers %.6f",
                             what, worst, worst * 255, at, a.data[at], b.data[at])
        print(message)
        XCTAssertLessThanOrEqual(worst, Self.pixelTolerance, message, line: line)
        return worst
    }

    func testPromptEmbeddingsMatchEncodePrompt() throws {
        let ref = try Reference()
        let pipeline = try TextToImagePipeline(pipeline: Self.folder)
        XCTAssertEqual(pipeline.sampler.schedulerConfig.predictionType, .vPrediction)
        XCTAssertTrue(pipeline.notes.isEmpty, "\(pipeline.notes)")
        let e = try pipeline.encodePrompts(ref.prompts, negativePrompts: ref.negatives, guidance: ref.guidance)
        XCTAssertEqual(e.prompts.map(\.inputIds), try ref.ids("input_ids.prompt"))
        XCTAssertEqual(e.negativePrompts.map(\.inputIds), try ref.ids("input_ids.negative"))
        XCTAssertEqual(e.prompts.map(\.truncated), [false, true], "the second prompt is longer than 77 tokens")
        assertRelativeL2(e.context, try ref.tensor("prompt_embeds"), "prompt_embeds", 1e-5)
        assertRelativeL2(try XCTUnwrap(e.uncond), try ref.tensor("negative_prompt_embeds"), "negative_prompt_embeds", 1e-5)

        // No negative prompts with guidance: the empty prompt for each.
        let d = try pipeline.encodePrompts(ref.prompts, negativePrompts: nil, guidance: ref.guidance)
        assertRelativeL2(try XCTUnwrap(d.uncond), try ref.tensor("negative_prompt_embeds.default"), "negative_prompt_embeds (none given)", 1e-5)
        XCTAssertEqual(d.context.scalars, e.context.scalars)

        // Guidance at most 1: no unconditional half, negative prompts unused.
        for g: Float in [1, 0.5] {
            let c = try pipeline.encodePrompts(ref.prompts, negativePrompts: ref.negatives, guidance: g)
            XCTAssertNil(c.uncond)
            XCTAssertTrue(c.negativePrompts.isEmpty)
            XCTAssertEqual(c.context.scalars, e.context.scalars)
        }

        func assertInput(_ fragment: String, _ body: () throws -> Any, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { error in
                guard case TextToImageError.input(let why) = error else { return XCTFail("\(error)", line: line) }
                XCTAssertTrue(why.contains(fragment), why, line: line)
            }
        }
        assertInput("1 negative prompt for 2 prompts") { try pipeline.encodePrompts(ref.prompts, negativePrompts: ["x"], guidance: 7.5) }
        assertInput("no prompts") { try pipeline.encodePrompts([], negativePrompts: nil, guidance: 7.5) }
        assertInput("finite") { try pipeline.encodePrompts(ref.prompts, negativePrompts: nil, guidance: .nan) }
    }

    /// One scheduler's run from `pipeline` against the reference: final latents, decoded image and
    /// the [0, 1] image. Returns the worst pixel.
    func checkRun(_ pipeline: TextToImagePipeline, _ ref: Reference, _ method: SchedulerKind.Method, _ what: String) throws -> Float {
        var options = RoutedSampler.Options(scheduler: try SchedulerKind(method, steps: ref.steps))
        options.guidance = ref.guidance
        options.noise = try ref.tensor("noise")
        options.seed = 12345  // unused: the noise is given
        let negatives = ref.meta("\(method.rawValue).negative_prompts") == "given" ? ref.negatives : nil
        var progress: [Int] = []
        let result = try pipeline.generate(prompts: ref.prompts, negativePrompts: negatives, options: options) { call, total in
            XCTAssertEqual(total, options.scheduler.modelCalls)
            progress.append(call.index)
        }
        XCTAssertEqual(progress, Array(0..<options.scheduler.modelCalls))
        XCTAssertEqual(result.calls.map(\.timestep).map { String(format: "%g", $0) }.joined(separator: ","),
                       ref.meta("\(method.rawValue).timesteps"), "\(what): timesteps")
        XCTAssertTrue(result.calls.allSatisfy { $0.batch == 4 && $0.expert == nil })
        XCTAssertTrue([result.seconds.encode, result.seconds.denoise, result.seconds.decode].allSatisfy { $0 >= 0 && $0.isFinite })
        assertRelativeL2(result.latents, try ref.tensor("\(method.rawValue).latents"), "\(what): final latents", 1e-5)
        assertRelativeL2(result.images, try ref.tensor("\(method.rawValue).decoded"), "\(what): decoded image", 1e-5)
        return assertImages(result.images, try ref.tensor("\(method.rawValue).decoded"), "\(what): [0, 1] image")
    }

    func testImagesMatchStableDiffusionPipeline() throws {
        let ref = try Reference()
        let pipeline = try TextToImagePipeline(pipeline: Self.folder)
        for method in SchedulerKind.Method.allCases {
            _ = try checkRun(pipeline, ref, method, "pipeline folder, \(method.rawValue):\(ref.steps)")
        }
    }

    func testOriginalSingleFileGivesTheSameImages() throws {
        let ref = try Reference()
        var options = TextToImageLoadOptions()
        options.unet.configPath = Self.folder + "/unet/config.json"
        options.textEncoder.configPath = Self.folder + "/text_encoder/config.json"
        options.vae.configPath = Self.folder + "/vae/config.json"
        let tokenizer = try CLIPTokenizer(path: Self.folder + "/tokenizer")
        let pipeline = try TextToImagePipeline(singleFile: Self.single, tokenizer: tokenizer, options: options)
        XCTAssertEqual(pipeline.notes.count, 1, "no scheduler config in a single file: SD2.1's is noted")
        XCTAssertEqual(pipeline.sampler.schedulerConfig, .sd21)
        let e = try pipeline.encodePrompts(ref.prompts, negativePrompts: ref.negatives, guidance: ref.guidance)
        assertRelativeL2(e.context, try ref.tensor("prompt_embeds"), "single file: prompt_embeds", 1e-5)
        assertRelativeL2(try XCTUnwrap(e.uncond), try ref.tensor("negative_prompt_embeds"), "single file: negative_prompt_embeds", 1e-5)
        // SD2.1's default config is the fixture's DDIM config (timestep spacing aside, which DDIM defaults to leading).
        _ = try checkRun(pipeline, ref, .ddim, "single file, ddim:\(ref.steps)")
    }

    func testRoutedExpertsWithComponents() throws {
        let ref = try Reference()
        let dense = try TextToImagePipeline(pipeline: Self.folder)
        let components = try TextToImageComponents(pipeline: Self.folder)
        let unet = dense.sampler.unet, config = dense.sampler.schedulerConfig
        let units = unet.config.units().map(\.name)
        var options = RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: ref.steps))
        options.guidance = ref.guidance
        options.noise = try ref.tensor("noise")
        let reference = try dense.generate(prompts: ref.prompts, negativePrompts: ref.negatives, options: options)

        // Experts that keep every unit: the dense run, bit for bit.
        let keepAll = ExpertDecisions(units: units, kept: [units.map { _ in true }], route: Array(repeating: 0, count: 1000))
        let all = try TextToImagePipeline(components: components, sampler: RoutedSampler(unet: unet, decisions: keepAll, schedulerConfig: config))
        let same = try all.generate(prompts: ref.prompts, negativePrompts: ref.negatives, options: options)
        XCTAssertEqual(same.images.scalars, reference.images.scalars)
        XCTAssertEqual(same.calls.map(\.expert), Array(repeating: 0, count: ref.steps))

        // Expert 1 (training timesteps 500 and up) skips every third unit: it serves t = 751 and 501.
        let pruned = ExpertDecisions(units: units, kept: [units.map { _ in true }, units.indices.map { $0 % 3 != 1 }],
                                     route: (0..<1000).map { $0 < 500 ? 0 : 1 })
        let routedSampler = try RoutedSampler(unet: unet, decisions: pruned, schedulerConfig: config)
        let routed = try TextToImagePipeline(components: components, sampler: routedSampler)
        let result = try routed.generate(prompts: ref.prompts, negativePrompts: ref.negatives, options: options)
        XCTAssertEqual(result.calls.map(\.expert), [1, 1, 0, 0])
        XCTAssertTrue(result.calls.prefix(2).allSatisfy { $0.skippedUnits == units.indices.filter { $0 % 3 == 1 }.count && $0.macs < reference.calls[0].macs })
        XCTAssertNotEqual(result.images.scalars, reference.images.scalars)
        // The same as the routed sampler on the pipeline's embeddings, decoded.
        let sampled = try routedSampler.sample(context: result.embeddings.context, uncond: result.embeddings.uncond, options: options)
        XCTAssertEqual(result.latents.scalars, sampled.latents.scalars)
        XCTAssertEqual(result.images.scalars, try routed.decode(sampled.latents).scalars)
    }

    func testComponentsThatDoNotFitAreRefused() throws {
        let components = try TextToImageComponents(pipeline: Self.folder)
        // A UNet whose cross_attention_dim is not the text encoder's width (tiny-sd1: 12, the text encoder: 16).
        let sd1 = Self.root.deletingLastPathComponent().appendingPathComponent("tiny-sd1")
        var load = LoadOptions()
        load.configPath = sd1.appendingPathComponent("config.json").path
        let unet = try UNet(checkpoint: UNetCheckpoint(path: sd1.appendingPathComponent("diffusers.safetensors").path, options: load))
        XCTAssertThrowsError(try TextToImagePipeline(components: components, sampler: RoutedSampler(unet: unet, schedulerConfig: .sd21))) { e in
            guard case TextToImageError.mismatch(let why) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(why.contains("hidden_size is 16, the UNet's cross_attention_dim is 12"), why)
        }
        // A tokenizer with more ids than the text encoder's vocabulary (the full SD2.1 tokenizer: 49,408 ids; the fixture's encoder: 1,514).
        let full = try CLIPTokenizer(path: Self.root.deletingLastPathComponent().appendingPathComponent("tokenizer/sd21-tokenizer").path)
        XCTAssertThrowsError(try TextToImageComponents(tokenizer: full, textEncoder: components.textEncoder, vae: components.vae)) { e in
            guard case TextToImageError.mismatch(let why) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(why.contains("49408 token ids, the text encoder's vocab_size is 1514"), why)
        }
        // Image sizes in pixels: multiples of the VAE's factor 8.
        let pipeline = try TextToImagePipeline(pipeline: Self.folder)
        XCTAssertTrue(try pipeline.latentSize(height: 64, width: 128) == (8, 16))
        XCTAssertThrowsError(try pipeline.latentSize(height: 60, width: 64))
        XCTAssertThrowsError(try pipeline.latentSize(height: 0, width: 64))
    }

    func testDenormalizeIsDiffusersPostprocessing() {
        let x = Tensor(shape: [1, 1, 1, 5], values: [-3, -1, 0, 0.5, 2])
        XCTAssertEqual(TextToImagePipeline.denormalize(x).scalars, [0, 0, 0.5, 0.75, 1])
    }
}
