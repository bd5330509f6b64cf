import Foundation
import SafeTensors
import TensorCore
import XCTest
@testable import StableDiffusion

/// The samplers against diffusers (Tests/Fixtures/schedulers, scripts/make_scheduler_fixtures.py):
/// timesteps exactly, every latent of whole runs element-wise, plus `--schedule` strings and
/// `scheduler_config.json` loading.
final class SchedulerTests: XCTestCase {
    // Tolerance of a latent element s against diffusers' d: |s - d| <= atol + rtol * |d|, with
    // rtol = 4e-6 and atol = 4e-6 x (the run's largest |latent|, at least 1).
    //
    // diffusers computes the schedule in float32 (betas from a float32 linspace, squared; the
    // cumprod is accumulated in double but stored in float32): its alphaBar differs from the exact
    // (Double) one by up to 9.3e-7 relative, and every coefficient inherits that; 1 - alphaBar
    // also cancels in float32 near t = 0 (sqrt(1 - a_1) is off by ~1e-5 relative). Each step is
    // then evaluated in float32 with float32 intermediates (x0 = (x - sqrt(1-a) eps) / sqrt(a) is
    // ~12x larger than x near t = 950, so its rounding is amplified), and errors accumulate over
    // 15-21 steps. The fixture script runs the same trajectories in float64 (same model outputs)
    // and measures diffusers' float32 error: up to 2.1e-5 absolute on latents of magnitude up to
    // 49 (Euler, whose first latent is 14.6 x noise), 1.6e-5 for DDIM epsilon (latents up to 33),
    // 1.5e-6 for the v-prediction runs (up to 3.3): about 5e-7 of each run's largest latent.
    // This implementation uses Double coefficients and Double per-element arithmetic, rounding to
    // Float once per step, so its distance to the fixture is essentially diffusers' own float32
    // error: measured here at most 2.3e-5 absolute (euler-epsilon, on 34.6), per run within 1.1x
    // of the float32-vs-float64 figures above; the worst element uses 0.099 of the tolerance
    // (pndm-v-prediction).
    // The atol part, scaled by the run's largest latent, covers elements that are small now but
    // carry error from large earlier latents; rtol covers the part that scales with the element.
    // That leaves a 10x margin, and the tolerance still tells schedules apart:
    // testToleranceCatchesSmallScheduleChanges shows that beta_start or beta_end changed by
    // 0.1%, or set_alpha_to_one flipped, exceed it 6x to 1000x.
    static let rtol = 4e-6
    static let atolScale = 4e-6

    /// A sigma s against diffusers' d, as a fraction of the tolerance: compared through the
    /// alphaBar they stand for, a = 1 / (1 + sigma^2), with |a_s - a_d| <= 2e-6 a_d. diffusers'
    /// sigmas come from its float32 alphaBar (up to 9.3e-7 relative from the exact one) through
    /// sqrt((1 - a) / a) in float32, where 1 - a cancels for small t: at t = 0, a = 0.99915 and a
    /// float32 rounding of a (3e-8) is 3.5e-5 of 1 - a, so its sigma_0 is off by 1.3e-5 relative
    /// (measured) while its alphaBar is off by less than 1e-7. At large t its alphaBar is off by up
    /// to 9.3e-7 relative (0.49 of this tolerance, measured).
    static func sigmaError(_ s: Double, _ d: Double) -> Double {
        let a = 1 / (1 + s * s), b = 1 / (1 + d * d)
        return abs(a - b) / (2e-6 * b)
    }

    static let runs: [(kind: SchedulerKind.Method, steps: Int)] = [(.ddim, 20), (.pndm, 20), (.euler, 15)]

    // MARK: fixture access

