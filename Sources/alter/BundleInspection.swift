import ArgumentParser
import ExpertBundle
import Foundation
import StableDiffusion

/// `alter inspect NAME.alter`: experts, routing, MACs; per expert; per sampler schedule.
struct BundleInspection {
    let path: String
    let expert: Int?
    let schedule: String?
    let json: Bool

    struct ExpertRow: Encodable {
        var expert: Int
        var timesteps: [[Int]]
        var timestepCount: Int
        var keptUnits: Int
        var skippedUnits: [String]
        var macs: Int
        var keptFraction: Double
    }

    struct ScheduleReport: Encodable {
        var schedule: String
        var calls: [ExpertBundle.ScheduledCall]
        var totalMACs: Int
        var denseMACs: Int
        var ratio: Double
    }

    struct Report: Encodable {
        var path: String
        var summary: ExpertBundle.Summary
        var predictionType: String
        var experts: [ExpertRow]
        var expertDetail: ExpertManifest?
        var schedule: ScheduleReport?
    }

    func run() throws {
        let b: ExpertBundle
        do { b = try ExpertBundle(path: path) } catch { throw CommandFailure(error.description) }
        if let expert, !(0..<b.experts.count).contains(expert) {
            throw ValidationError("--expert \(expert): the bundle has experts 0..<\(b.experts.count)")
        }
        let rows = b.experts.map {
            ExpertRow(expert: $0.expert, timesteps: $0.timesteps, timestepCount: $0.timestepCount, keptUnits: $0.keptUnits.count,
                      skippedUnits: $0.skippedUnits, macs: $0.macs, keptFraction: $0.keptFraction)
        }
        var scheduleReport: ScheduleReport?
        if let schedule {
            let kind: SchedulerKind
            do { kind = try SchedulerKind(parsing: schedule) } catch { throw ValidationError("--schedule: \(error)") }
            let calls: [ExpertBundle.ScheduledCall]
            do { calls = try b.schedule(kind) } catch { throw CommandFailure(error.description) }
            let total = calls.reduce(0) { $0 + $1.macs }, dense = calls.count * b.manifest.macs.dense
            scheduleReport = ScheduleReport(schedule: kind.description, calls: calls, totalMACs: total, denseMACs: dense,
                                            ratio: Double(total) / Double(max(dense, 1)))
        }
        let report = Report(path: path, summary: .init(b.manifest), predictionType: b.manifest.predictionType, experts: rows,
                            expertDetail: expert.map { b.experts[$0] }, schedule: scheduleReport)
        if json { return try writeJSON(report) }

        let m = b.manifest
        func g(_ x: Int) -> String { String(format: "%.3f G", Double(x) / 1e9) }
        print(path)
        print("  bundle:      format \(m.format) v\(m.formatVersion), \(m.experts.count) experts, \(m.units.count) units, prediction \(m.predictionType)")
        print("  weights:     " + m.files.map { "\($0.path) \(formatBytes($0.bytes))" }.joined(separator: ", "))
        print("  source:      \(m.source.model)" + (m.source.files.first.map { " (sha256 \($0.sha256.prefix(16))...)" } ?? ""))
        print("  MACs:        dense \(g(m.macs.dense)) per call at \(m.macs.latentHeight)x\(m.macs.latentWidth), \(m.macs.contextLength) tokens; "
              + String(format: "routed mean over %d timesteps %@ (%.4f of dense)", m.trainTimesteps, g(Int(m.macs.meanOverTrainTimesteps)), m.macs.keptFraction))
        let absent = b.absentUnits
        if !absent.isEmpty { print("  not stored:  \(absent.count) units every expert skips") }
        print("  experts:")
        for r in rows {
            let ranges = r.timesteps.map { $0[0] == $0[1] ? "\($0[0])" : "\($0[0])-\($0[1])" }.joined(separator: ",")
            print(String(format: "    %2d  %@  kept %2d/%d units  %.4f of dense  serves %4d timesteps: %@", r.expert, g(r.macs),
                         r.keptUnits, m.units.count, r.keptFraction, r.timestepCount, ranges.isEmpty ? "none" : ranges))
        }
        if let expert {
            let e = b.experts[expert]
            print("  expert \(expert):")
            print("    kept:    " + e.keptUnits.joined(separator: ", "))
            print("    skipped: " + (e.skippedUnits.isEmpty ? "none" : e.skippedUnits.joined(separator: ", ")))
            print("    tensors: \(e.tensors.count), \(formatBytes(e.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) * (DTypeBytes.size[$1.dtype] ?? 4) }))")
        }
        if let s = scheduleReport {
            print("  schedule \(s.schedule): \(s.calls.count) UNet calls")
            for (i, c) in s.calls.enumerated() {
                print(String(format: "    call %2d  t=%8.3f  (routed %3d)  expert %2d  %@", i, c.timestep, c.routedTimestep, c.expert, g(c.macs)))
            }
            print(String(format: "  total %@ against dense %@ for the same calls: %.4f", g(s.totalMACs), g(s.denseMACs), s.ratio))
        }
    }
}

enum DTypeBytes {
    static let size: [String: Int] = ["F32": 4, "F16": 2, "BF16": 2]
}
