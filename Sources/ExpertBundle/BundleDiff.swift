import Foundation
import SafeTensors
import StableDiffusion

/// What differs between two bundles, or between two expert manifests of (possibly different)
/// bundles (`alter diff A B`, issue 5).
///
/// Expert indices of two bundles are compared by index (expert i of A with expert i of B). A unit
/// is *added* to an expert when B's expert computes it and A's skips it, *dropped* when A's
/// computes it and B's skips it. A tensor present in both (same name and shape) gets its relative
/// change norm ||b - a|| / ||a||, computed in Double while streaming over the memory-mapped weight
/// files (tensors whose stored bytes have the same SHA-256 and dtype are 0 without being read).
public struct BundleDiff: Encodable, Sendable {
    /// One side of a comparison: a bundle, or one expert manifest inside a bundle.
    public struct Side: Encodable, Sendable {
        /// The path as given.
        public var path: String
        /// The bundle directory.
        public var bundle: String
        /// The expert compared, when an expert manifest was given.
        public var expert: Int?
        public var experts: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case path, bundle, expert, experts = "expert_count"
        }
    }

    public struct Change<T: Encodable & Sendable & Equatable>: Encodable, Sendable, Equatable {
        public var a: T
        public var b: T
        public init(a: T, b: T) {
            self.a = a
            self.b = b
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case a, b
        }
    }

    /// One key of a JSON object (the architecture, the scheduler) that differs; nil where absent.
    public struct FieldChange: Encodable, Sendable, Equatable {
        public var key: String
        public var a: JSONValue?
        public var b: JSONValue?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case key, a, b
        }
    }

    /// Units of one expert pair: added (B computes, A skips) and dropped (A computes, B skips).
    public struct UnitChanges: Encodable, Sendable, Equatable {
        public var expertA: Int
        public var expertB: Int
        public var added: [String]
        public var dropped: [String]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case expertA = "expert_a", expertB = "expert_b", added, dropped
        }
    }

    /// Training timesteps first ... last (inclusive) routed to expert `from` in A and `to` in B
    /// (nil: beyond that bundle's routing table). Comparing bundles, every timestep with
    /// from != to; comparing expert manifests, every timestep that one of the two experts serves and
    /// the other does not.
    public struct RoutingChange: Encodable, Sendable, Equatable {
        public var first: Int
        public var last: Int
        public var from: Int?
        public var to: Int?
        public var count: Int { last - first + 1 }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case first, last, from, to
        }
    }

    /// MACs of one call of one expert pair (nil where that side has no such expert).
    public struct ExpertMACs: Encodable, Sendable, Equatable {
        public var expertA: Int?
        public var expertB: Int?
        public var macs: Change<Int?>
        public var keptFraction: Change<Double?>

        enum CodingKeys: String, CodingKey, CaseIterable {
            case expertA = "expert_a", expertB = "expert_b", macs, keptFraction = "kept_mac_fraction"
        }
    }

    public struct MACChanges: Encodable, Sendable, Equatable {
        /// [height, width, context length] where each side counts MACs.
        public var countedAt: Change<[Int]>
        public var dense: Change<Int>
        public var experts: [ExpertMACs]
        /// Bundle comparisons only: the routed mean over the training timesteps, and it / dense.
        public var routedMean: Change<Double>?
        public var keptFraction: Change<Double>?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case countedAt = "counted_at", dense = "dense_macs", experts, routedMean = "routed_mean_macs", keptFraction = "kept_mac_fraction"
        }
    }

    /// A tensor present in both with the same name and shape.
    public struct TensorChange: Encodable, Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var dtype: Change<String>
        /// ||b - a|| / ||a||; nil when ||a|| = 0 and b differs (infinite).
        public var relativeChange: Double?
        /// ||a||; nil when the tensor was not read (same bytes).
        public var normA: Double?
        public var normDifference: Double
        /// Equal SHA-256 and dtype: not read.
        public var sameBytes: Bool

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, shape, dtype, relativeChange = "relative_change", normA = "norm_a", normDifference = "norm_difference"
            case sameBytes = "same_bytes"
        }
    }

    public struct TensorRef: Encodable, Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var dtype: String

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, shape, dtype
        }
    }

    public struct ShapeChange: Encodable, Sendable, Equatable {
        public var name: String
        public var shape: Change<[Int]>

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, shape
        }
    }

    public var a: Side
    public var b: Side
    /// Whether both architectures parse to the same UNet; `architectureChanges` lists the keys of
    /// the diffusers configs that differ (`_diffusers_version` and `_name_or_path` ignored).
    public var sameArchitecture: Bool
    public var architectureChanges: [FieldChange]
    public var predictionType: Change<String>?
    public var trainTimesteps: Change<Int>?
    public var schedulerChanges: [FieldChange]
    /// The source checkpoints, when their digests differ.
    public var sourceModel: Change<String>?
    /// Whether both bundles have the same prunable units (by name and order); per-expert unit
    /// changes are reported only then.
    public var sameUnits: Bool
    public var unitsOnlyInA: [String]
    public var unitsOnlyInB: [String]
    public var expertCount: Change<Int>?
    /// Expert pairs whose units differ.
    public var units: [UnitChanges]
    public var routing: [RoutingChange]
    public var macs: MACChanges
    /// Every tensor in both with the same shape, largest relative change first.
    public var tensors: [TensorChange]
    public var tensorsOnlyInA: [TensorRef]
    public var tensorsOnlyInB: [TensorRef]
    public var tensorShapeChanges: [ShapeChange]
    /// Bundle comparisons: one row per pipeline component either bundle carries (empty when
    /// neither carries any, and for expert manifests).
    public var components: [ComponentChange]

    /// How many timesteps are routed differently.
    public var routingChangedTimesteps: Int { routing.reduce(0) { $0 + $1.count } }
    public var changedTensors: [TensorChange] { tensors.filter { $0.relativeChange != 0 } }

    public var macsChanged: Bool {
        macs.countedAt.a != macs.countedAt.b || macs.dense.a != macs.dense.b
            || macs.experts.contains { $0.macs.a != $0.macs.b }
            || macs.routedMean.map { $0.a != $0.b } ?? false
    }

    /// No difference at all (the source model's path aside).
    public var isEmpty: Bool {
        sameArchitecture && architectureChanges.isEmpty && predictionType == nil && trainTimesteps == nil
            && schedulerChanges.isEmpty && sameUnits && expertCount == nil && units.isEmpty && routing.isEmpty
            && !macsChanged && changedTensors.isEmpty && tensorsOnlyInA.isEmpty && tensorsOnlyInB.isEmpty
            && tensorShapeChanges.isEmpty && components.allSatisfy(\.same)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case a, b, sameArchitecture = "same_architecture", architectureChanges = "architecture_changes"
        case predictionType = "prediction_type", trainTimesteps = "train_timesteps", schedulerChanges = "scheduler_changes"
        case sourceModel = "source_model", sameUnits = "same_units", unitsOnlyInA = "units_only_in_a", unitsOnlyInB = "units_only_in_b"
        case expertCount = "expert_count", units, routing, macs, tensors, tensorsOnlyInA = "tensors_only_in_a"
        case tensorsOnlyInB = "tensors_only_in_b", tensorShapeChanges = "tensor_shape_changes", isEmpty = "is_empty"
        case routingChangedTimesteps = "routing_changed_timestep_count", changedTensorCount = "changed_tensor_count", components
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(a, forKey: .a)
        try c.encode(b, forKey: .b)
        try c.encode(isEmpty, forKey: .isEmpty)
        try c.encode(sameArchitecture, forKey: .sameArchitecture)
        try c.encode(architectureChanges, forKey: .architectureChanges)
        try c.encode(predictionType, forKey: .predictionType)
        try c.encode(trainTimesteps, forKey: .trainTimesteps)
        try c.encode(schedulerChanges, forKey: .schedulerChanges)
        try c.encode(sourceModel, forKey: .sourceModel)
        try c.encode(sameUnits, forKey: .sameUnits)
        try c.encode(unitsOnlyInA, forKey: .unitsOnlyInA)
        try c.encode(unitsOnlyInB, forKey: .unitsOnlyInB)
        try c.encode(expertCount, forKey: .expertCount)
        try c.encode(units, forKey: .units)
        try c.encode(routing, forKey: .routing)
        try c.encode(routingChangedTimesteps, forKey: .routingChangedTimesteps)
        try c.encode(macs, forKey: .macs)
        try c.encode(changedTensors.count, forKey: .changedTensorCount)
        try c.encode(tensors, forKey: .tensors)
        try c.encode(tensorsOnlyInA, forKey: .tensorsOnlyInA)
        try c.encode(tensorsOnlyInB, forKey: .tensorsOnlyInB)
        try c.encode(tensorShapeChanges, forKey: .tensorShapeChanges)
        try c.encode(components, forKey: .components)
    }
}

