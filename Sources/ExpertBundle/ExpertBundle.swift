import Experts
import Foundation
import NN
import SafeTensors
import StableDiffusion
import TensorCore

/// A multi-expert bundle on disk (formats/bundle.md), read lazily: manifests at once, tensors
/// when a UNet is built, and then only those of the experts asked for.
public final class ExpertBundle: @unchecked Sendable {
    public let path: String
    public let manifest: BundleManifest
    /// Expert manifests, by index.
    public let experts: [ExpertManifest]
    public let config: UNetConfig
    public let predictionType: NoiseSchedule.PredictionType
    private var files: [String: SafeTensorsFile] = [:]
    private let lock = NSLock()

    /// Whether `path` is a bundle directory (holds `bundle.json`).
    public static func isBundle(_ path: String) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &dir) && dir.boolValue
            && FileManager.default.fileExists(atPath: path + "/bundle.json")
    }

    /// Reads and checks the manifests (schema, versions, references between them) and every
    /// number in them that sizes anything (`checkBounds`): the architecture (`UNetConfig.validate`),
    /// the MAC latent size and context length (`LatentSize`), `train_timesteps` and the routing
    /// table's length, the expert count, file byte counts. Checksums, routing entries and tensor
    /// contents are checked by `verify`.
    public init(path: String) throws(BundleError) {
        self.path = path
        let manifestPath = path + "/bundle.json"
        guard (try? RegularFile.status(manifestPath, followSymlinks: false)) != nil else {
            throw BundleError(path, "not a bundle: bundle.json not found")
        }
        let data = try Self.readManifest("bundle.json", in: path, what: "bundle.json")
        manifest = try BundleManifest.decode(data, path: manifestPath)
        do { config = try UNetConfig(diffusersJSON: manifest.architecture.data(), source: manifestPath + " (architecture)") } catch {
            throw BundleError(manifestPath, "architecture: \(error)")
        }
        guard let p = NoiseSchedule.PredictionType(rawValue: manifest.predictionType) else {
            throw BundleError(manifestPath, "prediction_type \"\(manifest.predictionType)\" is neither epsilon nor v_prediction")
        }
        predictionType = p
        try Self.checkBounds(manifest, config: config, path: manifestPath)
        if let c = manifest.components { try Self.checkComponents(c, path: manifestPath) }
        var experts: [ExpertManifest] = []
        for (i, entry) in manifest.experts.enumerated() {
            guard entry.index == i else { throw BundleError(manifestPath, "experts[\(i)] has index \(entry.index)") }
            let file = try Self.resolve(entry.manifest, in: path, what: "experts[\(i)].manifest")
            guard (try? RegularFile.status(file, followSymlinks: false)) != nil else { throw BundleError(file, "expert manifest not found") }
            let d = try Self.readManifest(entry.manifest, in: path, what: "experts[\(i)].manifest")
            let m = try ManifestCoding.decode(ExpertManifest.self, from: d, path: file, format: ExpertManifest.formatName,
                                              version: ExpertManifest.formatVersion, keys: ExpertManifest.CodingKeys.allCases.map(\.rawValue))
            guard m.expert == i else { throw BundleError(file, "expert is \(m.expert), expected \(i)") }
            try Self.checkBounds(m, path: file)
            experts.append(m)
        }
        self.experts = experts
        guard !experts.isEmpty else { throw BundleError(manifestPath, "no experts") }
        guard !manifest.routing.isEmpty else { throw BundleError(manifestPath, "the routing table is empty") }
        guard manifest.macs.experts.count == experts.count else {
            throw BundleError(manifestPath, "macs.experts has \(manifest.macs.experts.count) entries for \(experts.count) experts")
        }
    }

    /// Checks the numbers of `bundle.json` that size memory or arithmetic against `Bounds`, naming
    /// the field: `macs.latent_height`, `macs.latent_width`, `macs.context_length` (`LatentSize`),
    /// `train_timesteps` (`Bounds.trainTimesteps`) and `routing` (one entry per training timestep),
    /// `experts` (`Bounds.experts`, at most one per timestep), `files[i].bytes` and
    /// `source.files[i].bytes` (`Bounds.fileBytes`, and their sum), MAC counts not negative.
    static func checkBounds(_ m: BundleManifest, config: UNetConfig, path: String) throws(BundleError) {
        do throws(SizeError) {
            do { _ = try LatentSize(height: m.macs.latentHeight, width: m.macs.latentWidth, contextLength: m.macs.contextLength, config: config) } catch {
                throw error.nested(in: "macs")
            }
            try Bounds.check(m.trainTimesteps, in: Bounds.trainTimesteps, field: "train_timesteps")
            guard m.routing.count == m.trainTimesteps else {
                throw SizeError(field: "routing", "has \(m.routing.count) entries, expected one per training timestep: \(m.trainTimesteps) (train_timesteps)")
            }
            try Bounds.check(m.experts.count, in: Bounds.experts.lowerBound...min(Bounds.experts.upperBound, m.trainTimesteps), field: "experts")
            for (i, f) in m.files.enumerated() { try Bounds.check(f.bytes, in: Bounds.fileBytes, field: "files[\(i)].bytes") }
            for (i, f) in m.source.files.enumerated() { try Bounds.check(f.bytes, in: Bounds.fileBytes, field: "source.files[\(i)].bytes") }
            _ = try Bounds.sum(m.files.map(\.bytes), field: "files[].bytes")
            for (field, v) in [("macs.dense", m.macs.dense), ("macs.dense_conv_linear", m.macs.denseConvLinear)] + m.macs.experts.enumerated().map({ ("macs.experts[\($0.offset)]", $0.element) })
            where v < 0 {
                throw SizeError(field: field, "is \(v), expected a MAC count (not negative)")
            }
        } catch { throw BundleError(path, error.description) }
    }

    /// Each shape in `shapes` (the tensors of the manifest list `field`) has dimensions that are
    /// not negative and a byte count (at up to 8 bytes an element) within `Bounds.fileBytes`, and
    /// their bytes together fit in an `Int`.
    static func checkTensorBytes(_ shapes: [[Int]], field: String) throws(SizeError) {
        var bytes: [Int] = []
        for (i, shape) in shapes.enumerated() {
            let shapeField = "\(field)[\(i)].shape"
            guard shape.allSatisfy({ $0 >= 0 }) else { throw SizeError(field: shapeField, "is \(shape), expected sizes that are not negative") }
            var n = 8
            for d in shape { n = try Bounds.product(n, d, field: shapeField) }
            try Bounds.check(n, in: Bounds.fileBytes, field: shapeField + " (bytes)")
            bytes.append(n)
        }
        _ = try Bounds.sum(bytes, field: "\(field)[].shape (bytes)")
    }

    /// Checks the numbers of an expert manifest that size arithmetic: every tensor's shape has
    /// dimensions that are not negative and a byte count (at up to 8 bytes an element) within
    /// `Bounds.fileBytes`, and the bytes of all its tensors fit in an `Int`; MACs not negative.
    static func checkBounds(_ m: ExpertManifest, path: String) throws(BundleError) {
        do throws(SizeError) {
            try checkTensorBytes(m.tensors.map(\.shape), field: "tensors")
            for (field, v) in [("macs", m.macs), ("macs_conv_linear", m.macsConvLinear), ("timestep_count", m.timestepCount)] where v < 0 {
                throw SizeError(field: field, "is \(v), expected a count (not negative)")
            }
        } catch { throw BundleError(path, error.description) }
    }

    /// The expert that serves training timestep `t` (clamped to 0 ..< train_timesteps), or an
    /// error when the routing table names an expert that does not exist (see `verify`).
    public func expert(forTimestep t: Int) throws(BundleError) -> Int {
        let e = manifest.routing[min(max(t, 0), manifest.routing.count - 1)]
        guard e >= 0 && e < experts.count else { throw BundleError(path + "/bundle.json", "routing[\(t)] = \(e) is not an expert") }
        return e
    }

    /// The bundle's decisions: kept units per expert (from the expert manifests) and the routing table.
    public var decisions: ExpertDecisions {
        let units = manifest.units
        return ExpertDecisions(units: units, kept: experts.map { e in let k = Set(e.keptUnits); return units.map(k.contains) },
                               route: manifest.routing)
    }

    /// Units expert `e` skips.
    public func skippedUnits(expert e: Int) -> Set<String> { Set(experts[e].skippedUnits) }

    /// Units no expert keeps (not stored).
    public var absentUnits: Set<String> {
        experts.dropFirst().reduce(Set(experts[0].skippedUnits)) { $0.intersection($1.skippedUnits) }
    }

    /// The UNet of one expert: only its tensors are read; the units it skips have no parameters.
    public func unet(expert e: Int) throws(BundleError) -> UNet {
        try build(entries: experts[e].tensors, absent: skippedUnits(expert: e))
    }

    /// The UNet holding every stored tensor, for sampling with all experts (units every expert
    /// skips have no parameters).
    public func unet() throws(BundleError) -> UNet {
        var seen = Set<String>(), entries: [ExpertManifest.TensorEntry] = []
        for m in experts { for t in m.tensors where seen.insert(t.name).inserted { entries.append(t) } }
        return try build(entries: entries, absent: absentUnits)
    }

    private func build(entries: [ExpertManifest.TensorEntry], absent: Set<String>) throws(BundleError) -> UNet {
        let source = Source(bundle: self, entries: Dictionary(entries.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }))
        do { return try UNet(config: config, parameters: source, absentUnits: absent) } catch let e as BundleError {
            throw e
        } catch { throw BundleError(path, "\(error)") }
    }

    /// The weight file at a manifest's relative path, opened once.
    func file(_ relative: String) throws(BundleError) -> SafeTensorsFile {
        let full = try Self.resolve(relative, in: path, what: "file")
        lock.lock(); defer { lock.unlock() }
        if let f = files[relative] { return f }
        do {
            let f = try SafeTensorsFile(path: full)
            files[relative] = f
            return f
        } catch { throw BundleError(full, (error.tensor.map { "tensor '\($0)': " } ?? "") + error.message) }
    }

    /// Tensors listed by manifests, converted to Float32 on request.
    struct Source: ParameterSource {
        let bundle: ExpertBundle
        let entries: [String: ExpertManifest.TensorEntry]

        func tensor(_ name: String, shape: [Int]) throws -> Tensor {
            guard let e = entries[name] else { throw BundleError(bundle.path, "tensor '\(name)' is not listed by the expert manifests") }
            guard e.shape == shape else { throw BundleError(bundle.path, "tensor '\(name)' is listed with shape \(e.shape), the architecture needs \(shape)") }
            guard bundle.manifest.files.contains(where: { $0.path == e.file }) else {
                throw BundleError(bundle.path + "/bundle.json", "tensor '\(name)' is stored in \(e.file), which `files` does not list (see `alter verify`)")
            }
            let f = try bundle.file(e.file)
            let info = try f.require(name)
            guard info.shape == shape else { throw BundleError(f.path, "tensor '\(name)' has shape \(info.shape), expected \(shape)") }
            guard info.dtype.rawValue == e.dtype else { throw BundleError(f.path, "tensor '\(name)' is \(info.dtype.rawValue), the manifest says \(e.dtype)") }
            return Tensor(shape: shape, values: try f.floats(name))
        }
    }
}
