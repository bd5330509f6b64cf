import ArgumentParser
import ExpertBundle
import Foundation
import StableDiffusion

/// `alter inspect NAME.alter`: experts, routing, MACs; per expert; per sampler schedule.
struct BundleInspection {
    let bundle: ExpertBundle
    let expert: Int?
    let schedule: SchedulerKind?
    let json: Bool

    func run() throws {
        let report: ExpertBundle.Inspection
        do { report = try bundle.inspection(expert: expert, schedule: schedule) } catch { throw CommandFailure(error.description) }
        if json { return try writeJSON(report) }

        let m = bundle.manifest
        func g(_ x: Int) -> String { String(format: "%.3f G", Double(x) / 1e9) }
        print(report.path)
        print("  bundle:      format \(m.format) v\(m.formatVersion), \(m.experts.count) experts, \(m.units.count) units, prediction \(m.predictionType)")
        print("  weights:     " + m.files.map { "\($0.path) \(formatBytes($0.bytes))" }.joined(separator: ", "))
        print("  source:      \(m.source.model)" + (m.source.files.first.map { " (sha256 \($0.sha256.prefix(16))...)" } ?? ""))
        print("  MACs:        dense \(g(m.macs.dense)) per call at \(m.macs.latentHeight)x\(m.macs.latentWidth), \(m.macs.contextLength) tokens; "
              + String(format: "routed mean over %d timesteps %@ (%.4f of dense)", m.trainTimesteps, g(Int(m.macs.meanOverTrainTimesteps)), m.macs.keptFraction))
        if !report.absentUnits.isEmpty { print("  not stored:  \(report.absentUnits.count) units every expert skips") }
        print("  routing:     \(report.routingSegments) contiguous timestep segments (per expert "
              + report.experts.map { String($0.routingSegments) }.joined(separator: "/") + ")")
        if let c = report.components {
            print("  components:  tokenizer \(c.tokenizer.vocabSize) ids, length \(c.tokenizer.maxLength), pad \"\(c.tokenizer.padToken)\" (\(formatBytes(c.tokenizer.bytes)))")
            let t = c.textEncoder, v = c.vae
            print("               text encoder \(t.hiddenSize) wide, \(t.numHiddenLayers) layers, \(t.numAttentionHeads) heads, \(t.hiddenAct), "
                  + "vocab \(t.vocabSize), \(grouped(t.parameterCount)) parameters \(t.dtype) (\(formatBytes(t.bytes)))")
            print("               VAE channels \(v.blockOutChannels.map(String.init).joined(separator: ",")), \(v.latentChannels) latent channels, "
                  + "scaling \(v.scalingFactor), \(grouped(v.parameterCount)) parameters \(v.dtype) (\(formatBytes(v.bytes)))")
        }
        print("  experts:")
        for r in report.experts {
            let ranges = r.timesteps.map { $0[0] == $0[1] ? "\($0[0])" : "\($0[0])-\($0[1])" }.joined(separator: ",")
            print(String(format: "    %2d  %@  kept %2d/%d units  %.4f of dense  serves %4d timesteps in %3d segments: %@", r.expert, g(r.macs),
                         r.keptUnits.count, m.units.count, r.keptMACFraction, r.timestepCount, r.routingSegments, ranges.isEmpty ? "none" : ranges))
        }
        if let e = report.expertManifest {
            print("  expert \(e.expert):")
            print("    kept:    " + e.keptUnits.joined(separator: ", "))
            print("    skipped: " + (e.skippedUnits.isEmpty ? "none" : e.skippedUnits.joined(separator: ", ")))
            print("    tensors: \(e.tensors.count), \(formatBytes(e.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) * (DTypeBytes.size[$1.dtype] ?? 4) }))")
        }
        if let s = report.schedule {
            print("  schedule \(s.schedule): \(s.calls.count) UNet calls")
            for (i, c) in s.calls.enumerated() {
                print(String(format: "    call %2d  t=%8.3f  (routed %3d)  expert %2d  %@", i, c.timestep, c.routedTimestep, c.expert, g(c.macs)))
            }
            print(String(format: "  total %@ against dense %@ for the same calls: %.4f", g(s.macs), g(s.denseMACs), s.keptMACFraction))
        }
    }
}

enum DTypeBytes {
    static let size: [String: Int] = ["F32": 4, "F16": 2, "BF16": 2]
}
