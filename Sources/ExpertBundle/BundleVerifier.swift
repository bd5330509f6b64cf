import Experts
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore

/// What `verify` found (formats/bundle.md, "What alter verify checks").
public struct VerificationReport: Encodable, Sendable {
    /// Each check by name, with what was examined; failures name the file, tensor, expert or entry.
    public struct Check: Encodable, Sendable {
        /// What became of a check.
        public enum Status: String, Encodable, Sendable {
            /// Run, and everything it examines holds.
            case passed
            /// Run, and something does not hold (`detail` says what).
            case failed
            /// Asked for but not run, because what it needs could not be read or an earlier
            /// check failed: it vouches for nothing, so the report does not pass.
            case notRun = "not_run"
            /// Not asked for (`parity` without `--deep`): no claim either way.
            case skipped
        }

        public var name: String
        public var status: Status
        public var detail: String
        /// Whether the check ran and held (`status == .passed`).
        public var passed: Bool { status == .passed }

        public init(name: String, status: Status, detail: String) {
            self.name = name
            self.status = status
            self.detail = detail
        }

        public init(name: String, passed: Bool, detail: String) {
            self.init(name: name, status: passed ? .passed : .failed, detail: detail)
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, passed, status, detail
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(passed, forKey: .passed)
            try c.encode(status, forKey: .status)
            try c.encode(detail, forKey: .detail)
        }
    }

    /// Every check `verify` reports, in order (formats/bundle.md, "What alter verify checks").
    public static let checkNames = ["schema", "files", "checksums", "routing", "tensors", "macs", "scheduler", "components", "parity"]

    /// Fidelity of one expert on probe inputs.
    public struct Fidelity: Encodable, Sendable {
        public var expert: Int
        public var timestep: Int
        /// max |bundle - reference masked| / max |reference masked| (the parity check).
        public var parityError: Double
        public var parityTolerance: Double
        /// PSNR of the expert's output against the reference's dense output, in dB.
        public var psnrToDense: Double

        enum CodingKeys: String, CodingKey, CaseIterable {
            case expert, timestep, parityError = "parity_error", parityTolerance = "parity_tolerance"
            case psnrToDense = "psnr_to_dense"
        }

        /// `psnr_to_dense` is null when the output equals the dense output (infinite PSNR), which
        /// JSON cannot hold.
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(expert, forKey: .expert)
            try c.encode(timestep, forKey: .timestep)
            try c.encode(parityError, forKey: .parityError)
            try c.encode(parityTolerance, forKey: .parityTolerance)
            try c.encode(psnrToDense.isFinite ? psnrToDense : nil, forKey: .psnrToDense)
        }
    }

    public var checks: [Check] = []
    public var fidelity: [Fidelity] = []

    public init() {}

    /// The report on a bundle whose manifests could not be read: `schema` failed, every other
    /// check is `not_run` (`parity` is `skipped` unless `deep`).
    public init(schemaError: BundleError, deep: Bool = false) {
        checks = Self.checkNames.map { name in
            if name == "schema" { return Check(name: name, passed: false, detail: schemaError.description) }
            if name == "parity" && !deep { return Check(name: name, status: .skipped, detail: "not run: --deep not given") }
            return Check(name: name, status: .notRun, detail: "not run: the manifests could not be read")
        }
    }

    /// `name: detail` of every check that failed or could not run.
    public var failures: [String] {
        checks.filter { $0.status == .failed || $0.status == .notRun }.map { "\($0.name): \($0.detail)" }
    }

    /// Whether every check that was asked for ran and held.
    public var passed: Bool { checks.allSatisfy { $0.status == .passed || $0.status == .skipped } }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case passed, checks, fidelity
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(passed, forKey: .passed)
        try c.encode(checks, forKey: .checks)
        try c.encode(fidelity, forKey: .fidelity)
    }
}

