import Dispatch
import SafeTensors
import TensorCore

/// Something that keeps a sampling run from starting or going on: a bad input shape, a scheduler
/// misuse, a routing table that names no expert, a skip set the UNet cannot run.
public enum SamplingError: Error, CustomStringConvertible, Sendable, Equatable {
    /// An input tensor that does not fit the model: the file (or "" for an in-memory tensor),
    /// the tensor's name and what is wrong.
    case input(file: String, tensor: String?, String)
    /// The scheduler refused a setting or a step.
    case scheduler(SchedulerError)
    /// The routing could not give an expert for a timestep, or the UNet cannot run its skip set.
    case routing(String)

    public var description: String {
        switch self {
        case .input(let f, let t, let s):
            guard let t else { return "\(f): \(s)" }
            return f.isEmpty ? "\(t): \(s)" : "\(f): tensor '\(t)': \(s)"
        case .scheduler(let e): return "\(e)"
        case .routing(let s): return s
        }
    }
}

/// The denoising loop of diffusers' `StableDiffusionPipeline` with classifier-free guidance, for a
/// dense UNet or for temporal experts (a skip set per timestep).
///
/// At every scheduler timestep t: x_in = scaleModelInput(x, t); one UNet call on the batch
/// [x_in, x_in] (2B samples) with the contexts [uncond x B, context] (unconditional half first, as
/// diffusers concatenates them), both halves at t and with the same skip set; the output is split
/// into u (first B) and c (last B) and guided = u + g * (c - u) element by element in Float32; then
/// x = step(guided, t, x). With guidance 1 the unconditional half is not computed at all (one call
/// on B samples with the context). The prediction type (epsilon or v) is the scheduler's: it reads
/// the guided output as its config says.
public enum Sampler {
    /// Which expert runs at a timestep and the units it skips (not computed at all).
    public struct Route: Sendable, Equatable {
        /// The expert's index, or nil for the dense model.
        public var expert: Int?
        public var skip: Set<String>
        public init(expert: Int? = nil, skip: Set<String> = []) {
            self.expert = expert
            self.skip = skip
        }
        /// Every unit computed.
        public static let dense = Route()
    }

    /// One UNet call of a run.
    public struct Call: Sendable, Encodable, Equatable {
        /// Position in the run (0 ..< scheduler.timesteps.count).
        public var index: Int
        /// The timestep the UNet received.
        public var timestep: Float
        /// The expert that ran (nil: dense).
        public var expert: Int?
        /// Units not computed.
        public var skippedUnits: Int
        /// Samples in the UNet call (2B with guidance, B without).
        public var batch: Int
        /// MACs of the UNet call per sample at the sampled latent size and context length.
        public var macsPerSample: Int
        /// MACs of the whole call (macsPerSample x batch).
        public var macs: Int
        /// Wall time of the step: input scaling, UNet call, guidance and scheduler step.
        public var seconds: Double

        enum CodingKeys: String, CodingKey, CaseIterable {
            case index, timestep, expert, skippedUnits = "skipped_unit_count", batch, macsPerSample = "macs_per_sample", macs, seconds
        }
    }

    /// The result of a run.
    public struct Result: Sendable {
        /// The final latents [B, C, h, w].
        public var latents: Tensor
        /// Every UNet call, in order.
        public var calls: [Call]
        /// MACs of one dense UNet call per sample at the sampled size.
        public var denseMACsPerSample: Int
        /// Total wall time of the loop.
        public var seconds: Double { calls.reduce(0) { $0 + $1.seconds } }
        /// Total MACs of every UNet call.
        public var macs: Int { calls.reduce(0) { $0 + $1.macs } }
        /// The experts per call (nil entries for dense calls).
        public var experts: [Int?] { calls.map(\.expert) }
    }

