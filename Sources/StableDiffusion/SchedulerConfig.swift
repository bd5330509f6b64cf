import Foundation
import SafeTensors

/// The settings of a diffusers scheduler that the samplers use (diffusers' `scheduler_config.json`
/// field names). Missing fields take the values of Stable Diffusion 2.1 (768-v) unless other
/// defaults are given; `timestepSpacing` left unset means each scheduler's diffusers default
/// (DDIM and PNDM: `leading`, Euler: `linspace`), as when diffusers builds a scheduler from a
/// config that lacks the field.
public struct SchedulerConfig: Sendable, Equatable {
    /// How betas are spread over the training timesteps (`beta_schedule`).
    public enum BetaSchedule: String, Sendable, CaseIterable {
        /// betas = linspace(beta_start, beta_end, T).
        case linear
        /// betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (Stable Diffusion).
        case scaledLinear = "scaled_linear"
        /// The cosine schedule (`betas_for_alpha_bar`, max beta 0.999); beta_start/end unused.
        case squaredcosCapV2 = "squaredcos_cap_v2"
    }

    /// How inference timesteps are picked from the training timesteps (`timestep_spacing`).
    public enum TimestepSpacing: String, Sendable, CaseIterable {
        /// (0..<N) * (T / N) + steps_offset, integer division (diffusers' DDIM/PNDM default).
        case leading
        /// round(arange(T, 0, -T/N)) - 1.
        case trailing
        /// round(linspace(0, T - 1, N)) (Euler: not rounded; Euler's default).
        case linspace
    }

    /// `prediction_type`: what the model predicts (SD2.1 768-v: v_prediction; SD2.1 base and SD1.x: epsilon).
    public var predictionType: NoiseSchedule.PredictionType = .vPrediction
    /// `beta_start` (SD: 0.00085).
    public var betaStart: Double = 0.00085
    /// `beta_end` (SD: 0.012).
    public var betaEnd: Double = 0.012
    /// `beta_schedule` (SD: scaled_linear).
    public var betaSchedule: BetaSchedule = .scaledLinear
    /// `num_train_timesteps` (SD: 1000).
    public var trainTimesteps: Int = 1000
    /// `steps_offset`, added to `leading` timesteps (SD: 1).
    public var stepsOffset: Int = 1
    /// `set_alpha_to_one`: whether the step after timestep 0 has alphaBar 1 (true) or alphaBar_0 (SD: false).
    public var setAlphaToOne: Bool = false
    /// `timestep_spacing`; nil: the scheduler's own diffusers default.
    public var timestepSpacing: TimestepSpacing? = nil
    /// `skip_prk_steps` (PNDM; SD: true). PNDM requires true (PLMS only).
    public var skipPrkSteps: Bool = true
    /// `clip_sample` (DDIM; SD: false). DDIM requires false.
    public var clipSample: Bool = false
    /// `_class_name` of the file, if any (informational: any scheduler can be built from any config).
    public var className: String? = nil

    /// Stable Diffusion 2.1 (768-v): v_prediction, scaled_linear 0.00085..0.012, 1000 timesteps,
    /// steps_offset 1, set_alpha_to_one false, skip_prk_steps true, clip_sample false.
    public init() {}


    /// The Stable Diffusion 2.1 (768-v) scheduler settings (`SchedulerConfig()`).
    public static let sd21 = SchedulerConfig()

    /// Settings no sampler here implements, with the value that is supported (diffusers' default).
    private static let unsupported: [(key: String, ok: @Sendable (Any) -> Bool, supported: String)] = [
        ("trained_betas", { $0 is NSNull }, "null"),
        ("rescale_betas_zero_snr", { ($0 as? Bool) == false }, "false"),
        ("thresholding", { ($0 as? Bool) == false }, "false"),
        ("use_karras_sigmas", { $0 is NSNull || ($0 as? Bool) == false }, "false"),
        ("use_exponential_sigmas", { $0 is NSNull || ($0 as? Bool) == false }, "false"),
        ("use_beta_sigmas", { $0 is NSNull || ($0 as? Bool) == false }, "false"),
        ("interpolation_type", { ($0 as? String) == "linear" }, "linear"),
        ("final_sigmas_type", { ($0 as? String) == "zero" }, "zero"),
        ("timestep_type", { ($0 as? String) == "discrete" }, "discrete"),
    ]