extension ExpertBundle {
    /// Checks checksums, routing, tensor coverage and MACs; with `reference`, also each expert's
    /// output against the reference model's forward with the same units skipped, on `probes`
    /// seeded inputs per expert at the bundle's MAC latent size (or `probeLatent`, which must be a
    /// valid `LatentSize` for the bundle's UNet: otherwise the parity check fails naming it and
    /// nothing is run; the CLI refuses such an argument before calling this). With `keep`, the
    /// MAC check also requires the routed mean kept fraction (from the verified expert MACs) within
    /// `UnitBudget.tolerance` of it: the promise `alter compress --keep` makes at the run's latent size.
    public func verify(reference: UNet? = nil, probeLatent: Int? = nil, seed: UInt64 = 0, keep: Double? = nil) -> VerificationReport {
        var report = VerificationReport()
        report.checks.append(.init(name: "schema", passed: true,
                                   detail: "bundle.json and \(experts.count) expert manifests, format version \(manifest.formatVersion)"))
        // Each failure is reported once (the same bad file named by every expert is one failure).
        func check(_ name: String, _ all: [String], ok: String) {
            var seen = Set<String>()
            let failures = all.filter { seen.insert($0).inserted }
            report.checks.append(.init(name: name, passed: failures.isEmpty,
                                       detail: failures.isEmpty ? ok : failures.prefix(20).joined(separator: "; ")
                                           + (failures.count > 20 ? "; and \(failures.count - 20) more" : "")))
        }

        // Files: what is stored is exactly what the manifests list, as regular files.
        let listedWeights = Set(manifest.files.map(\.path))
        var bad = layoutFailures()
        check("files", bad, ok: "bundle.json, \(manifest.experts.count) expert manifests and \(manifest.files.count) weight files"
                  + (manifest.components.map { " and \($0.files.count) component files" } ?? "") + " stored, nothing else; no symbolic link")

        // Checksums of files (size first: a file of the wrong size is not hashed) and expert manifests.
        bad = []
        for f in manifest.files + (manifest.components?.files ?? []) {
            do {
                let full = try Self.resolve(f.path, in: path, what: "files")
                let status: (kind: RegularFile.Kind, size: Int)?
                do { status = try RegularFile.status(full, followSymlinks: false) } catch { bad.append("\(f.path): \(error.reason)"); continue }
                guard let status else { bad.append("\(f.path) is missing"); continue }
                guard status.kind == .regular else { bad.append("\(f.path) is \(status.kind.rawValue), not a regular file"); continue }
                guard status.size == f.bytes else { bad.append("\(f.path) has \(status.size) bytes, the manifest says \(f.bytes)"); continue }
                let digest = try SHA256.hex(file: full, followSymlinks: false)
                if digest != f.sha256 { bad.append("\(f.path) has SHA-256 \(digest), the manifest says \(f.sha256)") }
            } catch { bad.append("\(error)") }
        }
        for e in manifest.experts {
            do {
                let full = try Self.resolve(e.manifest, in: path, what: "experts[\(e.index)].manifest")
                let d = try RegularFile.read(full, limit: 64 << 20, followSymlinks: false)
                let digest = d.withUnsafeBytes { SHA256.hex($0) }
                if digest != e.sha256 { bad.append("\(e.manifest) has SHA-256 \(digest), bundle.json says \(e.sha256)") }
            } catch let error as FileAccessError { bad.append("\(e.manifest): \(error.reason)") } catch { bad.append("\(error)") }
        }
        check("checksums", bad, ok: "\(manifest.files.count) weight files, \(manifest.experts.count) expert manifests"
                  + (manifest.components.map { " and \($0.files.count) component files" } ?? "") + " match their SHA-256")

        // Routing.
        bad = []
        let units = config.units().map(\.name)
        if manifest.units != units { bad.append("units differ from the architecture's \(units.count) units") }
        if manifest.routing.count != manifest.trainTimesteps { bad.append("routing has \(manifest.routing.count) entries for \(manifest.trainTimesteps) timesteps") }
        for (t, e) in manifest.routing.enumerated() where e < 0 || e >= experts.count {
            bad.append("routing[\(t)] = \(e) is not an expert (0..<\(experts.count))")
        }
        for m in experts {
            let served = manifest.routing.indices.filter { manifest.routing[$0] == m.expert }
            if RoutingTable.ranges(served) != m.timesteps || served.count != m.timestepCount {
                bad.append("expert \(m.expert): timesteps \(m.timesteps) (\(m.timestepCount)) differ from the routing table's")
            }
            let kept = Set(m.keptUnits), skipped = Set(m.skippedUnits)
            if kept.union(skipped) != Set(units) || !kept.isDisjoint(with: skipped) || m.keptUnits.count + m.skippedUnits.count != units.count {
                bad.append("expert \(m.expert): kept_units and skipped_units do not partition the \(units.count) units")
            }
        }
        check("routing", bad, ok: "all \(manifest.routing.count) timesteps routed to one of \(experts.count) experts; every expert's timesteps and units consistent")

        // Tensor coverage, shapes, dtypes and per-tensor digests.
        bad = []
        let params = config.parameters()
        func unit(of name: String) -> String? { units.first { name.hasPrefix($0 + ".") } }
        var listedPerFile: [String: Set<String>] = [:]
        var checkedTensors = Set<String>()
        for m in experts {
            let kept = Set(m.keptUnits)
            let listed = Dictionary(m.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for p in params where unit(of: p.name).map({ kept.contains($0) }) ?? true {
                guard let entry = listed[p.name] else { bad.append("expert \(m.expert) needs '\(p.name)', its manifest does not list it"); continue }
                if entry.shape != p.shape { bad.append("expert \(m.expert): '\(p.name)' is listed as \(entry.shape), the architecture needs \(p.shape)") }
            }
            for entry in m.tensors {
                listedPerFile[entry.file, default: []].insert(entry.name)
                // A tensor in a file bundle.json does not list is reported by `files`, not read.
                guard listedWeights.contains(entry.file), checkedTensors.insert(entry.file + "\u{0}" + entry.name).inserted else { continue }
                do {
                    let f = try file(entry.file)
                    guard let info = f.info(entry.name) else { bad.append("\(entry.file): tensor '\(entry.name)' is missing"); continue }
                    if info.dtype.rawValue != entry.dtype || info.shape != entry.shape {
                        bad.append("\(entry.file): '\(entry.name)' is \(info.dtype.rawValue) \(info.shape), the manifest says \(entry.dtype) \(entry.shape)")
                        continue
                    }
                    let digest = SHA256.hex(f.rawBytes(info))
                    if digest != entry.sha256 { bad.append("\(entry.file): tensor '\(entry.name)' has SHA-256 \(digest), the manifest says \(entry.sha256)") }
                } catch { bad.append("\(error)") }
            }
        }
        for f in manifest.files {
            guard let file = try? file(f.path) else { continue }
            for name in file.names where !(listedPerFile[f.path]?.contains(name) ?? false) {
                bad.append("\(f.path): tensor '\(name)' is not listed by any expert manifest")
            }
        }
        check("tensors", bad, ok: "\(checkedTensors.count) tensors present with the listed dtype, shape and SHA-256")

        // MACs.
        bad = []
        let macs = manifest.macs
        let cost: CostModel?
        do { cost = try CostModel(config: config, latentHeight: macs.latentHeight, latentWidth: macs.latentWidth, contextLength: macs.contextLength) } catch {
            bad.append("bundle.json: \(error.field == "macs" ? error : error.nested(in: "macs"))")
            cost = nil
        }
        if let cost, cost.total.total != macs.dense { bad.append("dense MACs \(macs.dense), the cost model gives \(cost.total.total)") }
        var perExpert: [Int] = []
        for m in experts {
            guard let cost else { break }
            let expected = cost.cost(skipping: Set(m.skippedUnits)).total
            perExpert.append(expected)
            if m.macs != expected { bad.append("expert \(m.expert): MACs \(m.macs), the cost model gives \(expected)") }
            if macs.experts.count == experts.count, macs.experts[m.expert] != expected { bad.append("bundle.json macs.experts[\(m.expert)] is \(macs.experts[m.expert]), expected \(expected)") }
        }
        if bad.isEmpty, manifest.routing.allSatisfy({ $0 >= 0 && $0 < perExpert.count }) {
            let mean = manifest.routing.reduce(0.0) { $0 + Double(perExpert[$1]) } / Double(max(manifest.routing.count, 1))
            if Swift.abs(mean - macs.meanOverTrainTimesteps) > 0.5 { bad.append("mean MACs \(macs.meanOverTrainTimesteps), expected \(mean)") }
            if let keep, macs.dense > 0, Swift.abs(mean / Double(macs.dense) - keep) > UnitBudget.tolerance {
                bad.append(String(format: "the routed mean keeps %.4f of the dense MACs, more than %.2f from --keep %.3f", mean / Double(macs.dense),
                                  UnitBudget.tolerance, keep))
            }
        }
        check("macs", bad, ok: String(format: "dense %@ MACs per call at %dx%d, %d tokens; routed mean %.4f of dense", "\(macs.dense)",
                                      macs.latentHeight, macs.latentWidth, macs.contextLength, macs.keptFraction)
                               + (keep.map { String(format: ", within %.2f of --keep %.3f", UnitBudget.tolerance, $0) } ?? ""))

        // The scheduler config sampling builds (the bounds of SchedulerConfig.validate, shared with `sample`).
        bad = []
        do {
            let scheduler = try schedulerConfig()
            if scheduler.trainTimesteps != manifest.trainTimesteps {
                bad.append("bundle.json scheduler.num_train_timesteps is \(scheduler.trainTimesteps), train_timesteps is \(manifest.trainTimesteps)")
            }
            if let p = manifest.scheduler["prediction_type"], p != .null, p.stringValue != manifest.predictionType {
                bad.append("bundle.json scheduler.prediction_type is \(p.stringValue.map { "\"\($0)\"" } ?? "not a string"), "
                           + "prediction_type is \"\(manifest.predictionType)\"")
            }
        } catch { bad.append("\(error)") }
        check("scheduler", bad, ok: "the scheduler config is valid, with \(manifest.trainTimesteps) training timesteps and \(manifest.predictionType)")

