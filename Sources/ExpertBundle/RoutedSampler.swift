import Experts
import Foundation
import StableDiffusion
import TensorCore

/// Classifier-free-guided sampling (`Sampler`) with temporal experts: at each scheduler timestep
/// the expert that the routing table gives for it runs, with the units it skips not computed at
/// all; the unconditional and conditional halves of the guidance batch share that expert
/// (ALTER.md section 7). With a plain model every call is dense.
///
/// ```swift
/// let sampler = try RoutedSampler(bundle: ExpertBundle(path: "model.alter"))
/// var options = RoutedSampler.Options(scheduler: try SchedulerKind(.pndm, steps: 20))
/// options.seed = 1
/// let result = try sampler.sample(context: context, uncond: uncond, options: options)
/// // result.latents [B, 4, h, w]; result.calls: timestep, expert, seconds, MACs of each UNet call
/// ```
public final class RoutedSampler {
    /// Where the experts come from.
    public enum Experts {
        /// A plain model: every call dense.
        case dense
        /// A bundle's experts and routing table.
        case bundle(ExpertBundle)
        /// In-memory decisions (what a bundle exported from them would do).
        case decisions(ExpertDecisions)
    }

    /// The sampling settings of one run.
    public struct Options: Sendable {
        /// The sampler and its step count.
        public var scheduler: SchedulerKind
        /// The guidance scale g (1: no unconditional half).
        public var guidance: Float = 7.5
        /// Seed of the initial Gaussian noise.
        public var seed: UInt64 = 0
        /// Latent height and width; nil: the bundle's MAC latent size, or the model's sample_size
        /// (or the size of `noise` when it is given).
        public var latentHeight: Int?
        public var latentWidth: Int?
        /// Standard normal noise [B, C, h, w] to start from instead of noise drawn from `seed`
        /// (diffusers' `latents` argument: it is still multiplied by the scheduler's
        /// init_noise_sigma). B must be the context's batch; `latentHeight`/`latentWidth`, when
        /// given, must be its h and w.
        public var noise: Tensor?
        public init(scheduler: SchedulerKind) { self.scheduler = scheduler }
    }

    /// The UNet that runs every call (for a bundle: all stored tensors).
    public let unet: UNet
    public let experts: Experts
    /// The noise schedule and prediction type the schedulers are built with.
    public let schedulerConfig: SchedulerConfig
    /// Remarks for the user (for example a bundle whose scheduler config names another prediction
    /// type than the bundle's); the library never prints.
    public let notes: [String]
    /// Skipped units per expert.
    private let skipSets: [Set<String>]

    /// Samples with a bundle's experts: loads every stored tensor (`bundle.unet()`, unless `unet`
    /// is given: it must have the bundle's architecture and hold every unit some expert keeps) and
    /// builds the schedulers from `bundle.schedulerConfig()` with the bundle's `prediction_type`
    /// (the one its model was trained with; a differing `prediction_type` in the scheduler config is
    /// overridden and reported in `notes`).
    public init(bundle: ExpertBundle, unet: UNet? = nil) throws(BundleError) {
        if let unet { self.unet = unet } else { self.unet = try bundle.unet() }
        guard self.unet.config.units() == bundle.config.units() else {
            throw BundleError(bundle.path, "the UNet given has another architecture than the bundle")
        }
        var config = try bundle.schedulerConfig()
        var notes: [String] = []
        if config.predictionType != bundle.predictionType {
            notes.append("\(bundle.path)/bundle.json: the scheduler config says prediction_type \(config.predictionType.rawValue), "
                         + "the bundle's model predicts \(bundle.predictionType.rawValue); sampling with \(bundle.predictionType.rawValue)")
            config.predictionType = bundle.predictionType
        }
        schedulerConfig = config
        self.notes = notes
        experts = .bundle(bundle)
        skipSets = bundle.experts.indices.map { bundle.skippedUnits(expert: $0) }
    }

    /// Samples with a plain model, every call dense.
    public init(unet: UNet, schedulerConfig: SchedulerConfig) {
        self.unet = unet
        self.schedulerConfig = schedulerConfig
        experts = .dense
        notes = []
        skipSets = []
    }

    /// Samples with `unet` and in-memory decisions, routed as a bundle exported from them would be
    /// (nearest training timestep, clamped).
    public init(unet: UNet, decisions: ExpertDecisions, schedulerConfig: SchedulerConfig) throws(SamplingError) {
        guard decisions.units == unet.config.units().map(\.name) else {
            throw .routing("the decisions' units do not match the UNet's architecture")
        }
        do { try decisions.validate() } catch { throw .routing("decisions: \(error)") }
        self.unet = unet
        self.schedulerConfig = schedulerConfig
        experts = .decisions(decisions)
        notes = []
        skipSets = decisions.skipSets
    }