    static func fixture(_ name: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: Fixtures.path("schedulers/\(name).safetensors"))
    }

    /// A tensor as Doubles (F32, I32 or I64).
    static func values(_ file: SafeTensorsFile, _ name: String) throws -> [Double] {
        let info = try file.require(name)
        let raw = file.rawBytes(info)
        switch info.dtype {
        case .i64: return (0..<info.elementCount).map { Double(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        case .i32: return (0..<info.elementCount).map { Double(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        default: return try file.floats(name).map(Double.init)
        }
    }

    /// Slice k of a stacked tensor [K, ...] as a tensor of shape [...].
    static func slice(_ file: SafeTensorsFile, _ name: String, _ k: Int) throws -> Tensor {
        let info = try file.require(name)
        let shape = Array(info.shape.dropFirst())
        let n = Tensor.count(of: shape)
        let all = try file.floats(name)
        return Tensor(shape: shape, values: Array(all[(k * n)..<((k + 1) * n)]))
    }

    static func tensor(_ file: SafeTensorsFile, _ name: String) throws -> Tensor {
        Tensor(shape: try file.require(name).shape, values: try file.floats(name))
    }

    /// Worst element of |actual - expected| / (atol + rtol |expected|).
    struct Worst {
        var ratio = 0.0, maxAbs = 0.0, maxRel = 0.0
        var at = ""
        var actual = 0.0, expected = 0.0

        mutating func compare(_ actual: Tensor, _ expected: Tensor, atol: Double, rtol: Double, label: String) {
            precondition(actual.shape == expected.shape)
            let a = actual.scalars, e = expected.scalars
            for i in a.indices {
                let d = Swift.abs(Double(a[i]) - Double(e[i]))
                maxAbs = max(maxAbs, d)
                if e[i] != 0 { maxRel = max(maxRel, d / Swift.abs(Double(e[i]))) }
                let r = d / (atol + rtol * Swift.abs(Double(e[i])))
                if r > ratio || (r.isNaN && !ratio.isNaN) {
                    ratio = r
                    at = "\(label), element \(i)"
                    self.actual = Double(a[i])
                    self.expected = Double(e[i])
                }
            }
        }

        var summary: String {
            String(format: "worst %.3g of tolerance at %@: got %.9g, diffusers %.9g (max abs %.2e, max rel %.2e)",
                   ratio, at, actual, expected, maxAbs, maxRel)
        }
    }

    func config(from file: SafeTensorsFile, spacing: SchedulerConfig.TimestepSpacing? = nil) throws -> SchedulerConfig {
        let json = try XCTUnwrap(file.metadata?["config"])
        var c = try SchedulerConfig(diffusersJSON: Data(json.utf8), source: "fixture config")
        c.timestepSpacing = spacing
        return c
    }

    // MARK: whole runs

    static func caseName(_ method: SchedulerKind.Method, _ prediction: NoiseSchedule.PredictionType) -> String {
        "\(method.rawValue)-\(prediction.rawValue.replacingOccurrences(of: "_", with: "-"))"
    }

    /// A whole run fed diffusers' model outputs, every latent compared with diffusers'.
    func run(_ method: SchedulerKind.Method, _ steps: Int, _ prediction: NoiseSchedule.PredictionType,
             edit: (inout SchedulerConfig) -> Void = { _ in }) throws -> (latents: Worst, model: Worst, atol: Double, scale: Double) {
        let name = Self.caseName(method, prediction)
        let file = try Self.fixture(name)
        var c = try config(from: file)
        edit(&c)
        var scheduler = try SchedulerKind(method, steps: steps).makeScheduler(config: c)
        let latentCount = try file.require("latents").shape[0]
        XCTAssertEqual(latentCount, scheduler.modelCalls + 1, name)
        var scale = 1.0
        for k in 0..<latentCount {
            scale = max(scale, try Self.slice(file, "latents", k).scalars.map { Double(abs($0)) }.max() ?? 0)
        }
        let atol = Self.atolScale * scale
        let noise = try Self.tensor(file, "noise"), fixed = try Self.tensor(file, "fixed")
        var worst = Worst(), worstModel = Worst()
        var latent = scheduler.initialLatent(noise: noise)
        worst.compare(latent, try Self.slice(file, "latents", 0), atol: atol, rtol: Self.rtol, label: "initial latent")
        for (k, t) in scheduler.timesteps.enumerated() {
            // scale_model_input, checked through the stand-in model it feeds: 0.5 * tanh(input) +
            // 0.1 * fixed against the stored output (the tolerance covers tanh's last bits).
            let input = try scheduler.scaleModelInput(latent, timestep: t)
            let stored = try Self.slice(file, "model_outputs", k)
            let inp = input.scalars, fx = fixed.scalars
            let mine = Tensor(shape: input.shape, values: inp.indices.map { 0.5 * tanh(inp[$0]) + 0.1 * fx[$0] })
            worstModel.compare(mine, stored, atol: 1e-5, rtol: 1e-5, label: "model output \(k) (t = \(t))")
            // the step, fed diffusers' model output
            latent = try scheduler.step(modelOutput: stored, timestep: t, sample: latent)
            worst.compare(latent, try Self.slice(file, "latents", k + 1), atol: atol, rtol: Self.rtol,
                          label: "latent after step \(k) (t = \(t))")
        }
        XCTAssertTrue(scheduler.isFinished, name)
        return (worst, worstModel, atol, scale)
    }

    func testRunsMatchDiffusers() throws {
        for (method, steps) in Self.runs {
            for prediction in NoiseSchedule.PredictionType.allCases {
                let name = Self.caseName(method, prediction)
                let file = try Self.fixture(name)
                let c = try config(from: file)
                XCTAssertEqual(c.predictionType, prediction, name)
                let scheduler = try SchedulerKind(method, steps: steps).makeScheduler(config: c)

                // timesteps: exactly
                let expectedTimesteps = try Self.values(file, "timesteps")
                XCTAssertEqual(scheduler.timesteps.map(Double.init), expectedTimesteps, "\(name) timesteps")
                XCTAssertEqual(scheduler.modelCalls, try SchedulerKind(method, steps: steps).modelCalls, name)
                XCTAssertEqual(scheduler.modelCalls, method == .pndm ? steps + 1 : steps, name)
                guard scheduler.timesteps.count == expectedTimesteps.count else { continue }
                let initSigma = try XCTUnwrap(Double(try XCTUnwrap(file.metadata?["init_noise_sigma"])))
                XCTAssertLessThanOrEqual(Self.sigmaError(scheduler.initNoiseSigma, initSigma), 1, "\(name) init_noise_sigma")
                if method == .euler, let euler = scheduler as? EulerDiscreteScheduler {
                    let sigmas = try Self.values(file, "sigmas")
                    XCTAssertEqual(euler.sigmas.count, sigmas.count, name)
                    for (s, d) in zip(euler.sigmas, sigmas) {
                        XCTAssertLessThanOrEqual(Self.sigmaError(s, d), 1, "\(name) sigma \(s), diffusers \(d)")
                    }
                }

                let r = try run(method, steps, prediction)
                print("\(name): latents \(r.latents.summary); atol \(String(format: "%.2e", r.atol)) (max |latent| \(String(format: "%.2f", r.scale)))")
                print("\(name): stand-in model outputs \(r.model.summary)")
                XCTAssertLessThanOrEqual(r.latents.ratio, 1, "\(name): \(r.latents.summary)")
                XCTAssertLessThanOrEqual(r.model.ratio, 1, "\(name) (scale_model_input): \(r.model.summary)")
            }
        }
    }

    /// The tolerance tells schedules apart: small changes of the settings fail the comparison.
    func testToleranceCatchesSmallScheduleChanges() throws {
        for (method, steps) in Self.runs {
            for prediction in NoiseSchedule.PredictionType.allCases {
                let name = Self.caseName(method, prediction)
                var edits: [(String, (inout SchedulerConfig) -> Void)] = [
                    ("beta_end x 1.001", { $0.betaEnd *= 1.001 }),
                    ("beta_start x 1.001", { $0.betaStart *= 1.001 }),
                ]
                if method != .euler { edits.append(("set_alpha_to_one", { $0.setAlphaToOne = true })) }
                for (what, edit) in edits {
                    let r = try run(method, steps, prediction, edit: edit)
                    print("\(name) with \(what): \(String(format: "%.3g", r.latents.ratio)) x the tolerance")
                    XCTAssertGreaterThan(r.latents.ratio, 3, "\(name) with \(what) passes: \(r.latents.summary)")
                }
            }
        }
    }

    // MARK: timesteps of every spacing

    func testTimestepsOfEverySpacing() throws {
        let file = try Self.fixture("timesteps")
        let anomalies = try XCTUnwrap(
            JSONSerialization.jsonObject(with: Data(try XCTUnwrap(file.metadata?["anomalies"]).utf8)) as? [String: String])
        let base = try config(from: file)
        var checked = 0, refused = 0
        var worstSigma = 0.0
        for info in file.tensors {
            let parts = info.name.split(separator: ".")
            guard parts.count == 3, let method = SchedulerKind.Method(rawValue: String(parts[0])),
                  let spacing = SchedulerConfig.TimestepSpacing(rawValue: String(parts[1])), let steps = Int(parts[2]) else { continue }
            var c = base
            c.timestepSpacing = spacing
            let expected = try Self.values(file, info.name)
            let kind = try SchedulerKind(method, steps: steps)
            if anomalies[info.name] != nil {
                // diffusers gives timestep -1 here (numpy's float arange makes one element too many)
                XCTAssertTrue(expected.contains(-1), info.name)
                XCTAssertThrowsError(try kind.makeScheduler(config: c), info.name) { error in
                    guard case SchedulerError.timestepOutOfRange(_, steps, spacing.rawValue, -1, 1000)? = error as? SchedulerError else {
                        return XCTFail("\(info.name): \(error)")
                    }
                }
                refused += 1
                continue
            }
            let scheduler = try kind.makeScheduler(config: c)
            XCTAssertEqual(scheduler.timesteps.map(Double.init), expected, info.name)
            XCTAssertEqual(scheduler.modelCalls, kind.modelCalls, info.name)
            if let euler = scheduler as? EulerDiscreteScheduler {
                let sigmas = try Self.values(file, info.name + ".sigmas")
                XCTAssertEqual(euler.sigmas.count, sigmas.count, info.name)
                for (s, d) in zip(euler.sigmas, sigmas) {
                    let err = Self.sigmaError(s, d)
                    worstSigma = max(worstSigma, err)
                    XCTAssertLessThanOrEqual(err, 1, "\(info.name) sigma \(s), diffusers \(d)")
                }
                let initSigma = try Self.values(file, info.name + ".init_noise_sigma")[0]
                // leading spacing: sqrt(sigma_max^2 + 1), which is not a sigma of the table
                let asSigma = spacing == .leading ? (initSigma * initSigma - 1).squareRoot() : initSigma
                let mine = spacing == .leading ? (euler.initNoiseSigma * euler.initNoiseSigma - 1).squareRoot() : euler.initNoiseSigma
                XCTAssertLessThanOrEqual(Self.sigmaError(mine, asSigma), 1, "\(info.name) init_noise_sigma")
            }
            checked += 1
        }
        print("timesteps: \(checked) cases equal, \(refused) refused (diffusers gives -1); Euler sigmas worst \(worstSigma) of tolerance")
        XCTAssertEqual(checked + refused, 3 * 3 * 9)
        XCTAssertEqual(refused, 6)
    }

    /// diffusers' PNDM calls the model at the second timestep twice and corrects the first step.
    func testPNDMRepeatsTheSecondTimestep() throws {
        let s = try PNDMScheduler(config: .sd21, steps: 20)
        XCTAssertEqual(Array(s.timesteps.prefix(4)), [951, 901, 901, 851])
        XCTAssertEqual(s.timesteps.last, 1)
        XCTAssertEqual(s.timesteps.count, 21)
        let one = try PNDMScheduler(config: .sd21, steps: 1)
        XCTAssertEqual(one.timesteps, [1])
        let two = try PNDMScheduler(config: .sd21, steps: 2)
        XCTAssertEqual(two.timesteps, [501, 1, 1])
    }

    // MARK: misuse

    func testStepErrors() throws {
        XCTAssertThrowsError(try DDIMScheduler(config: .sd21, steps: 0)) {
            XCTAssertEqual($0 as? SchedulerError, .invalidStepCount(0, trainTimesteps: 1000))
        }
        XCTAssertThrowsError(try EulerDiscreteScheduler(config: .sd21, steps: 1001)) {
            XCTAssertEqual($0 as? SchedulerError, .invalidStepCount(1001, trainTimesteps: 1000))
        }
        // leading spacing, steps_offset 1, 1000 steps: timestep 1000 (diffusers: index error at the first step)
        XCTAssertThrowsError(try DDIMScheduler(config: .sd21, steps: 1000)) {
            XCTAssertEqual($0 as? SchedulerError, .timestepOutOfRange(scheduler: "ddim", steps: 1000, spacing: "leading",
                                                                        timestep: 1000, trainTimesteps: 1000))
        }
        var clip = SchedulerConfig.sd21
        clip.clipSample = true
        XCTAssertThrowsError(try DDIMScheduler(config: clip, steps: 20)) { XCTAssertTrue(String(describing: $0).contains("clip_sample")) }
        XCTAssertNoThrow(try EulerDiscreteScheduler(config: clip, steps: 20))
        var prk = SchedulerConfig.sd21
        prk.skipPrkSteps = false
        XCTAssertThrowsError(try PNDMScheduler(config: prk, steps: 20)) { XCTAssertTrue(String(describing: $0).contains("skip_prk_steps")) }

        var s = try EulerDiscreteScheduler(config: .sd21, steps: 2)
        let x = Tensor(repeating: 1, shape: [1, 4, 2, 2])
        XCTAssertEqual(s.timesteps, [999, 0])
        XCTAssertThrowsError(try s.step(modelOutput: x, timestep: 0, sample: x)) {
            XCTAssertEqual($0 as? SchedulerError, .unexpectedTimestep(index: 0, expected: 999, got: 0))
        }
        XCTAssertThrowsError(try s.step(modelOutput: Tensor(repeating: 1, shape: [1, 4, 2, 3]), timestep: 999, sample: x)) {
            XCTAssertEqual($0 as? SchedulerError, .shapeMismatch("model output", expected: [1, 4, 2, 2], got: [1, 4, 2, 3]))
        }
        XCTAssertEqual(s.stepIndex, 0, "a refused step does not advance")
        _ = try s.step(modelOutput: x, timestep: 999, sample: x)
        _ = try s.step(modelOutput: x, timestep: 0, sample: x)
        XCTAssertTrue(s.isFinished)
        XCTAssertThrowsError(try s.scaleModelInput(x, timestep: 0)) { XCTAssertEqual($0 as? SchedulerError, .finished(modelCalls: 2)) }
        XCTAssertThrowsError(try s.step(modelOutput: x, timestep: 0, sample: x)) { XCTAssertEqual($0 as? SchedulerError, .finished(modelCalls: 2)) }
    }

    // MARK: --schedule strings

    func testParseScheduleStrings() throws {
        let good: [(String, SchedulerKind.Method, Int, Int)] = [
            ("pndm:20", .pndm, 20, 21), ("ddim:50", .ddim, 50, 50), ("euler:30", .euler, 30, 30),
            ("DDIM:1", .ddim, 1, 1), ("Euler:007", .euler, 7, 7), ("pndm:1", .pndm, 1, 1), ("pndm:2", .pndm, 2, 3),
        ]
        for (text, method, steps, calls) in good {
            let k = try SchedulerKind(parsing: text)
            XCTAssertEqual(k.method, method, text)
            XCTAssertEqual(k.steps, steps, text)
            XCTAssertEqual(k.modelCalls, calls, text)
            XCTAssertEqual(try SchedulerKind(parsing: k.description), k, text)
        }
        XCTAssertEqual(try SchedulerKind(parsing: "pndm:20").description, "pndm:20")
        let bad = ["", "pndm", "pndm:", ":20", "pndm:0", "pndm:-3", "pndm:+3", "pndm:2.5", "pndm:20:1", "pndm: 20",
                   " pndm:20", "plms:20", "lms:20", "ddim:1e3", "ddim:99999999999999999999999", "ddim:٣", "ddim:twenty"]
        for text in bad {
            XCTAssertThrowsError(try SchedulerKind(parsing: text), "'\(text)'") { error in
                guard case SchedulerError.invalidSchedule(let s, _)? = error as? SchedulerError else {
                    return XCTFail("'\(text)': \(error)")
                }
                XCTAssertEqual(s, text)
                XCTAssertTrue(String(describing: error).contains("pndm:20"), "the message shows the form")
            }
        }
        XCTAssertThrowsError(try SchedulerKind(.ddim, steps: 0))
        // a parsed kind whose step count the config does not allow fails when the scheduler is made
        XCTAssertThrowsError(try SchedulerKind(parsing: "euler:2000").makeScheduler()) {
            XCTAssertEqual($0 as? SchedulerError, .invalidStepCount(2000, trainTimesteps: 1000))
        }
        for text in ["ddim:50", "pndm:20", "euler:30"] {
            let k = try SchedulerKind(parsing: text)
            XCTAssertEqual(try k.makeScheduler().modelCalls, k.modelCalls, text)
        }
    }

    // MARK: scheduler_config.json

    func testLoadsPipelineSchedulerConfig() throws {
        let path = Fixtures.path("tiny-sd2/pipeline/scheduler/scheduler_config.json")
        let c = try SchedulerConfig(contentsOfFile: path)
        XCTAssertEqual(c.className, "DDIMScheduler")
        XCTAssertEqual(c.predictionType, .vPrediction)
        XCTAssertEqual(c.betaStart, 0.00085)
        XCTAssertEqual(c.betaEnd, 0.012)
        XCTAssertEqual(c.betaSchedule, .scaledLinear)
        XCTAssertEqual(c.trainTimesteps, 1000)
        XCTAssertEqual(c.stepsOffset, 1)
        XCTAssertFalse(c.setAlphaToOne)
        XCTAssertFalse(c.clipSample)
        XCTAssertEqual(c.timestepSpacing, .leading, "diffusers 0.42 writes DDIM's default into the file")
        XCTAssertTrue(c.skipPrkSteps, "absent: SD2.1's value")
        // A config with timestep_spacing written applies it to every scheduler (as diffusers' from_config does).
        XCTAssertEqual(try EulerDiscreteScheduler(config: c, steps: 15).timesteps.first, 925)
        // The noise schedule is the Double one of NoiseSchedule.
        XCTAssertEqual(try c.noiseSchedule(), NoiseSchedule.scaledLinear())
    }

    func testConfigDefaultsAndRoundTrip() throws {
        let empty = try SchedulerConfig(diffusersJSON: Data("{}".utf8), source: "empty")
        XCTAssertEqual(empty, .sd21)
        XCTAssertNil(empty.timestepSpacing)
        var base = SchedulerConfig.sd21
        base.predictionType = .epsilon
        XCTAssertEqual(try SchedulerConfig(diffusersJSON: Data("{}".utf8), source: "empty", defaults: base).predictionType, .epsilon)
        let nulls = try SchedulerConfig(diffusersJSON: Data(#"{"prediction_type": null, "trained_betas": null, "timestep_spacing": null}"#.utf8), source: "nulls")
        XCTAssertEqual(nulls, .sd21)

        var c = SchedulerConfig()
        c.predictionType = .epsilon
        c.betaSchedule = .linear
        c.betaStart = 0.0001
        c.betaEnd = 0.02
        c.trainTimesteps = 500
        c.stepsOffset = 0
        c.setAlphaToOne = true
        c.timestepSpacing = .trailing
        c.skipPrkSteps = true
        c.className = "PNDMScheduler"
        let back = try SchedulerConfig(diffusersJSON: c.diffusersJSON(), source: "round trip")
        XCTAssertEqual(back, c)
        XCTAssertEqual(try SchedulerConfig(diffusersJSON: c.diffusersJSON(className: "EulerDiscreteScheduler"), source: "rt").className,
                       "EulerDiscreteScheduler")
        XCTAssertEqual(try SchedulerConfig(diffusersJSON: SchedulerConfig.sd21.diffusersJSON(), source: "rt").className, "DDIMScheduler")
        let linear = try c.noiseSchedule()
        XCTAssertEqual(linear.betas.count, 500)
        XCTAssertEqual(linear.betas[0], 0.0001)
        XCTAssertEqual(linear.betas[499], 0.02, accuracy: 1e-15)
        var cos = SchedulerConfig.sd21
        cos.betaSchedule = .squaredcosCapV2
        let cosine = try cos.noiseSchedule()
        XCTAssertEqual(cosine.betas.last, 0.999)
        XCTAssertGreaterThan(cosine.alphasCumprod.last ?? 0, 0)
    }

    func testRejectsBadConfigs() throws {
        let cases: [(String, String)] = [
            ("not json", "not valid JSON"),
            ("[1, 2]", "not a JSON object"),
            (#"{"_class_name": "UNet2DConditionModel"}"#, "not a diffusers scheduler"),
            (#"{"_class_name": 3}"#, "_class_name must be a string"),
            (#"{"steps_offset": "one"}"#, "steps_offset must be an integer"),
            (#"{"steps_offset": 1.5}"#, "steps_offset must be an integer"),
            (#"{"steps_offset": true}"#, "steps_offset must be an integer"),
            (#"{"steps_offset": -1}"#, "steps_offset -1"),
            (#"{"steps_offset": 1000}"#, "steps_offset 1000"),
            (#"{"num_train_timesteps": 1}"#, "num_train_timesteps 1"),
            (#"{"num_train_timesteps": 1000.5}"#, "num_train_timesteps must be an integer"),
            (#"{"set_alpha_to_one": 1}"#, "set_alpha_to_one must be true or false"),
            (#"{"set_alpha_to_one": "false"}"#, "set_alpha_to_one must be true or false"),
            (#"{"beta_start": "0.00085"}"#, "beta_start must be a finite number"),
            (#"{"beta_end": false}"#, "beta_end must be a finite number"),
            (#"{"beta_start": -0.1}"#, "must not be negative"),
            (#"{"beta_schedule": "linear", "beta_end": 1.5}"#, "betas outside (0, 1)"),
            (#"{"beta_schedule": "cosine"}"#, "unsupported beta_schedule 'cosine'"),
            (#"{"prediction_type": "sample"}"#, "unsupported prediction_type 'sample'"),
            (#"{"prediction_type": 1}"#, "prediction_type must be a string"),
            (#"{"timestep_spacing": "uniform"}"#, "unsupported timestep_spacing 'uniform'"),
            (#"{"trained_betas": [0.1, 0.2]}"#, "unsupported trained_betas"),
            (#"{"thresholding": true}"#, "unsupported thresholding"),
            (#"{"rescale_betas_zero_snr": true}"#, "unsupported rescale_betas_zero_snr"),
            (#"{"use_karras_sigmas": true}"#, "unsupported use_karras_sigmas"),
            (#"{"interpolation_type": "log_linear"}"#, "unsupported interpolation_type"),
            (#"{"final_sigmas_type": "sigma_min"}"#, "unsupported final_sigmas_type"),
            (#"{"timestep_type": "continuous"}"#, "unsupported timestep_type"),
        ]
        for (json, message) in cases {
            XCTAssertThrowsError(try SchedulerConfig(diffusersJSON: Data(json.utf8), source: "bad.json"), json) { error in
                guard case SchedulerError.invalidConfig(let file, let what)? = error as? SchedulerError else {
                    return XCTFail("\(json): \(error)")
                }
                XCTAssertEqual(file, "bad.json")
                XCTAssertTrue(what.contains(message), "\(json): '\(what)' does not say '\(message)'")
            }
        }
        XCTAssertThrowsError(try SchedulerConfig(contentsOfFile: "/nonexistent/scheduler_config.json")) {
            guard case SchedulerError.invalidConfig(let f, _)? = $0 as? SchedulerError else { return XCTFail("\($0)") }
            XCTAssertEqual(f, "/nonexistent/scheduler_config.json")
        }
        // Values that diffusers' defaults accept are fine: use_karras_sigmas false, interpolation linear.
        XCTAssertNoThrow(try SchedulerConfig(diffusersJSON: Data(#"{"use_karras_sigmas": false, "interpolation_type": "linear", "sigma_min": null}"#.utf8), source: "ok"))
    }
}