        // The pipeline components: tensors, strict loading, fit with the UNet (finiteness with --deep).
        let (componentFailures, componentDetail) = componentFailures(deep: reference != nil)
        check("components", componentFailures, ok: componentDetail)

        // Numeric parity and fidelity against a reference model.
        guard let reference else {
            report.checks.append(.init(name: "parity", status: .skipped, detail: "not run: --deep not given"))
            return report
        }
        guard report.passed else {
            report.checks.append(.init(name: "parity", status: .notRun, detail: "not run: earlier checks failed"))
            return report
        }
        do {
            bad = []
            let h = probeLatent ?? macs.latentHeight, w = probeLatent ?? macs.latentWidth
            var rng = SeededGenerator(seed: seed)
            do { _ = try LatentSize(height: h, width: w, contextLength: macs.contextLength, config: config) } catch {
                // A bad probe size is the caller's argument, not the bundle's fault: nothing is run.
                report.checks.append(.init(name: "parity", passed: false, detail: "probe latent: \(error)"))
                return report
            }
            for m in experts {
                let t = m.timesteps.first.map { ($0[0] + $0[1]) / 2 } ?? 500
                let sample = Tensor(shape: [1, config.inChannels, h, w], values: rng.normals(config.inChannels * h * w))
                let context = Tensor(shape: [1, macs.contextLength, config.crossAttentionDim], values: rng.normals(macs.contextLength * config.crossAttentionDim))
                let expertUNet: UNet
                do { expertUNet = try unet(expert: m.expert) } catch { bad.append("expert \(m.expert): \(error)"); continue }
                var options = UNetForwardOptions()
                options.skip = Set(m.skippedUnits)
                let got = expertUNet.forward(sample: sample, timesteps: [Float(t)], context: context, options: options).sample
                let masked = reference.forward(sample: sample, timesteps: [Float(t)], context: context, options: options).sample
                let dense = reference.forward(sample: sample, timesteps: [Float(t)], context: context).sample
                var maxDiff = 0.0, maxRef = 0.0, mse = 0.0, peak = 0.0
                for i in 0..<got.count {
                    maxDiff = max(maxDiff, Double(Swift.abs(got.data[i] - masked.data[i])))
                    maxRef = max(maxRef, Double(Swift.abs(masked.data[i])))
                    let d = Double(got.data[i] - dense.data[i])
                    mse += d * d
                    peak = max(peak, Double(Swift.abs(dense.data[i])))
                }
                mse /= Double(got.count)
                let dtype = m.tensors.first?.dtype ?? "F32"
                let tolerance = dtype == "F32" ? 1e-5 : dtype == "F16" ? 5e-3 : 5e-2
                let parity = maxDiff / max(maxRef, 1e-30)
                let psnr = mse == 0 ? Double.infinity : 20 * log10(max(peak, 1e-30)) - 10 * log10(mse)
                report.fidelity.append(.init(expert: m.expert, timestep: t, parityError: parity, parityTolerance: tolerance, psnrToDense: psnr))
                if parity > tolerance {
                    bad.append(String(format: "expert %d at t=%d: output differs from the reference's masked forward by %.3g (max relative), tolerance %.1g for %@ storage",
                                      m.expert, t, parity, tolerance, dtype))
                }
            }
            check("parity", bad, ok: "every expert's output equals the reference's masked forward on a probe input")
        }
        return report
    }

    /// The `files` check: every path bundle.json and the expert manifests name is inside the bundle
    /// and listed once; every weight file a tensor entry names is listed in `files`; every listed
    /// file exists as a regular file; and everything stored under the bundle directory (recursively)
    /// is a listed file or a directory holding one: no other file, no symbolic link, no FIFO or device.
    func layoutFailures() -> [String] {
        var bad: [String] = []
        // What the manifests list, each path once.
        var listed: [String: String] = ["bundle.json": "bundle.json"]
        func list(_ relative: String, as what: String) {
            do { try Self.checkRelative(relative, in: path, what: what) } catch { bad.append(error.description); return }
            if let other = listed[relative] { bad.append("\"\(relative)\" is listed twice (\(other) and \(what))"); return }
            listed[relative] = what
        }
        for e in manifest.experts { list(e.manifest, as: "experts[\(e.index)].manifest") }
        for (i, f) in manifest.files.enumerated() { list(f.path, as: "files[\(i)]") }
        for (kind, c) in manifest.components?.all ?? [] {
            for (i, f) in c.files.enumerated() { list(f.path, as: "components.\(kind.rawValue).files[\(i)]") }
        }
        // Tensor entries may name only listed weight files (one failure per file, naming the experts).
        let weightFiles = Set(manifest.files.map(\.path))
        var unlisted: [String: [Int]] = [:]
        for m in experts {
            for file in Set(m.tensors.map(\.file)) where !weightFiles.contains(file) { unlisted[file, default: []].append(m.expert) }
        }
        for (file, users) in unlisted.sorted(by: { $0.key < $1.key }) {
            let who = users.count == 1 ? "expert \(users[0])" : "experts \(users.sorted().map(String.init).joined(separator: ", "))"
            bad.append("\(who) list tensors in \"\(file)\", which bundle.json files does not list")
        }
        // What is stored.
        let (stored, errors) = storedEntries()
        bad += errors
        var present = Set<String>()
        for (rel, kind) in stored {
            switch kind {
            case .regular:
                present.insert(rel)
                if listed[rel] == nil { bad.append("\(rel) is stored in the bundle but no manifest lists it") }
            case .directory:
                if !listed.keys.contains(where: { $0.hasPrefix(rel + "/") }) { bad.append("\(rel)/ is a directory holding no listed file") }
            case .symlink:
                bad.append("\(rel) " + Self.symlinkError(path + "/" + rel).message)
            default:
                bad.append("\(rel) is \(kind.rawValue); a bundle holds regular files only")
            }
        }
        for (rel, what) in listed.sorted(by: { $0.key < $1.key }) where !present.contains(rel) {
            if !stored.contains(where: { $0.path == rel }) { bad.append("\(rel) (\(what)) is not stored in the bundle") }
        }
        return bad
    }
}
