import ArgumentParser
import ExpertBundle
import Foundation

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two bundles, or two expert manifests of bundles.",
        discussion: """
            A and B are bundle directories (NAME.alter), or expert manifests inside bundles \
            (NAME.alter/experts/expert-K.json; their tensors are read from their bundles). Reported: \
            architecture, prediction type and scheduler differences; per expert (by index), the units added \
            (B computes them, A skips them) and dropped (A computes, B skips); routing changes as timestep \
            ranges ("t 0-123: expert 2 -> 3"; for expert manifests, the timesteps served by one and not the \
            other); MACs (dense, per expert, routed mean, kept fraction); for tensors in both with the same name \
            and shape, the relative change ||b - a|| / ||a|| (in double precision, streaming over the \
            memory-mapped weight files; tensors with equal SHA-256 are 0 without being read), largest first \
            (the top --top in text, all with --json); tensors only in A or only in B. Exit status 0, or 2 when \
            an input cannot be read; with --exit-code, 1 when A and B differ. Bundles that carry pipeline components \
            (export --pipeline) are compared per component: same, only in one, or the files and tensors that differ.
            """)

    @Argument(help: "Bundle directory or expert manifest A.")
    var a: String

    @Argument(help: "Bundle directory or expert manifest B.")
    var b: String

    @Option(help: "How many tensors to list in text output, largest change first.")
    var top = 20

    @Option(help: "How many routing ranges to list in text output (all with --json).")
    var ranges = 40

    @Flag(help: "Print JSON (every tensor).")
    var json = false

    @Flag(help: "Exit with status 1 when A and B differ (as git diff --exit-code).")
    var exitCode = false

    func run() throws {
        let d: BundleDiff
        do { d = try BundleDiff(a, b) } catch {
            printError("Error: \(error.description)")
            throw ExitCode(2)
        }
        if json { try writeJSON(d) } else { print(Self.text(d, top: top, ranges: ranges), terminator: "") }
        if exitCode && !d.isEmpty { throw ExitCode(1) }
    }

    static func side(_ s: BundleDiff.Side) -> String {
        s.expert.map { "expert \($0) of \(s.bundle)" } ?? "\(s.bundle) (\(s.experts) experts)"
    }

    static func json(_ v: JSONValue?) -> String {
        guard let v else { return "(absent)" }
        return String(decoding: v.data(), as: UTF8.self)
    }

    static func percent(_ a: Double, _ b: Double) -> String {
        a == 0 ? "" : String(format: " (%+.1f%%)", 100 * (b - a) / a)
    }

    static func text(_ d: BundleDiff, top: Int, ranges: Int = 40) -> String {
        var out = "A: \(side(d.a))\nB: \(side(d.b))\n"
        func line(_ s: String) { out += s + "\n" }
        if d.isEmpty {
            line("no differences (\(d.tensors.count) tensors, all identical" + (d.components.isEmpty ? ")" : "; the pipeline components too)"))
            return out
        }
        // Architecture and configuration.
        if !d.sameArchitecture || !d.architectureChanges.isEmpty {
            line(d.sameArchitecture ? "architecture: the same UNet, its config written differently:" : "architecture: DIFFERENT")
            for c in d.architectureChanges { line("  \(c.key): \(json(c.a)) -> \(json(c.b))") }
        } else { line("architecture: same") }
        if let p = d.predictionType { line("prediction type: \(p.a) -> \(p.b)") }
        if let t = d.trainTimesteps { line("train timesteps: \(t.a) -> \(t.b)") }
        if !d.schedulerChanges.isEmpty {
            line("scheduler:")
            for c in d.schedulerChanges { line("  \(c.key): \(json(c.a)) -> \(json(c.b))") }
        }
        if let s = d.sourceModel { line("source model (different digests): \(s.a) -> \(s.b)") }

        // Units.
        if !d.sameUnits {
            line("units: the prunable units differ (\(d.unitsOnlyInA.count) only in A, \(d.unitsOnlyInB.count) only in B)"
                + (d.unitsOnlyInA.isEmpty && d.unitsOnlyInB.isEmpty ? " in order only" : ""))
            if !d.unitsOnlyInA.isEmpty { line("  only in A: " + d.unitsOnlyInA.joined(separator: ", ")) }
            if !d.unitsOnlyInB.isEmpty { line("  only in B: " + d.unitsOnlyInB.joined(separator: ", ")) }
        }
        if let n = d.expertCount { line("experts: \(n.a) -> \(n.b)") }
        if d.units.isEmpty {
            if d.unitsOnlyInA.isEmpty && d.unitsOnlyInB.isEmpty { line("units: every expert keeps the same units") }
        } else {
            line("units (added: B computes, A skips; dropped: A computes, B skips):")
            for u in d.units {
                let name = u.expertA == u.expertB ? "expert \(u.expertA)" : "expert \(u.expertA) -> \(u.expertB)"
                line("  \(name): +\(u.added.count) -\(u.dropped.count)")
                if !u.added.isEmpty { line("    added   " + u.added.joined(separator: ", ")) }
                if !u.dropped.isEmpty { line("    dropped " + u.dropped.joined(separator: ", ")) }
            }
        }

        // Routing.
        if d.routing.isEmpty {
            line("routing: unchanged")
        } else {
            func name(_ e: Int?) -> String { e.map(String.init) ?? "none" }
            if let ea = d.a.expert, let eb = d.b.expert {
                // Expert manifests: timesteps one of the two serves and the other does not.
                let lost = d.routing.filter { $0.from == ea }.reduce(0) { $0 + $1.count }
                line("routing: \(d.routingChangedTimesteps) timesteps served by one expert and not the other, in \(d.routing.count) ranges "
                    + "(\(lost) only by A's expert \(ea), \(d.routingChangedTimesteps - lost) only by B's expert \(eb))")
                for r in d.routing.prefix(ranges) {
                    let range = r.first == r.last ? "t \(r.first)" : "t \(r.first)-\(r.last)"
                    line(r.from == ea ? "  \(range): only A's expert \(ea) (B routes to expert \(name(r.to)))"
                        : "  \(range): only B's expert \(eb) (A routes to expert \(name(r.from)))")
                }
            } else {
                line("routing: \(d.routingChangedTimesteps) timesteps routed differently, in \(d.routing.count) ranges")
                var moves: [String: Int] = [:]
                for r in d.routing { moves["expert \(name(r.from)) -> \(name(r.to))", default: 0] += r.count }
                line("  " + moves.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))
                for r in d.routing.prefix(ranges) {
                    let range = r.first == r.last ? "t \(r.first)" : "t \(r.first)-\(r.last)"
                    line("  \(range): expert \(name(r.from)) -> \(name(r.to))")
                }
            }
            if d.routing.count > ranges { line("  ... and \(d.routing.count - ranges) more ranges (--ranges N, or --json for all)") }
        }

        // MACs.
        let m = d.macs
        if m.countedAt.a != m.countedAt.b {
            line("MACs: counted at \(m.countedAt.a[0])x\(m.countedAt.a[1]), \(m.countedAt.a[2]) tokens in A and "
                + "\(m.countedAt.b[0])x\(m.countedAt.b[1]), \(m.countedAt.b[2]) tokens in B (not comparable)")
        } else {
            line("MACs at \(m.countedAt.a[0])x\(m.countedAt.a[1]), \(m.countedAt.a[2]) tokens:" + (d.macsChanged ? "" : " unchanged"))
        }
        if d.macsChanged {
            line(m.dense.a == m.dense.b ? "  dense: \(grouped(m.dense.a)) (same)"
                : "  dense: \(grouped(m.dense.a)) -> \(grouped(m.dense.b))" + percent(Double(m.dense.a), Double(m.dense.b)))
            for e in m.experts {
                let name = e.expertA == e.expertB || e.expertB == nil ? "expert \(e.expertA ?? e.expertB!)"
                    : e.expertA == nil ? "expert \(e.expertB!)" : "expert \(e.expertA!) -> \(e.expertB!)"
                let a = e.macs.a.map(grouped) ?? "none", b = e.macs.b.map(grouped) ?? "none"
                let fa = e.keptFraction.a.map { String(format: "%.4f", $0) } ?? "-", fb = e.keptFraction.b.map { String(format: "%.4f", $0) } ?? "-"
                var s = "  \(name): \(a) -> \(b)"
                if let x = e.macs.a, let y = e.macs.b { s += percent(Double(x), Double(y)) }
                line(s + ", kept \(fa) -> \(fb)")
            }
            if let r = m.routedMean, let k = m.keptFraction {
                line(String(format: "  routed mean: %@ -> %@%@, kept fraction %.4f -> %.4f", grouped(Int(r.a.rounded())),
                            grouped(Int(r.b.rounded())), percent(r.a, r.b), k.a, k.b))
            }
        }

        // Tensors.
        let changed = d.changedTensors
        line("tensors: \(d.tensors.count) in both, \(changed.count) changed, \(d.tensors.count - changed.count) identical; "
            + "\(d.tensorsOnlyInA.count) only in A, \(d.tensorsOnlyInB.count) only in B"
            + (d.tensorShapeChanges.isEmpty ? "" : ", \(d.tensorShapeChanges.count) with another shape"))
        if !changed.isEmpty {
            line("  ||b - a|| / ||a||, largest first:")
            for t in changed.prefix(top) {
                let rel = t.relativeChange.map { String(format: "%.3e", $0) } ?? "inf"
                let dtype = t.dtype.a == t.dtype.b ? "" : " \(t.dtype.a) -> \(t.dtype.b)"
                line("  \(rel.padding(toLength: 10, withPad: " ", startingAt: 0)) \(t.name) \(t.shape)\(dtype)")
            }
            if changed.count > top { line("  ... and \(changed.count - top) more (--top N, or --json for all)") }
        }
        func list(_ title: String, _ refs: [BundleDiff.TensorRef]) {
            guard !refs.isEmpty else { return }
            line("  \(title):")
            for r in refs.prefix(top) { line("    \(r.name) \(r.shape) \(r.dtype)") }
            if refs.count > top { line("    ... and \(refs.count - top) more") }
        }
        list("only in A", d.tensorsOnlyInA)
        list("only in B", d.tensorsOnlyInB)
        if !d.tensorShapeChanges.isEmpty {
            line("  another shape:")
            for s in d.tensorShapeChanges.prefix(top) { line("    \(s.name) \(s.shape.a) -> \(s.shape.b)") }
            if d.tensorShapeChanges.count > top { line("    ... and \(d.tensorShapeChanges.count - top) more") }
        }

        // Pipeline components.
        for c in d.components {
            if c.same { line("\(c.component): same"); continue }
            if !c.inA || !c.inB { line("\(c.component): only in \(c.inA ? "A" : "B")"); continue }
            let changed = c.tensors.filter { $0.relativeChange != 0 }
            line("\(c.component): different (files \(c.filesChanged.joined(separator: ", "))); \(c.tensors.count) tensors in both, \(changed.count) changed"
                + (c.tensorsOnlyInA.isEmpty && c.tensorsOnlyInB.isEmpty ? "" : ", \(c.tensorsOnlyInA.count) only in A, \(c.tensorsOnlyInB.count) only in B")
                + (c.tensorShapeChanges.isEmpty ? "" : ", \(c.tensorShapeChanges.count) with another shape"))
            for t in changed.prefix(top) {
                let rel = t.relativeChange.map { String(format: "%.3e", $0) } ?? "inf"
                let dtype = t.dtype.a == t.dtype.b ? "" : " \(t.dtype.a) -> \(t.dtype.b)"
                line("  \(rel.padding(toLength: 10, withPad: " ", startingAt: 0)) \(t.name) \(t.shape)\(dtype)")
            }
            if changed.count > top { line("  ... and \(changed.count - top) more (--top N, or --json for all)") }
        }
        return out
    }
}