    /// Checks `context` [B, S, D], `uncond` ([S, D] or [B, S, D]) and `noise` [B, C, h, w] against
    /// `config`; returns B. `file` names where they came from in errors ("" for in-memory tensors).
    public static func check(config: UNetConfig, noise: Tensor, context: Tensor, uncond: Tensor?, file: String = "") throws(SamplingError) {
        let d = config.crossAttentionDim
        guard context.rank == 3, context.shape.allSatisfy({ $0 > 0 }) else {
            throw .input(file: file, tensor: "context", "has shape \(context.shape), expected [B, S, \(d)]")
        }
        guard context.shape[2] == d else {
            throw .input(file: file, tensor: "context", "has width \(context.shape[2]) (shape \(context.shape)), the model's cross_attention_dim is \(d)")
        }
        let b = context.shape[0], s = context.shape[1]
        if let u = uncond {
            guard u.shape == [s, d] || u.shape == [b, s, d] else {
                throw .input(file: file, tensor: "uncond", "has shape \(u.shape), expected [\(s), \(d)] or [\(b), \(s), \(d)] (the context's tokens and width)")
            }
        }
        let mult = 1 << (config.levels - 1)
        guard noise.rank == 4, noise.shape[0] == b, noise.shape[1] == config.inChannels else {
            throw .input(file: file, tensor: "noise", "has shape \(noise.shape), expected [\(b), \(config.inChannels), h, w]")
        }
        guard noise.shape[2] > 0, noise.shape[3] > 0, noise.shape[2] % mult == 0, noise.shape[3] % mult == 0 else {
            throw .input(file: file, tensor: "noise", "latent size \(noise.shape[2])x\(noise.shape[3]): height and width must be positive multiples of \(mult)")
        }
    }

    /// Samples from `noise` (standard normal, [B, C, h, w]; the initial latent is
    /// `scheduler.initialLatent(noise:)`) with `context` [B, S, D], `uncond` ([S, D] for every
    /// sample, or [B, S, D]; nil: zeros), guidance scale `guidance`, and the route of each
    /// timestep (default: dense). `scheduler` must be fresh (no step made). `progress` receives each
    /// call when it is done and the number of calls of the run.
    public static func sample(
        unet: UNet, scheduler: any Scheduler, noise: Tensor, context: Tensor, uncond: Tensor? = nil, guidance: Float,
        route: @escaping (Float) throws(SamplingError) -> Route = { _ in .dense },
        progress: (Call, Int) -> Void = { _, _ in }
    ) throws(SamplingError) -> Result {
        var session = try Session(unet: unet, scheduler: scheduler, noise: noise, context: context, uncond: uncond, guidance: guidance, route: route)
        while !session.isFinished { progress(try session.step(), session.callCount) }
        return session.result
    }

    /// A sampling run made one UNet call at a time (`sample` drives one to the end): for callers
    /// that interleave runs, stop early, or look at the latent between steps.
    public struct Session {
        public let unet: UNet
        public let guidance: Float
        /// Samples per UNet call (2B with guidance, B without).
        public let batch: Int
        /// The current latent [B, C, h, w] (the final one when finished).
        public private(set) var latent: Tensor
        /// The calls made so far.
        public private(set) var calls: [Call] = []
        private var scheduler: any Scheduler
        private let route: (Float) throws(SamplingError) -> Route
        private let modelContext: Tensor
        private let cost: CostModel
        private var checked: [Set<String>: Int] = [:]  // skip set -> MACs per sample
        private var macsSoFar = 0, denseMACsSoFar = 0  // checked running totals (Result's sums then fit)

        /// Checks the inputs and sets up the run (see `Sampler.sample`).
        public init(unet: UNet, scheduler: any Scheduler, noise: Tensor, context: Tensor, uncond: Tensor? = nil, guidance: Float,
                    route: @escaping (Float) throws(SamplingError) -> Route = { _ in .dense }) throws(SamplingError) {
            try Sampler.check(config: unet.config, noise: noise, context: context, uncond: uncond)
            guard guidance.isFinite else { throw .input(file: "", tensor: "guidance", "must be finite, not \(guidance)") }
            guard scheduler.stepIndex == 0 else {
                throw .scheduler(.unsupported("a scheduler that has already made \(scheduler.stepIndex) steps (pass a fresh one)"))
            }
            let b = context.shape[0], s = context.shape[1], d = context.shape[2]
            self.unet = unet
            self.guidance = guidance
            self.route = route
            self.scheduler = scheduler
            batch = guidance != 1 ? 2 * b : b
            modelContext = guidance != 1 ? concatBatch(broadcast(uncond ?? Tensor(zeros: [s, d]), batch: b), context) : context
            do { cost = try CostModel(config: unet.config, latentHeight: noise.shape[2], latentWidth: noise.shape[3], contextLength: s) } catch {
                throw .input(file: "", tensor: error.field == "context_length" ? "context" : "noise", error.description)
            }
            latent = scheduler.initialLatent(noise: noise)
        }

        /// The number of UNet calls of the whole run.
        public var callCount: Int { scheduler.timesteps.count }
        /// Whether every call has been made.
        public var isFinished: Bool { calls.count >= callCount }
        /// The timestep of the next call (nil when finished).
        public var nextTimestep: Float? { isFinished ? nil : scheduler.timesteps[calls.count] }

