import StableDiffusion

/// Everything that determines an ALTER run; stored as the run directory's `config.json`.
public struct CompressionConfig: Codable, Sendable, Equatable {
    /// The model (teacher and student initialisation), as given.
    public var model: String
    /// The training-data file, as given.
    public var data: String
    public var settings = ALTERSettings()
    /// Total training iterations.
    public var steps: Int
    /// Iterations with a hypernetwork step (ALTER.md 6); after them the masks are frozen.
    public var hypernetSteps: Int
    public var batch = 1
    public var seed: UInt64 = 0
    /// Write a checkpoint every this many steps (0: only at the end and on interrupt).
    public var checkpointEvery = 0
    public var predictionType = NoiseSchedule.PredictionType.epsilon
    /// Loader options of the model.
    public var ema = false
    public var variant: String?
    public var configPath: String?

    public init(model: String, data: String, steps: Int, hypernetSteps: Int) {
        self.model = model
        self.data = data
        self.steps = steps
        self.hypernetSteps = hypernetSteps
    }

    /// Checks values that do not depend on the model or the data.
    public func validate() throws(CompressionError) {
        guard settings.keep > 0, settings.keep <= 1 else { throw .keepOutOfRange(settings.keep) }
        guard settings.experts >= 1 else { throw .invalid("--experts must be at least 1, got \(settings.experts)") }
        guard settings.experts <= 1000 else { throw .tooManyExperts(settings.experts, timesteps: 1000) }
        guard steps >= 1 else { throw .invalid("--steps must be at least 1, got \(steps)") }
        guard hypernetSteps >= 0, hypernetSteps <= steps else {
            throw .invalid("--hypernet-steps must be between 0 and --steps (\(steps)), got \(hypernetSteps)")
        }
        guard batch >= 1 else { throw .invalid("--batch must be at least 1, got \(batch)") }
        guard settings.temperature > 0 else { throw .invalid("--temperature must be positive") }
        guard settings.learningRateUNet >= 0, settings.learningRateHypernet >= 0 else { throw .invalid("learning rates must not be negative") }
        guard checkpointEvery >= 0 else { throw .invalid("--checkpoint-every must not be negative") }
    }
}

/// A compression request that cannot run; reported before any training starts.
public enum CompressionError: Error, CustomStringConvertible, Equatable {
    case keepOutOfRange(Double)
    case keepBelowFixed(keep: Double, fixed: Double)
    case tooManyExperts(Int, timesteps: Int)
    case invalid(String)
    case data(String)
    case runDirectory(String)

    public var description: String {
        switch self {
        case .keepOutOfRange(let k): return "--keep must be in (0, 1] (the kept fraction of total UNet MACs), got \(k)"
        case .keepBelowFixed(let k, let f):
            return "--keep \(k) is below the MAC fraction that no pruning can remove (\(String(format: "%.4f", f)): convs in/out, samplers, projections); choose a larger --keep"
        case .tooManyExperts(let e, let t): return "--experts \(e) exceeds the \(t) training timesteps; each expert needs at least one timestep"
        case .invalid(let s): return s
        case .data(let s): return s
        case .runDirectory(let s): return s
        }
    }
}