extension BundleDiff {
    /// A path given to `diff`: a bundle directory (or its `bundle.json`), or an expert manifest
    /// inside a bundle.
    public struct Input: Sendable {
        public let path: String
        public let bundle: ExpertBundle
        /// The expert, when `path` is an expert manifest.
        public let expert: Int?

        public init(path: String) throws(BundleError) {
            self.path = path
            let fm = FileManager.default
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw BundleError(path, "does not exist") }
            if isDir.boolValue {
                guard ExpertBundle.isBundle(path) else {
                    throw BundleError(path, "not a bundle: a directory without bundle.json")
                }
                bundle = try ExpertBundle(path: path)
                expert = nil
                return
            }
            guard let data = try? StrictJSON.read(path, limit: 64 << 20),
                  let object = (try? StrictJSON.jsonObject(data, source: path)) as? [String: Any],
                  let format = object["format"] as? String else {
                throw BundleError(path, "not a bundle: neither a bundle directory nor a bundle or expert manifest (JSON with \"format\")")
            }
            let dir = ((path as NSString).deletingLastPathComponent as NSString).standardizingPath
            switch format {
            case BundleManifest.formatName:
                bundle = try ExpertBundle(path: dir.isEmpty ? "." : dir)
                expert = nil
            case ExpertManifest.formatName:
                // The bundle is the nearest ancestor whose bundle.json lists this file (by the
                // path as given first, so that messages name it as the user did).
                let target = Self.canonical(path)
                var candidates: [String] = []
                let given = (dir as NSString).deletingLastPathComponent
                candidates.append(given.isEmpty ? "." : given)
                var up = Self.canonical(dir.isEmpty ? "." : dir)
                for _ in 0..<4 {
                    candidates.append(up)
                    let parent = (up as NSString).deletingLastPathComponent
                    if parent == up || parent.isEmpty { break }
                    up = parent
                }
                for candidate in candidates where ExpertBundle.isBundle(candidate) {
                    guard let data = try? StrictJSON.read(candidate + "/bundle.json", limit: 64 << 20),
                          let o = (try? StrictJSON.jsonObject(data, source: candidate + "/bundle.json")) as? [String: Any],
                          let entries = o["experts"] as? [[String: Any]],
                          entries.contains(where: { ($0["manifest"] as? String).map { Self.canonical(candidate + "/" + $0) == target } ?? false })
                    else { continue }
                    let b = try ExpertBundle(path: candidate)
                    guard let e = b.manifest.experts.first(where: { Self.canonical(candidate + "/" + $0.manifest) == target }) else { continue }
                    bundle = b
                    expert = e.index
                    return
                }
                throw BundleError(path, "an expert manifest that no enclosing bundle.json lists: its tensors cannot be found")
            default:
                throw BundleError(path, "not a bundle: format is \"\(format)\", expected \"\(BundleManifest.formatName)\" or \"\(ExpertManifest.formatName)\"")
            }
        }

