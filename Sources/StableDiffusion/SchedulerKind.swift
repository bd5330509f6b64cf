/// A sampler and its step count, written `ddim:50`, `pndm:20` or `euler:30` (the `--schedule`
/// option of `alter sample` and `alter inspect`).
public struct SchedulerKind: Hashable, Sendable, CustomStringConvertible {
    /// The sampling method.
    public enum Method: String, Hashable, Sendable, CaseIterable {
        /// `DDIMScheduler`, eta 0.
        case ddim
        /// `PNDMScheduler` with skip_prk_steps (PLMS): steps + 1 model calls.
        case pndm
        /// `EulerDiscreteScheduler`.
        case euler
    }

    /// The sampling method.
    public let method: Method
    /// The number of inference steps (diffusers' `num_inference_steps`).
    public let steps: Int

    /// A method with a step count of at least 1.
    /// - Throws: `SchedulerError.invalidStepCount` for fewer than 1 step.
    public init(_ method: Method, steps: Int) throws(SchedulerError) {
        guard steps >= 1 else { throw .invalidStepCount(steps, trainTimesteps: SchedulerConfig.sd21.trainTimesteps) }
        self.method = method
        self.steps = steps
    }

    /// Parses `METHOD:STEPS`: METHOD is ddim, pndm or euler (any letter case), STEPS a positive
    /// decimal integer; no spaces.
    /// - Throws: `SchedulerError.invalidSchedule` saying what is wrong.
    public init(parsing text: String) throws(SchedulerError) {
        func bad(_ why: String) -> SchedulerError { .invalidSchedule(text, reason: why) }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw bad(parts.count < 2 ? "no ':' between the method and the step count" : "more than one ':'")
        }
        let name = parts[0].lowercased()
        guard let method = Method(rawValue: name) else {
            throw bad(name.isEmpty ? "no method" : "unknown method '\(parts[0])'")
        }
        let digits = parts[1]
        guard !digits.isEmpty else { throw bad("no step count") }
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { throw bad("step count '\(digits)' is not a positive integer") }
        guard let steps = Int(digits) else { throw bad("step count '\(digits)' is too large") }
        guard steps >= 1 else { throw bad("step count must be at least 1") }
        self.method = method
        self.steps = steps
    }

    /// DDIM with 50 steps (the dense reference of the paper).
    public static let ddim50 = SchedulerKind(unchecked: .ddim, steps: 50)
    /// PNDM with 20 steps (21 UNet calls; the paper's ALTER sampler).
    public static let pndm20 = SchedulerKind(unchecked: .pndm, steps: 20)

    private init(unchecked method: Method, steps: Int) {
        self.method = method
        self.steps = steps
    }

    /// `METHOD:STEPS`, which `init(parsing:)` reads back.
    public var description: String { "\(method.rawValue):\(steps)" }

    /// The number of UNet calls of a run: PNDM calls the model once more than its step count
    /// (the second timestep is evaluated twice), except for a single step.
    public var modelCalls: Int { method == .pndm && steps > 1 ? steps + 1 : steps }

    /// The scheduler, set up for `steps` steps with `config`'s noise schedule and prediction type.
    /// - Throws: a `SchedulerError` when the config or the step count does not allow it.
    public func makeScheduler(config: SchedulerConfig = .sd21) throws(SchedulerError) -> any Scheduler {
        switch method {
        case .ddim: return try DDIMScheduler(config: config, steps: steps)
        case .pndm: return try PNDMScheduler(config: config, steps: steps)
        case .euler: return try EulerDiscreteScheduler(config: config, steps: steps)
        }
    }
}