    /// Parses a diffusers `scheduler_config.json`. Fields that are missing (or null) take their
    /// value from `defaults`; fields the samplers do not implement must have their default value.
    /// - Throws: `SchedulerError.invalidConfig` naming `source` and the field.
    public init(diffusersJSON data: Data, source: String, defaults: SchedulerConfig = .sd21) throws(SchedulerError) {
        func bad(_ s: String) -> SchedulerError { .invalidConfig(file: source, s) }
        let any: Any
        do { any = try StrictJSON.jsonObject(data, source: source) } catch { throw bad(error.message) }
        guard let o = any as? [String: Any] else { throw bad("not a JSON object") }
        func value(_ k: String) -> Any? {
            guard let v = o[k], !(v is NSNull) else { return nil }
            return v
        }
        // JSON true/false arrive as NSNumber too: tell them apart by their Objective-C type 'c'.
        func isBool(_ v: Any) -> Bool { (v as? NSNumber).map { String(cString: $0.objCType) == "c" } ?? false }
        func int(_ k: String, _ d: Int) throws(SchedulerError) -> Int {
            guard let v = value(k) else { return d }
            guard !isBool(v), let n = v as? Int else { throw bad("\(k) must be an integer, not \(v)") }
            return n
        }
        func bool(_ k: String, _ d: Bool) throws(SchedulerError) -> Bool {
            guard let v = value(k) else { return d }
            guard isBool(v), let b = v as? Bool else { throw bad("\(k) must be true or false, not \(v)") }
            return b
        }
        func double(_ k: String, _ d: Double) throws(SchedulerError) -> Double {
            guard let v = value(k) else { return d }
            guard !isBool(v), let x = v as? Double, x.isFinite else { throw bad("\(k) must be a finite number, not \(v)") }
            return x
        }
        func string(_ k: String) throws(SchedulerError) -> String? {
            guard let v = value(k) else { return nil }
            guard let s = v as? String else { throw bad("\(k) must be a string, not \(v)") }
            return s
        }
        var c = defaults
        if let name = try string("_class_name") {
            guard name.hasSuffix("Scheduler") else { throw bad("_class_name is '\(name)', not a diffusers scheduler") }
            c.className = name
        } else {
            c.className = nil
        }
        for (key, ok, supported) in Self.unsupported {
            if let v = o[key], !ok(v) { throw bad("unsupported \(key) = \(v) (only \(supported) is implemented)") }
        }
        if let p = try string("prediction_type") {
            guard let t = NoiseSchedule.PredictionType(rawValue: p) else {
                throw bad("unsupported prediction_type '\(p)' (epsilon or v_prediction)")
            }
            c.predictionType = t
        }
        if let s = try string("beta_schedule") {
            guard let b = BetaSchedule(rawValue: s) else {
                throw bad("unsupported beta_schedule '\(s)' (\(BetaSchedule.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            c.betaSchedule = b
        }
        if let s = try string("timestep_spacing") {
            guard let t = TimestepSpacing(rawValue: s) else {
                throw bad("unsupported timestep_spacing '\(s)' (\(TimestepSpacing.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            c.timestepSpacing = t
        }
        c.betaStart = try double("beta_start", c.betaStart)
        c.betaEnd = try double("beta_end", c.betaEnd)
        c.trainTimesteps = try int("num_train_timesteps", c.trainTimesteps)
        c.stepsOffset = try int("steps_offset", c.stepsOffset)
        c.setAlphaToOne = try bool("set_alpha_to_one", c.setAlphaToOne)
        c.skipPrkSteps = try bool("skip_prk_steps", c.skipPrkSteps)
        c.clipSample = try bool("clip_sample", c.clipSample)
        try c.validate(source: source)
        self = c
    }

    /// Reads and parses a `scheduler_config.json` file (see `init(diffusersJSON:source:defaults:)`).
    public init(contentsOfFile path: String, defaults: SchedulerConfig = .sd21) throws(SchedulerError) {
        let data: Data
        do { data = try RegularFile.read(path, limit: 64 << 20) } catch { throw .invalidConfig(file: path, "cannot read the file: \(error.reason)") }
        try self.init(diffusersJSON: data, source: path, defaults: defaults)
    }

    /// Checks the values: `Bounds.trainTimesteps` training timesteps, 0 <= steps_offset < T, and a
    /// beta schedule whose betas are finite and lie in (0, 1), with alphaBar > 0 at every timestep.
    /// Every reader of a scheduler config (`sample`, `verify`, the noise schedule) goes through it.
    public func validate(source: String = "scheduler config") throws(SchedulerError) {
        func bad(_ s: String) -> SchedulerError { .invalidConfig(file: source, s) }
        let range = Bounds.trainTimesteps
        guard range.contains(trainTimesteps) else { throw bad("num_train_timesteps \(trainTimesteps) is not in \(range.lowerBound)...\(range.upperBound)") }
        guard (0..<trainTimesteps).contains(stepsOffset) else { throw bad("steps_offset \(stepsOffset) is not in 0..<\(trainTimesteps)") }
        guard betaStart.isFinite, betaEnd.isFinite else { throw bad("beta_start and beta_end must be finite") }
        if betaSchedule != .squaredcosCapV2 {
            guard betaStart >= 0, betaEnd >= 0 else { throw bad("beta_start \(betaStart) and beta_end \(betaEnd) must not be negative") }
        }
        let s = unvalidatedNoiseSchedule()
        guard s.betas.allSatisfy({ $0.isFinite && $0 > 0 && $0 < 1 }) else {
            throw bad("beta_start \(betaStart), beta_end \(betaEnd) (\(betaSchedule.rawValue)) give betas outside (0, 1)")
        }
        guard let last = s.alphasCumprod.last, last > 0, last.isFinite else {
            throw bad("the cumulative alpha product reaches 0: no finite noise level at the last timestep")
        }
    }

    /// The training noise schedule: betas and alphaBar in Double (diffusers computes them in float32).
    public func noiseSchedule() throws(SchedulerError) -> NoiseSchedule {
        try validate()
        return unvalidatedNoiseSchedule()
    }

    func unvalidatedNoiseSchedule() -> NoiseSchedule {
        let n = trainTimesteps
        switch betaSchedule {
        case .linear:
            return NoiseSchedule(betas: (0..<n).map { betaStart + (betaEnd - betaStart) * Double($0) / Double(n - 1) })
        case .scaledLinear:
            return NoiseSchedule.scaledLinear(start: betaStart, end: betaEnd, steps: n)
        case .squaredcosCapV2:
            func alphaBar(_ t: Double) -> Double {
                let c = cos((t + 0.008) / 1.008 * Double.pi / 2)
                return c * c
            }
            return NoiseSchedule(betas: (0..<n).map { i in
                min(1 - alphaBar(Double(i + 1) / Double(n)) / alphaBar(Double(i) / Double(n)), 0.999)
            })
        }
    }

    /// A diffusers `scheduler_config.json` with these settings (`timestep_spacing` only when set),
    /// which diffusers' `from_config` and `init(diffusersJSON:source:defaults:)` read back.
    /// `_class_name` is `className`, else the config's own, else DDIMScheduler (SD2.1's).
    public func diffusersJSON(className: String? = nil, diffusersVersion: String = "0.42.1") -> Data {
        var o: [String: Any] = [
            "_class_name": className ?? self.className ?? "DDIMScheduler",
            "_diffusers_version": diffusersVersion,
            "beta_end": betaEnd,
            "beta_schedule": betaSchedule.rawValue,
            "beta_start": betaStart,
            "clip_sample": clipSample,
            "num_train_timesteps": trainTimesteps,
            "prediction_type": predictionType.rawValue,
            "set_alpha_to_one": setAlphaToOne,
            "skip_prk_steps": skipPrkSteps,
            "steps_offset": stepsOffset,
            "trained_betas": NSNull(),
        ]
        if let t = timestepSpacing { o["timestep_spacing"] = t.rawValue }
        return (try? JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
    }
}