        /// Makes the next UNet call and scheduler step. Its `seconds` cover input scaling, the UNet
        /// call, guidance and the scheduler step (not the routing lookup).
        @discardableResult
        public mutating func step() throws(SamplingError) -> Call {
            guard let t = nextTimestep else { throw .scheduler(.finished(modelCalls: callCount)) }
            let r = try route(t)
            var options = UNetForwardOptions()
            options.skip = r.skip
            let macs: Int
            if let m = checked[r.skip] { macs = m } else {
                do { try unet.check(options, batch: batch) } catch {
                    throw .routing("timestep \(t)\(r.expert.map { " (expert \($0))" } ?? ""): \(error)")
                }
                macs = cost.cost(skipping: r.skip).total
                checked[r.skip] = macs
            }
            let callMACs: Int
            do {
                callMACs = try Bounds.product(macs, batch, field: "macs")
                macsSoFar = try Bounds.sum([macsSoFar, callMACs], field: "macs")
                denseMACsSoFar = try Bounds.sum([denseMACsSoFar, Bounds.product(cost.total.total, batch, field: "dense_macs")], field: "dense_macs")
            } catch { throw .input(file: "", tensor: "noise", "the run's \(error) (batch \(batch), \(calls.count + 1) calls)") }
            let start = DispatchTime.now().uptimeNanoseconds
            let input: Tensor
            do { input = try scheduler.scaleModelInput(latent, timestep: t) } catch { throw .scheduler(error) }
            let guided = guidance != 1
            let out = unet.forward(sample: guided ? concatBatch(input, input) : input, timesteps: Array(repeating: t, count: batch),
                                   context: modelContext, options: options).sample
            do { latent = try scheduler.step(modelOutput: guided ? guide(out, guidance) : out, timestep: t, sample: latent) } catch {
                throw .scheduler(error)
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let call = Call(index: calls.count, timestep: t, expert: r.expert, skippedUnits: r.skip.count, batch: batch,
                            macsPerSample: macs, macs: callMACs, seconds: seconds)
            calls.append(call)
            return call
        }

        /// The run so far (the final result when finished).
        public var result: Result { Result(latents: latent, calls: calls, denseMACsPerSample: cost.total.total) }
    }

    /// [a; b] along the batch axis (same trailing shape).
    public static func concatBatch(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(Array(a.shape.dropFirst()) == Array(b.shape.dropFirst()), "concatBatch \(a.shape) \(b.shape)")
        let y = Tensor(uninitialized: [a.shape[0] + b.shape[0]] + a.shape.dropFirst())
        y.data.update(from: a.data, count: a.count)
        (y.data + a.count).update(from: b.data, count: b.count)
        return y
    }

    /// `x` [S, D] repeated `batch` times as [batch, S, D]; a [batch, S, D] tensor as it is.
    static func broadcast(_ x: Tensor, batch: Int) -> Tensor {
        if x.rank == 3 { return x }
        let y = Tensor(uninitialized: [batch] + x.shape)
        for i in 0..<batch { (y.data + i * x.count).update(from: x.data, count: x.count) }
        return y
    }

    /// u + g * (c - u) for the halves u = out[0 ..< N/2], c = out[N/2 ..< N], in Float32.
    public static func guide(_ out: Tensor, _ g: Float) -> Tensor {
        let half = out.shape[0] / 2
        let y = Tensor(uninitialized: [half] + out.shape.dropFirst())
        let n = y.count
        let u = out.data, c = out.data + n, yp = y.data
        for i in 0..<n { yp[i] = u[i] + g * (c[i] - u[i]) }
        return y
    }
}

/// The conditioning of a sampling run, read from safetensors files (`alter sample --context
/// [--uncond]`): `context` [B, S, D] or [S, D], and optionally `uncond` [S, D] (or [1, S, D], or
/// one per context row [N, S, D]). A training-data file (formats/training-data.md) is such a file.
public struct SamplingInputs: Sendable {
    /// [B, S, D].
    public var context: Tensor
    /// [S, D] for every sample or [B, S, D]; nil: zeros (see `Sampler.sample`).
    public var uncond: Tensor?
    /// Where `uncond` came from: "FILE" or nil (zeros).
    public var uncondFile: String?

    public init(context: Tensor, uncond: Tensor?, uncondFile: String? = nil) {
        self.context = context
        self.uncond = uncond
        self.uncondFile = uncondFile
    }