    /// The default latent size: the bundle's MAC latent size, else the model's sample_size.
    public var defaultLatentSize: (height: Int, width: Int) {
        if case .bundle(let b) = experts { return (b.manifest.macs.latentHeight, b.manifest.macs.latentWidth) }
        return (unet.config.sampleSize, unet.config.sampleSize)
    }

    /// The expert and skip set for a sampler timestep (dense for a plain model).
    public func route(forSamplerTimestep t: Float) throws(SamplingError) -> Sampler.Route {
        switch experts {
        case .dense:
            return .dense
        case .bundle(let b):
            let e: Int
            do { e = try b.expert(forSamplerTimestep: t) } catch { throw .routing(error.description) }
            return Sampler.Route(expert: e, skip: skipSets[e])
        case .decisions(let d):
            let e = d.expert(forSamplerTimestep: t)
            return Sampler.Route(expert: e, skip: skipSets[e])
        }
    }

    /// A fresh scheduler of `kind` with this sampler's config.
    public func makeScheduler(_ kind: SchedulerKind) throws(SamplingError) -> any Scheduler {
        do { return try kind.makeScheduler(config: schedulerConfig) } catch { throw .scheduler(error) }
    }

    /// Standard normal noise of `shape` from `seed` (SplitMix64, Box-Muller; the same values on
    /// every machine, not those of torch.randn). The shape's sizes must be checked already
    /// (`LatentSize`); a negative dimension is a programmer error.
    public static func noise(seed: UInt64, shape: [Int]) -> Tensor {
        precondition(shape.allSatisfy { $0 >= 0 }, "RoutedSampler.noise: negative dimension in \(shape)")
        var rng = SeededGenerator(seed: seed)
        return Tensor(shape: shape, values: rng.normals(Tensor.count(of: shape)))
    }

    /// One sampling run: noise [B, C, h, w] from `options.seed` (or `options.noise`), then `Sampler.sample` with this
    /// sampler's routing. `context` is [B, S, D]; `uncond` is [S, D] or [B, S, D] (nil: zeros).
    public func sample(context: Tensor, uncond: Tensor?, options: Options,
                       progress: (Sampler.Call, Int) -> Void = { _, _ in }) throws(SamplingError) -> Sampler.Result {
        var session = try self.session(context: context, uncond: uncond, options: options)
        while !session.isFinished { progress(try session.step(), session.callCount) }
        return session.result
    }

    /// The same run as `sample`, one UNet call per `step()`. The latent size and the context
    /// length are checked (`LatentSize`: errors name `latent_height`, `latent_width` or
    /// `context_length`) before the noise is drawn; given noise (`options.noise`) must be finite.
    public func session(context: Tensor, uncond: Tensor?, options: Options) throws(SamplingError) -> Sampler.Session {
        let (dh, dw) = defaultLatentSize
        var h = options.latentHeight ?? dh, w = options.latentWidth ?? dw
        if let given = options.noise {
            guard given.rank == 4 else {
                throw .input(file: "", tensor: "noise", "has shape \(given.shape), expected [B, \(unet.config.inChannels), h, w]")
            }
            let (gh, gw) = (given.shape[2], given.shape[3])
            guard (options.latentHeight ?? gh) == gh, (options.latentWidth ?? gw) == gw else {
                throw .input(file: "", tensor: "noise", "is \(gh)x\(gw), the latent size asked for is \(h)x\(w)")
            }
            if let i = (0..<given.count).first(where: { !given.data[$0].isFinite }) {
                throw .input(file: "", tensor: "noise", "holds a non-finite value (\(given.data[i])) at element \(i)")
            }
            (h, w) = (gh, gw)
        }
        guard context.rank == 3, context.shape[0] >= 1 else {
            throw .input(file: "", tensor: "context", "has shape \(context.shape), expected [B, S, \(unet.config.crossAttentionDim)]")
        }
        do { _ = try LatentSize(height: h, width: w, contextLength: context.shape[1], config: unet.config) } catch {
            throw .input(file: "", tensor: error.field == "context_length" ? "context" : "noise", error.description)
        }
        let noise = options.noise ?? Self.noise(seed: options.seed, shape: [context.shape[0], unet.config.inChannels, h, w])
        let scheduler = try makeScheduler(options.scheduler)
        return try Sampler.Session(unet: unet, scheduler: scheduler, noise: noise, context: context, uncond: uncond, guidance: options.guidance,
                                   route: { [self] (t: Float) throws(SamplingError) -> Sampler.Route in try self.route(forSamplerTimestep: t) })
    }
}
