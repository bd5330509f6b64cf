import Experts
import Foundation
import StableDiffusion

extension ExpertBundle {
    /// One UNet call of a sampler schedule.
    public struct ScheduledCall: Encodable, Sendable {
        /// The timestep the UNet receives (fractional for Euler).
        public var timestep: Float
        /// The training timestep it is routed by: the nearest integer, clamped to 0 ..< T.
        public var routedTimestep: Int
        public var expert: Int
        /// MACs of this call per sample at the bundle's MAC latent size.
        public var macs: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case timestep, routedTimestep = "routed_timestep", expert, macs
        }
    }

    /// The training timestep a (possibly fractional) sampler timestep is routed by.
    public func routedTimestep(_ t: Float) -> Int {
        RoutingTable.trainingTimestep(forSamplerTimestep: t, count: manifest.routing.count)
    }

    /// The expert for a sampler timestep (see `routedTimestep`).
    public func expert(forSamplerTimestep t: Float) throws(BundleError) -> Int {
        try expert(forTimestep: routedTimestep(t))
    }

    /// The bundle's scheduler config (bundle.json `scheduler`), with its prediction type.
    public func schedulerConfig() throws(BundleError) -> SchedulerConfig {
        var defaults = SchedulerConfig.sd21
        defaults.predictionType = predictionType
        do { return try SchedulerConfig(diffusersJSON: manifest.scheduler.data(), source: path + "/bundle.json (scheduler)", defaults: defaults) } catch {
            throw BundleError(path + "/bundle.json", "scheduler: \(error)")
        }
    }

    /// Which expert runs at each UNet call of `kind` (e.g. pndm:20 makes 21 calls) and its MACs.
    public func schedule(_ kind: SchedulerKind) throws(BundleError) -> [ScheduledCall] {
        let scheduler: any Scheduler
        do { scheduler = try kind.makeScheduler(config: try schedulerConfig()) } catch let e as BundleError { throw e } catch {
            throw BundleError(path, "schedule \(kind): \(error)")
        }
        var calls: [ScheduledCall] = []
        for t in scheduler.timesteps {
            let e = try expert(forSamplerTimestep: t)
            calls.append(ScheduledCall(timestep: t, routedTimestep: routedTimestep(t), expert: e, macs: manifest.macs.experts[e]))
        }
        return calls
    }
}