        static func canonical(_ p: String) -> String {
            URL(fileURLWithPath: p).standardizedFileURL.resolvingSymlinksInPath().path
        }

        var side: Side { Side(path: path, bundle: bundle.path, expert: expert, experts: bundle.experts.count) }
    }

    /// Compares `a` with `b` (two bundles or two expert manifests). Errors name the path concerned.
    public init(_ a: String, _ b: String) throws(BundleError) {
        try self.init(Input(path: a), Input(path: b))
    }

    public init(_ a: Input, _ b: Input) throws(BundleError) {
        guard (a.expert == nil) == (b.expert == nil) else {
            let expertSide = a.expert != nil ? a : b, bundleSide = a.expert != nil ? b : a
            throw BundleError(bundleSide.path, "is a bundle and \(expertSide.path) an expert manifest: give two bundles or two expert manifests")
        }
        let ma = a.bundle.manifest, mb = b.bundle.manifest
        self.a = a.side
        self.b = b.side

        // Architecture, prediction type, scheduler, source.
        sameArchitecture = a.bundle.config == b.bundle.config
        let ignored: Set<String> = ["_diffusers_version", "_name_or_path"]
        architectureChanges = Self.fieldChanges(ma.architecture, mb.architecture, ignoring: ignored)
        predictionType = ma.predictionType == mb.predictionType ? nil : Change(a: ma.predictionType, b: mb.predictionType)
        trainTimesteps = ma.trainTimesteps == mb.trainTimesteps ? nil : Change(a: ma.trainTimesteps, b: mb.trainTimesteps)
        schedulerChanges = Self.fieldChanges(ma.scheduler, mb.scheduler, ignoring: ignored)
        sourceModel = Set(ma.source.files.map(\.sha256)) == Set(mb.source.files.map(\.sha256)) ? nil
            : Change(a: ma.source.model, b: mb.source.model)

        // Units.
        sameUnits = ma.units == mb.units
        let setA = Set(ma.units), setB = Set(mb.units)
        unitsOnlyInA = ma.units.filter { !setB.contains($0) }
        unitsOnlyInB = mb.units.filter { !setA.contains($0) }
        let pairs: [(Int?, Int?)]
        if let ea = a.expert, let eb = b.expert {
            pairs = [(ea, eb)]
            expertCount = nil
        } else {
            let n = max(ma.experts.count, mb.experts.count)
            pairs = (0..<n).map { ($0 < ma.experts.count ? $0 : nil, $0 < mb.experts.count ? $0 : nil) }
            expertCount = ma.experts.count == mb.experts.count ? nil : Change(a: ma.experts.count, b: mb.experts.count)
        }
        var units: [UnitChanges] = []
        if setA == setB {
            for case let (ea?, eb?) in pairs {
                let keptA = Set(a.bundle.experts[ea].keptUnits), keptB = Set(b.bundle.experts[eb].keptUnits)
                let added = mb.units.filter { keptB.contains($0) && !keptA.contains($0) }
                let dropped = ma.units.filter { keptA.contains($0) && !keptB.contains($0) }
                if !added.isEmpty || !dropped.isEmpty { units.append(.init(expertA: ea, expertB: eb, added: added, dropped: dropped)) }
            }
        }
        self.units = units

        // Routing, as ranges of timesteps with the same (from, to) pair.
        var routing: [RoutingChange] = []
        let tCount = max(ma.routing.count, mb.routing.count)
        for t in 0..<tCount {
            let from: Int? = t < ma.routing.count ? ma.routing[t] : nil
            let to: Int? = t < mb.routing.count ? mb.routing[t] : nil
            let changed: Bool
            if let ea = a.expert, let eb = b.expert { changed = (from == ea) != (to == eb) } else { changed = from != to }
            guard changed else { continue }
            if let last = routing.last, last.last == t - 1, last.from == from, last.to == to {
                routing[routing.count - 1].last = t
            } else {
                routing.append(.init(first: t, last: t, from: from, to: to))
            }
        }
        self.routing = routing

        // MACs.
        let expertMACs = pairs.map { ea, eb in
            ExpertMACs(expertA: ea, expertB: eb, macs: Change(a: ea.map { ma.macs.experts[$0] }, b: eb.map { mb.macs.experts[$0] }),
                       keptFraction: Change(a: ea.map { Double(ma.macs.experts[$0]) / Double(max(ma.macs.dense, 1)) },
                                            b: eb.map { Double(mb.macs.experts[$0]) / Double(max(mb.macs.dense, 1)) }))
        }
        let whole = a.expert == nil
        macs = MACChanges(countedAt: Change(a: [ma.macs.latentHeight, ma.macs.latentWidth, ma.macs.contextLength],
                                            b: [mb.macs.latentHeight, mb.macs.latentWidth, mb.macs.contextLength]),
                          dense: Change(a: ma.macs.dense, b: mb.macs.dense), experts: expertMACs,
                          routedMean: whole ? Change(a: ma.macs.meanOverTrainTimesteps, b: mb.macs.meanOverTrainTimesteps) : nil,
                          keptFraction: whole ? Change(a: ma.macs.keptFraction, b: mb.macs.keptFraction) : nil)

        // Tensors.
        let ta = Self.tensorEntries(a), tb = Self.tensorEntries(b)
        let byNameB = Dictionary(tb.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
        let namesA = Set(ta.map(\.name))
        var both: [(ExpertManifest.TensorEntry, ExpertManifest.TensorEntry)] = []
        var shapeChanges: [ShapeChange] = [], onlyA: [TensorRef] = []
        for x in ta {
            guard let y = byNameB[x.name] else { onlyA.append(.init(name: x.name, shape: x.shape, dtype: x.dtype)); continue }
            if x.shape == y.shape { both.append((x, y)) } else { shapeChanges.append(.init(name: x.name, shape: Change(a: x.shape, b: y.shape))) }
        }
        tensorsOnlyInA = onlyA
        tensorsOnlyInB = tb.filter { !namesA.contains($0.name) }.map { .init(name: $0.name, shape: $0.shape, dtype: $0.dtype) }
        tensorShapeChanges = shapeChanges
        tensors = try Self.changeNorms(both, a.bundle, b.bundle).sorted {
            ($0.relativeChange ?? .infinity, $1.name) > ($1.relativeChange ?? .infinity, $0.name)
        }
        components = a.expert == nil ? try Self.componentChanges(a.bundle, b.bundle) : []
    }

    /// The tensors of one side: an expert's, or every stored one (union over experts, in order).
    static func tensorEntries(_ input: Input) -> [ExpertManifest.TensorEntry] {
        if let e = input.expert { return input.bundle.experts[e].tensors }
        var seen = Set<String>(), out: [ExpertManifest.TensorEntry] = []
        for m in input.bundle.experts { for t in m.tensors where seen.insert(t.name).inserted { out.append(t) } }
        return out
    }

    static func fieldChanges(_ a: JSONValue, _ b: JSONValue, ignoring: Set<String>) -> [FieldChange] {
        guard case .object(let oa) = a, case .object(let ob) = b else {
            return a == b ? [] : [FieldChange(key: "", a: a, b: b)]
        }
        return Set(oa.keys).union(ob.keys).subtracting(ignoring).sorted().compactMap { k in
            oa[k] == ob[k] ? nil : FieldChange(key: k, a: oa[k], b: ob[k])
        }
    }

    /// ||b - a|| and ||a|| of each pair, in Double, streaming over the memory-mapped files (in
    /// parallel over tensors). Pairs with the same SHA-256 and dtype are not read.
    static func changeNorms(_ pairs: [(ExpertManifest.TensorEntry, ExpertManifest.TensorEntry)], _ bundleA: ExpertBundle,
                            _ bundleB: ExpertBundle) throws(BundleError) -> [TensorChange] {
        var results = [Result<TensorChange, BundleError>?](repeating: nil, count: pairs.count)
        results.withUnsafeMutableBufferPointer { out in
            let out = UnsafeSendable(out)
            DispatchQueue.concurrentPerform(iterations: pairs.count) { i in
                let (x, y) = pairs[i]
                let dtype = Change(a: x.dtype, b: y.dtype)
                if x.sha256 == y.sha256 && x.dtype == y.dtype {
                    out.value[i] = .success(TensorChange(name: x.name, shape: x.shape, dtype: dtype, relativeChange: 0, normA: nil,
                                                         normDifference: 0, sameBytes: true))
                    return
                }
                out.value[i] = Result { () throws(BundleError) -> TensorChange in
                    let (normA, normDiff) = try norms(x, in: bundleA, y, in: bundleB)
                    let rel: Double? = normDiff == 0 ? 0 : normA == 0 ? nil : normDiff / normA
                    return TensorChange(name: x.name, shape: x.shape, dtype: dtype, relativeChange: rel, normA: normA,
                                        normDifference: normDiff, sameBytes: false)
                }
            }
        }
        return try results.map { r throws(BundleError) in try r!.get() }
    }

    /// (||a||, ||b - a||) of one tensor pair.
    static func norms(_ x: ExpertManifest.TensorEntry, in bundleA: ExpertBundle, _ y: ExpertManifest.TensorEntry,
                      in bundleB: ExpertBundle) throws(BundleError) -> (Double, Double) {
        let fa = try bundleA.file(x.file), fb = try bundleB.file(y.file)
        let ia = try stored(x, in: fa), ib = try stored(y, in: fb)
        let ra = fa.rawBytes(ia), rb = fb.rawBytes(ib)
        let count = ia.elementCount
        let chunk = 1 << 14
        var bufA = [Float](repeating: 0, count: chunk), bufB = [Float](repeating: 0, count: chunk)
        var sumA = 0.0, sumD = 0.0
        var start = 0
        while start < count {
            let n = min(chunk, count - start)
            bufA.withUnsafeMutableBytes { dst in
                DTypeConversion.convert(UnsafeRawBufferPointer(rebasing: ra[(start * ia.dtype.byteSize)..<((start + n) * ia.dtype.byteSize)]),
                                        from: ia.dtype, to: .f32, into: UnsafeMutableRawBufferPointer(rebasing: dst[0..<(n * 4)]))
            }
            bufB.withUnsafeMutableBytes { dst in
                DTypeConversion.convert(UnsafeRawBufferPointer(rebasing: rb[(start * ib.dtype.byteSize)..<((start + n) * ib.dtype.byteSize)]),
                                        from: ib.dtype, to: .f32, into: UnsafeMutableRawBufferPointer(rebasing: dst[0..<(n * 4)]))
            }
            bufA.withUnsafeBufferPointer { pa in
                bufB.withUnsafeBufferPointer { pb in
                    var sa = 0.0, sd = 0.0
                    for k in 0..<n {
                        let va = Double(pa[k]), d = Double(pb[k]) - va
                        sa += va * va
                        sd += d * d
                    }
                    sumA += sa
                    sumD += sd
                }
            }
            start += n
        }
        fa.release(ia)
        fb.release(ib)
        return (sumA.squareRoot(), sumD.squareRoot())
    }

    /// The stored tensor of a manifest entry, checked against it.
    static func stored(_ e: ExpertManifest.TensorEntry, in f: SafeTensorsFile) throws(BundleError) -> TensorInfo {
        guard let info = f.info(e.name) else { throw BundleError(f.path, "tensor '\(e.name)' is missing") }
        guard info.shape == e.shape, info.dtype.rawValue == e.dtype else {
            throw BundleError(f.path, "tensor '\(e.name)' is \(info.dtype.rawValue) \(info.shape), the manifest says \(e.dtype) \(e.shape)")
        }
        guard info.dtype.isFloatConvertible else { throw BundleError(f.path, "tensor '\(e.name)' is \(info.dtype.rawValue), not F32, F16 or BF16") }
        return info
    }
}

/// A buffer written at distinct indices by concurrent iterations.
private struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
