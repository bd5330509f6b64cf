/// A problem with a sampler: its description string, its configuration, or how it is driven.
public enum SchedulerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A `--schedule` string that is not `ddim:N`, `pndm:N` or `euler:N`.
    case invalidSchedule(String, reason: String)
    /// A bad `scheduler_config.json` (or config value): the file and what is wrong.
    case invalidConfig(file: String, String)
    /// A setting the samplers do not implement (for example DDIM with `clip_sample` true).
    case unsupported(String)
    /// A step count outside 1...trainTimesteps.
    case invalidStepCount(Int, trainTimesteps: Int)
    /// The timestep rule produced a timestep outside 0..<trainTimesteps (diffusers would index
    /// `alphas_cumprod` out of range, or wrap around to the end of it).
    case timestepOutOfRange(scheduler: String, steps: Int, spacing: String, timestep: Double, trainTimesteps: Int)
    /// `step`/`scaleModelInput` was given another timestep than the scheduler's next one.
    case unexpectedTimestep(index: Int, expected: Float, got: Float)
    /// `step`/`scaleModelInput` called after the last timestep.
    case finished(modelCalls: Int)
    /// A tensor whose shape does not match the sample's.
    case shapeMismatch(String, expected: [Int], got: [Int])

    public var description: String {
        switch self {
        case .invalidSchedule(let s, let why):
            return "invalid schedule '\(s)': \(why) (expected ddim:STEPS, pndm:STEPS or euler:STEPS, e.g. pndm:20)"
        case .invalidConfig(let f, let s): return "\(f): invalid scheduler config: \(s)"
        case .unsupported(let s): return "unsupported scheduler setting: \(s)"
        case .invalidStepCount(let n, let t): return "\(n) inference steps: must be between 1 and \(t) (the training timesteps)"
        case .timestepOutOfRange(let k, let n, let sp, let t, let tt):
            return "\(k) with \(n) steps and timestep_spacing '\(sp)' gives timestep \(t), outside 0..<\(tt) "
                + "(diffusers would misbehave here too); choose another step count or spacing"
        case .unexpectedTimestep(let i, let e, let g):
            return "sampling step \(i): timestep \(g) given, the scheduler's next timestep is \(e)"
        case .finished(let n): return "the scheduler has already made all of its \(n) steps"
        case .shapeMismatch(let what, let e, let g): return "\(what) has shape \(g), expected \(e)"
        }
    }
}