    /// Reads `context` from `contextPath` (only the rows `rows` of a [N, S, D] tensor, if given) and
    /// `uncond` from `uncondPath`, or else from the context file if it holds one. Checks shapes
    /// against `config` (D = cross_attention_dim) and that every value is finite.
    /// - Throws: `SamplingError.input` naming the file and the tensor.
    public static func read(context contextPath: String, uncond uncondPath: String? = nil, rows: [Int]? = nil,
                            config: UNetConfig) throws(SamplingError) -> SamplingInputs {
        let d = config.crossAttentionDim
        let file = try open(contextPath)
        guard let info = file.info("context") else {
            throw .input(file: contextPath, tensor: "context", "not found (the file holds \(file.names.sorted().joined(separator: ", ")))")
        }
        guard info.dtype.isFloatConvertible else { throw .input(file: contextPath, tensor: "context", "is \(info.dtype.rawValue), expected F32, F16 or BF16") }
        let shape3: [Int]
        switch info.shape.count {
        case 2: shape3 = [1] + info.shape
        case 3: shape3 = info.shape
        default: throw .input(file: contextPath, tensor: "context", "has shape \(info.shape), expected [B, S, \(d)] or [S, \(d)]")
        }
        guard shape3.allSatisfy({ $0 > 0 }) else { throw .input(file: contextPath, tensor: "context", "has shape \(info.shape): no dimension may be 0") }
        guard shape3[2] == d else {
            throw .input(file: contextPath, tensor: "context", "has width \(shape3[2]) (shape \(info.shape)); the model's cross_attention_dim is \(d)")
        }
        let (n, s) = (shape3[0], shape3[1])
        let selected = rows ?? Array(0..<n)
        guard !selected.isEmpty else { throw .input(file: contextPath, tensor: "context", "no rows selected") }
        if let bad = selected.first(where: { $0 < 0 || $0 >= n }) {
            throw .input(file: contextPath, tensor: "context", "row \(bad) selected, the tensor has \(n) (0..<\(n))")
        }
        let context = Tensor(shape: [selected.count, s, d], values: try Self.rows(file, info, selected, rowSize: s * d, path: contextPath))

        var uncond: Tensor?, uncondFile: String?
        let source: (file: SafeTensorsFile, path: String)?
        if let uncondPath {
            let f = try open(uncondPath)
            guard f.info("uncond") != nil else {
                throw .input(file: uncondPath, tensor: "uncond", "not found (the file holds \(f.names.sorted().joined(separator: ", ")))")
            }
            source = (f, uncondPath)
        } else {
            source = file.info("uncond") != nil ? (file, contextPath) : nil
        }
        if let (f, path) = source, let u = f.info("uncond") {
            guard u.dtype.isFloatConvertible else { throw .input(file: path, tensor: "uncond", "is \(u.dtype.rawValue), expected F32, F16 or BF16") }
            if u.shape == [s, d] || u.shape == [1, s, d] {
                uncond = Tensor(shape: [s, d], values: try Self.rows(f, u, [0], rowSize: s * d, path: path))
            } else if u.shape == [n, s, d] && n > 1 {
                uncond = Tensor(shape: [selected.count, s, d], values: try Self.rows(f, u, selected, rowSize: s * d, path: path))
            } else {
                throw .input(file: path, tensor: "uncond", "has shape \(u.shape), expected [\(s), \(d)] (the context's tokens and width)"
                             + (n > 1 ? " or [\(n), \(s), \(d)] (one per context row)" : ""))
            }
            uncondFile = path
        }
        return SamplingInputs(context: context, uncond: uncond, uncondFile: uncondFile)
    }

    static func open(_ path: String) throws(SamplingError) -> SafeTensorsFile {
        do { return try SafeTensorsFile(path: path) } catch { throw .input(file: path, tensor: error.tensor, error.message) }
    }

    /// Rows `rows` (each `rowSize` elements) of a float tensor, converted to Float32 and checked finite.
    static func rows(_ file: SafeTensorsFile, _ info: TensorInfo, _ rows: [Int], rowSize: Int, path: String) throws(SamplingError) -> [Float] {
        let bytes = file.rawBytes(info), width = info.dtype.byteSize
        var out = [Float](repeating: 0, count: rows.count * rowSize)
        out.withUnsafeMutableBytes { dst in
            for (k, r) in rows.enumerated() {
                let src = UnsafeRawBufferPointer(rebasing: bytes[(r * rowSize * width)..<((r + 1) * rowSize * width)])
                DTypeConversion.convert(src, from: info.dtype, to: .f32, into: UnsafeMutableRawBufferPointer(rebasing: dst[(k * rowSize * 4)..<((k + 1) * rowSize * 4)]))
            }
        }
        if let i = out.firstIndex(where: { !$0.isFinite }) {
            throw .input(file: path, tensor: info.name, "holds a non-finite value (\(out[i])) in row \(rows[i / rowSize])")
        }
        return out
    }
}
