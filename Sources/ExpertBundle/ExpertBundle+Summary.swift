import Foundation
import StableDiffusion

extension ExpertBundle {
    /// A short description of a bundle manifest.
    public struct Summary: Encodable, Sendable {
        public var experts: Int
        public var units: Int
        public var weightBytes: Int
        public var denseMACs: Int
        public var expertMACs: [Int]
        public var keptFraction: Double
        public var latent: [Int]
        public var contextLength: Int

        /// The summary of `m`; the weight bytes are summed with checked arithmetic (an error names
        /// `files[].bytes` when they do not fit in an `Int`).
        public init(_ m: BundleManifest) throws(SizeError) {
            experts = m.experts.count
            units = m.units.count
            weightBytes = try Bounds.sum(m.files.map(\.bytes), field: "files[].bytes")
            denseMACs = m.macs.dense
            expertMACs = m.macs.experts
            keptFraction = m.macs.keptFraction
            latent = [m.macs.latentHeight, m.macs.latentWidth]
            contextLength = m.macs.contextLength
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case experts = "expert_count", units = "unit_count", weightBytes = "weight_bytes", denseMACs = "dense_macs"
            case expertMACs = "expert_macs", keptFraction = "kept_mac_fraction", latent, contextLength = "context_length"
        }
    }
}
