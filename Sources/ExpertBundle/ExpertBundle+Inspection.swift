import Experts
import Foundation
import StableDiffusion

extension ExpertBundle {
    /// `alter inspect NAME.alter --json` (formats/cli-json.md): the summary, every expert, and
    /// optionally one expert's manifest and a sampler schedule.
    public struct Inspection: Encodable, Sendable {
        public struct ExpertRow: Encodable, Sendable {
            public var expert: Int
            /// Served training timesteps as inclusive ranges [first, last].
            public var timesteps: [[Int]]
            public var timestepCount: Int
            public var keptUnits: [String]
            public var skippedUnits: [String]
            public var macs: Int
            public var keptMACFraction: Double
            /// Contiguous segments of the routing table this expert serves (`RoutingTable.segments`).
            public var routingSegments: Int

            enum CodingKeys: String, CodingKey, CaseIterable {
                case expert, timesteps, timestepCount = "timestep_count", keptUnits = "kept_units", skippedUnits = "skipped_units"
                case keptUnitCount = "kept_unit_count", skippedUnitCount = "skipped_unit_count", macs, keptMACFraction = "kept_mac_fraction"
                case routingSegments = "routing_segment_count"
            }

            public func encode(to encoder: Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(expert, forKey: .expert)
                try c.encode(timesteps, forKey: .timesteps)
                try c.encode(timestepCount, forKey: .timestepCount)
                try c.encode(keptUnits, forKey: .keptUnits)
                try c.encode(skippedUnits, forKey: .skippedUnits)
                try c.encode(keptUnits.count, forKey: .keptUnitCount)
                try c.encode(skippedUnits.count, forKey: .skippedUnitCount)
                try c.encode(macs, forKey: .macs)
                try c.encode(keptMACFraction, forKey: .keptMACFraction)
                try c.encode(routingSegments, forKey: .routingSegments)
            }
        }

        /// The UNet calls of one sampler schedule and their MACs against the dense model.
        public struct Schedule: Encodable, Sendable {
            public var schedule: String
            public var calls: [ScheduledCall]
            /// MACs of all calls per sample.
            public var macs: Int
            /// MACs of as many dense calls.
            public var denseMACs: Int
            public var keptMACFraction: Double

            enum CodingKeys: String, CodingKey, CaseIterable {
                case schedule, calls, macs, denseMACs = "dense_macs", keptMACFraction = "kept_mac_fraction"
            }
        }

        public var path: String
        public var summary: Summary
        public var predictionType: String
        public var formatVersion: Int
        public var experts: [ExpertRow]
        /// The manifest of the expert asked for.
        public var expertManifest: ExpertManifest?
        public var schedule: Schedule?
        /// Units no expert keeps (not stored).
        public var absentUnits: [String]
        /// Contiguous segments of the routing table: maximal runs of consecutive training
        /// timesteps served by one expert (`RoutingTable.segments`, summed over the experts).
        public var routingSegments: Int
        /// The pipeline components the bundle carries (absent when none).
        public var components: ComponentsInspection?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case path, summary, predictionType = "prediction_type", formatVersion = "format_version", experts
            case expertManifest = "expert_manifest", schedule, absentUnits = "absent_units", routingSegments = "routing_segment_count"
            case components
        }
    }

    /// The inspection of this bundle; with `expert`, its manifest; with `schedule`, the expert and
    /// MACs of every UNet call of that sampler.
    public func inspection(expert: Int? = nil, schedule kind: SchedulerKind? = nil) throws(BundleError) -> Inspection {
        if let expert, !experts.indices.contains(expert) {
            throw BundleError(path, "expert \(expert) does not exist (the bundle has experts 0..<\(experts.count))")
        }
        let segments = RoutingTable.segments(manifest.routing, experts: experts.count)
        let rows = experts.map {
            Inspection.ExpertRow(expert: $0.expert, timesteps: $0.timesteps, timestepCount: $0.timestepCount, keptUnits: $0.keptUnits,
                                 skippedUnits: $0.skippedUnits, macs: $0.macs, keptMACFraction: $0.keptFraction,
                                 routingSegments: segments.indices.contains($0.expert) ? segments[$0.expert] : 0)
        }
        var report: Inspection.Schedule?
        if let kind {
            let calls = try schedule(kind)
            let total: Int, dense: Int
            do {
                total = try Bounds.sum(calls.map(\.macs), field: "macs.experts")
                dense = try Bounds.product(calls.count, manifest.macs.dense, field: "macs.dense")
            } catch { throw BundleError(path + "/bundle.json", "schedule \(kind): \(error)") }
            report = .init(schedule: kind.description, calls: calls, macs: total, denseMACs: dense,
                           keptMACFraction: Double(total) / Double(max(dense, 1)))
        }
        let summary: Summary
        do { summary = try Summary(manifest) } catch { throw BundleError(path + "/bundle.json", error.description) }
        return Inspection(path: path, summary: summary, predictionType: manifest.predictionType, formatVersion: manifest.formatVersion,
                          experts: rows, expertManifest: expert.map { experts[$0] }, schedule: report, absentUnits: manifest.units.filter(absentUnits.contains),
                          routingSegments: segments.reduce(0, +),
                          components: try componentsInspection())
    }
}
