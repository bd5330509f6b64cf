import ALTER
import ExampleSupport
import Experts
import RunExport
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// The sampling loop against hand-written loops (same scheduler steps, same UNet calls, bit for
/// bit), with a plain model and with a bundle exported from a short run on the example.
final class RoutedSamplerTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("alter-sampler-tests-\(getpid())").path
    static let modelPath = root.appendingPathComponent("examples/sd21-tiny.safetensors").path
    static let configPath = root.appendingPathComponent("examples/sd21-tiny.config.json").path
    static let dataPath = root.appendingPathComponent("examples/sd21-tiny-data.safetensors").path
    nonisolated(unsafe) static var runPath: String?
    nonisolated(unsafe) static var bundlePath: String?

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
        super.tearDown()
    }

    func exampleModel() throws -> UNet {
        var o = LoadOptions()
        o.configPath = Self.configPath
        return try UNet(checkpoint: UNetCheckpoint(path: Self.modelPath, options: o))
    }

    /// Two contexts of the example data and its uncond.
    func exampleContexts() throws -> (context: Tensor, uncond: Tensor) {
        let data = try SafeTensorsFile(path: Self.dataPath)
        let all = try data.floats("context"), shape = try data.require("context").shape
        let per = shape[1] * shape[2]
        let context = Tensor(shape: [2, shape[1], shape[2]], values: Array(all[per * 3 ..< per * 5]))
        return (context, Tensor(shape: try data.require("uncond").shape, values: try data.floats("uncond")))
    }

    /// A finished 12-step run on the example, 3 experts, and its F32 bundle (made once).
    func exampleBundle() throws -> (run: RunDirectory, bundle: String) {
        if let r = Self.runPath, let b = Self.bundlePath { return (RunDirectory(path: r), b) }
        try? FileManager.default.removeItem(atPath: Self.scratch)
        let dir = try Example.finishedRun(at: Self.scratch + "/run", steps: 12, hypernetSteps: 8) {
            $0.settings.experts = 3
            $0.settings.keep = 0.6
            $0.settings.learningRateHypernet = 5e-2
            $0.settings.warmupSteps = 2
        }
        let bundle = Self.scratch + "/example.alter"
        try RunExporter.export(run: dir, to: bundle)
        Self.runPath = dir.path
        Self.bundlePath = bundle
        return (dir, bundle)
    }

    // MARK: the hand-written loop

    static func concat(_ a: Tensor, _ b: Tensor) -> Tensor {
        Tensor(shape: [a.shape[0] + b.shape[0]] + a.shape.dropFirst(), values: a.scalars + b.scalars)
    }

    /// diffusers' denoising loop, written out: cat([x] * 2), one call, chunk(2), u + g (c - u), step.
    func handLoop(unet: UNet, scheduler: any Scheduler, noise: Tensor, context: Tensor, uncond: Tensor, guidance: Float?,
                  skip: (Float) throws -> Set<String> = { _ in [] }) throws -> Tensor {
        var s = scheduler
        var x = s.initialLatent(noise: noise)
        let b = context.shape[0]
        var uncondBatch = Tensor(shape: [0] + uncond.shape, values: [])
        for _ in 0..<b { uncondBatch = Self.concat(uncondBatch, uncond.reshaped([1] + uncond.shape)) }
        for t in s.timesteps {
            var options = UNetForwardOptions()
            options.skip = try skip(t)
            let input = try s.scaleModelInput(x, timestep: t)
            let output: Tensor
            if let g = guidance {
                let out = unet.forward(sample: Self.concat(input, input), timesteps: Array(repeating: t, count: 2 * b),
                                       context: Self.concat(uncondBatch, context), options: options).sample
                let v = out.scalars, n = v.count / 2
                output = Tensor(shape: x.shape, values: (0..<n).map { v[$0] + g * (v[n + $0] - v[$0]) })
            } else {
                output = unet.forward(sample: input, timesteps: Array(repeating: t, count: b), context: context, options: options).sample
            }
            x = try s.step(modelOutput: output, timestep: t, sample: x)
        }
        return x
    }

    func noise(seed: UInt64, _ shape: [Int]) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        return Tensor(shape: shape, values: rng.normals(shape.reduce(1, *)))
    }

    // MARK: (a) plain model

    func testDenseDDIMEqualsTheHandWrittenLoop() throws {
        let unet = try exampleModel()
        let (context, uncond) = try exampleContexts()
        var config = SchedulerConfig.sd21
        config.predictionType = .epsilon
        let sampler = RoutedSampler(unet: unet, schedulerConfig: config)
        var options = RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: 8))
        options.seed = 42
        options.guidance = 7.5
        var seen: [Int] = []
        let result = try sampler.sample(context: context, uncond: uncond, options: options) { call, total in
            XCTAssertEqual(total, 8)
            seen.append(call.index)
        }
        XCTAssertEqual(seen, Array(0..<8))
        let expected = try handLoop(unet: unet, scheduler: try DDIMScheduler(config: config, steps: 8), noise: noise(seed: 42, [2, 4, 16, 16]),
                                    context: context, uncond: uncond, guidance: 7.5)
        XCTAssertEqual(result.latents.shape, [2, 4, 16, 16])
        XCTAssertEqual(result.latents.scalars, expected.scalars)
        XCTAssertTrue(result.latents.scalars.allSatisfy(\.isFinite))
        // Every call dense, batch 2B, at the scheduler's timesteps.
        XCTAssertEqual(result.calls.map(\.timestep), try DDIMScheduler(config: config, steps: 8).timesteps)
        XCTAssertTrue(result.calls.allSatisfy { $0.expert == nil && $0.batch == 4 && $0.macsPerSample == result.denseMACsPerSample && $0.macs == 4 * $0.macsPerSample })
        XCTAssertEqual(result.denseMACsPerSample, try CostModel(config: unet.config, latentHeight: 16, latentWidth: 16, contextLength: 5).total.total)

        // Deterministic for a seed; another seed, other latents.
        XCTAssertEqual(try sampler.sample(context: context, uncond: uncond, options: options).latents.scalars, result.latents.scalars)
        options.seed = 43
        XCTAssertNotEqual(try sampler.sample(context: context, uncond: uncond, options: options).latents.scalars, result.latents.scalars)

        // Guidance 1: the conditional-only loop (batch B, no unconditional half).
        options.seed = 42
        options.guidance = 1
        let cond = try sampler.sample(context: context, uncond: uncond, options: options)
        let condExpected = try handLoop(unet: unet, scheduler: try DDIMScheduler(config: config, steps: 8), noise: noise(seed: 42, [2, 4, 16, 16]),
                                        context: context, uncond: uncond, guidance: nil)
        XCTAssertEqual(cond.latents.scalars, condExpected.scalars)
        XCTAssertTrue(cond.calls.allSatisfy { $0.batch == 2 })
        XCTAssertNotEqual(cond.latents.scalars, result.latents.scalars)
    }

    func testMissingUncondIsZerosAndShapesAreChecked() throws {
        let unet = try exampleModel()
        let (context, _) = try exampleContexts()
        var config = SchedulerConfig.sd21
        config.predictionType = .epsilon
        let sampler = RoutedSampler(unet: unet, schedulerConfig: config)
        var options = RoutedSampler.Options(scheduler: try SchedulerKind(.euler, steps: 3))
        options.seed = 5
        let zeros = try sampler.sample(context: context, uncond: Tensor(zeros: [5, 32]), options: options)
        XCTAssertEqual(try sampler.sample(context: context, uncond: nil, options: options).latents.scalars, zeros.latents.scalars)

        func assertInputError(_ tensor: String, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { e in
                guard case SamplingError.input(_, let t, _) = e else { return XCTFail("\(e)", line: line) }
                XCTAssertEqual(t, tensor, line: line)
            }
        }
        assertInputError("context") { _ = try sampler.sample(context: Tensor(zeros: [2, 5, 16]), uncond: nil, options: options) }
        assertInputError("uncond") { _ = try sampler.sample(context: context, uncond: Tensor(zeros: [4, 32]), options: options) }
        options.latentHeight = 12
        assertInputError("noise") { _ = try sampler.sample(context: context, uncond: nil, options: options) }
    }

    func testGivenNoiseReplacesTheSeedsNoise() throws {
        let unet = try exampleModel()
        let (context, uncond) = try exampleContexts()
        var config = SchedulerConfig.sd21
        config.predictionType = .epsilon
        let sampler = RoutedSampler(unet: unet, schedulerConfig: config)
        var seeded = RoutedSampler.Options(scheduler: try SchedulerKind(.euler, steps: 3))
        seeded.seed = 9
        let reference = try sampler.sample(context: context, uncond: uncond, options: seeded)

        // The seed's own noise given explicitly: the same run, bit for bit; the seed is then unused.
        var given = seeded
        given.seed = 10
        given.noise = noise(seed: 9, [2, 4, 16, 16])
        XCTAssertEqual(try sampler.sample(context: context, uncond: uncond, options: given).latents.scalars, reference.latents.scalars)
        // Its size is the latent size (not the model's sample_size).
        given.noise = noise(seed: 9, [2, 4, 8, 24])
        XCTAssertEqual(try sampler.sample(context: context, uncond: uncond, options: given).latents.shape, [2, 4, 8, 24])

        func assertNoiseError(_ options: RoutedSampler.Options, _ fragment: String, line: UInt = #line) {
            XCTAssertThrowsError(try sampler.sample(context: context, uncond: uncond, options: options), line: line) { e in
                guard case SamplingError.input(_, let t, let why) = e else { return XCTFail("\(e)", line: line) }
                XCTAssertEqual(t, "noise", line: line)
                XCTAssertTrue(why.contains(fragment), "\(why)", line: line)
            }
        }
        given.latentHeight = 16
        assertNoiseError(given, "latent size asked for is 16x")
        given.latentHeight = nil
        given.noise = noise(seed: 9, [3, 4, 16, 16])
        assertNoiseError(given, "expected [2, 4, h, w]")
        given.noise = noise(seed: 9, [2, 4, 16])
        assertNoiseError(given, "expected [B, 4, h, w]")
        given.noise = noise(seed: 9, [2, 4, 12, 16])
        assertNoiseError(given, "multiple")
        let bad = noise(seed: 9, [2, 4, 16, 16])
        bad.data[5] = .nan
        given.noise = bad
        assertNoiseError(given, "non-finite value (nan) at element 5")
    }

    // MARK: (b) bundle

    func testBundleSamplingEqualsTheRunsUNetWithTheSameSkipSets() throws {
        let (run, path) = try exampleBundle()
        let bundle = try ExpertBundle(path: path)
        let sampler = try RoutedSampler(bundle: bundle)
        XCTAssertEqual(sampler.schedulerConfig.predictionType, .epsilon)
        XCTAssertTrue(sampler.notes.isEmpty)
        let reference = try UNet(checkpoint: UNetCheckpoint(path: run.finalPath + "/unet"))
        let (context, uncond) = try exampleContexts()
        for kind in [try SchedulerKind(.pndm, steps: 10), try SchedulerKind(.euler, steps: 6)] {
            var options = RoutedSampler.Options(scheduler: kind)
            options.seed = 7
            let result = try sampler.sample(context: context, uncond: uncond, options: options)
            let schedule = try bundle.schedule(kind)
            XCTAssertEqual(result.calls.count, kind.modelCalls)
            XCTAssertEqual(result.experts, schedule.map(\.expert), "\(kind)")
            XCTAssertEqual(result.calls.map(\.timestep), schedule.map(\.timestep))
            // MACs at the bundle's size (its MAC latent size is the example's 16x16, 5 tokens).
            XCTAssertEqual(result.calls.map(\.macsPerSample), schedule.map(\.macs))
            XCTAssertEqual(result.denseMACsPerSample, bundle.manifest.macs.dense)
            XCTAssertTrue(result.calls.contains { $0.skippedUnits > 0 }, "no expert skips anything: the test proves little")

            let expected = try handLoop(unet: reference, scheduler: try kind.makeScheduler(config: try bundle.schedulerConfig()),
                                        noise: noise(seed: 7, [2, 4, 16, 16]), context: context, uncond: uncond, guidance: 7.5) { t in
                bundle.skippedUnits(expert: try bundle.expert(forSamplerTimestep: t))
            }
            XCTAssertEqual(result.latents.scalars, expected.scalars, "\(kind)")

            // In-memory decisions route as the bundle does.
            let decided = try RoutedSampler(unet: reference, decisions: try run.readDecisions().decisions, schedulerConfig: try bundle.schedulerConfig())
            let same = try decided.sample(context: context, uncond: uncond, options: options)
            XCTAssertEqual(same.experts, result.experts)
            XCTAssertEqual(same.latents.scalars, result.latents.scalars)
        }
    }

    // MARK: (c) v-prediction

    func testVPredictionBundleAndModel() throws {
        let (run, path) = try exampleBundle()
        let vPath = Self.scratch + "/v.alter"
        try? FileManager.default.removeItem(atPath: vPath)
        try FileManager.default.copyItem(atPath: path, toPath: vPath)
        func edit(_ body: (inout [String: Any]) -> Void) throws {
            let file = URL(fileURLWithPath: vPath + "/bundle.json")
            var o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
            body(&o)
            try JSONSerialization.data(withJSONObject: o).write(to: file)
        }
        try edit { o in
            o["prediction_type"] = "v_prediction"
            var s = o["scheduler"] as! [String: Any]
            s["prediction_type"] = "v_prediction"
            o["scheduler"] = s
        }
        let bundle = try ExpertBundle(path: vPath)
        XCTAssertEqual(bundle.predictionType, .vPrediction)
        let sampler = try RoutedSampler(bundle: bundle)
        XCTAssertEqual(sampler.schedulerConfig.predictionType, .vPrediction)
        XCTAssertTrue(sampler.notes.isEmpty)
        let reference = try UNet(checkpoint: UNetCheckpoint(path: run.finalPath + "/unet"))
        let (context, uncond) = try exampleContexts()
        let kind = try SchedulerKind(.ddim, steps: 6)
        var options = RoutedSampler.Options(scheduler: kind)
        options.seed = 11
        let v = try sampler.sample(context: context, uncond: uncond, options: options)
        var vConfig = try ExpertBundle(path: path).schedulerConfig()
        vConfig.predictionType = .vPrediction
        let expected = try handLoop(unet: reference, scheduler: try DDIMScheduler(config: vConfig, steps: 6),
                                    noise: noise(seed: 11, [2, 4, 16, 16]), context: context, uncond: uncond, guidance: 7.5) { t in
            bundle.skippedUnits(expert: try bundle.expert(forSamplerTimestep: t))
        }
        XCTAssertEqual(v.latents.scalars, expected.scalars)
        let epsilon = try RoutedSampler(bundle: ExpertBundle(path: path)).sample(context: context, uncond: uncond, options: options)
        XCTAssertNotEqual(v.latents.scalars, epsilon.latents.scalars)

        // The bundle's prediction type wins over a scheduler config that disagrees, with a note.
        try edit { o in
            var s = o["scheduler"] as! [String: Any]
            s["prediction_type"] = "epsilon"
            o["scheduler"] = s
        }
        let overridden = try RoutedSampler(bundle: ExpertBundle(path: vPath))
        XCTAssertEqual(overridden.schedulerConfig.predictionType, .vPrediction)
        XCTAssertEqual(overridden.notes.count, 1)
        XCTAssertEqual(try overridden.sample(context: context, uncond: uncond, options: options).latents.scalars, v.latents.scalars)

        // A plain model with a v-prediction config: the hand-written v loop.
        let unet = try exampleModel()
        var config = SchedulerConfig.sd21
        config.predictionType = .vPrediction
        let plain = try RoutedSampler(unet: unet, schedulerConfig: config).sample(context: context, uncond: uncond, options: options)
        let plainExpected = try handLoop(unet: unet, scheduler: try DDIMScheduler(config: config, steps: 6), noise: noise(seed: 11, [2, 4, 16, 16]),
                                         context: context, uncond: uncond, guidance: 7.5)
        XCTAssertEqual(plain.latents.scalars, plainExpected.scalars)
    }

    // MARK: input files

    func testSamplingInputsFromTrainingDataAndErrorsNameFileAndTensor() throws {
        let config = try exampleModel().config
        let data = try SafeTensorsFile(path: Self.dataPath)
        let all = try data.floats("context")
        let inputs = try SamplingInputs.read(context: Self.dataPath, rows: [3, 4], config: config)
        XCTAssertEqual(inputs.context.shape, [2, 5, 32])
        XCTAssertEqual(inputs.context.scalars, Array(all[(3 * 160)..<(5 * 160)]))
        XCTAssertEqual(inputs.uncond?.shape, [5, 32])
        XCTAssertEqual(inputs.uncond?.scalars, try data.floats("uncond"))
        XCTAssertEqual(inputs.uncondFile, Self.dataPath)
        XCTAssertEqual(try SamplingInputs.read(context: Self.dataPath, config: config).context.shape, [32, 5, 32])

        try FileManager.default.createDirectory(atPath: Self.scratch, withIntermediateDirectories: true)
        func write(_ name: String, _ tensors: [(String, [Int])]) throws -> String {
            let path = Self.scratch + "/" + name
            let w = try SafeTensorsWriter(path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: .f32, shape: $0.1) })
            for spec in w.order { try w.write(spec.name, floats: [Float](repeating: 0.5, count: spec.elementCount)) }
            try w.finish()
            return path
        }
        let single = try write("single.safetensors", [("context", [5, 32])])
        let one = try SamplingInputs.read(context: single, config: config)
        XCTAssertEqual(one.context.shape, [1, 5, 32])
        XCTAssertNil(one.uncond)
        XCTAssertNil(one.uncondFile)
        let withUncond = try SamplingInputs.read(context: single, uncond: Self.dataPath, config: config)
        XCTAssertEqual(withUncond.uncondFile, Self.dataPath)

        func assertError(_ file: String, _ tensor: String, _ words: String, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { e in
                guard case SamplingError.input(let f, let t, let m) = e else { return XCTFail("\(e)", line: line) }
                XCTAssertEqual(f, file, line: line)
                XCTAssertEqual(t, tensor, line: line)
                XCTAssertTrue(m.contains(words), m, line: line)
                XCTAssertTrue("\(e)".contains(file) && "\(e)".contains(tensor), line: line)
            }
        }
        let wide = try write("wide.safetensors", [("context", [2, 5, 16])])
        assertError(wide, "context", "cross_attention_dim is 32") { _ = try SamplingInputs.read(context: wide, config: config) }
        let flat = try write("flat.safetensors", [("context", [160])])
        assertError(flat, "context", "expected [B, S, 32]") { _ = try SamplingInputs.read(context: flat, config: config) }
        let none = try write("none.safetensors", [("prompt", [5, 32])])
        assertError(none, "context", "not found") { _ = try SamplingInputs.read(context: none, config: config) }
        let badUncond = try write("bad-uncond.safetensors", [("context", [2, 5, 32]), ("uncond", [4, 32])])
        assertError(badUncond, "uncond", "expected [5, 32]") { _ = try SamplingInputs.read(context: badUncond, config: config) }
        assertError(Self.dataPath, "context", "row 32 selected") { _ = try SamplingInputs.read(context: Self.dataPath, rows: [32], config: config) }
        assertError(single, "uncond", "not found") { _ = try SamplingInputs.read(context: Self.dataPath, uncond: single, config: config) }
    }
}
