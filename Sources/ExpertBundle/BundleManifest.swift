import Foundation
import SafeTensors

/// `bundle.json` (formats/bundle.md).
public struct BundleManifest: Codable, Equatable, Sendable {
    public static let formatName = "alter.bundle"
    /// Version 3 added the optional `components` (the pipeline's tokenizer, text encoder and VAE);
    /// a bundle without them is written as version 2. Version 2 renamed `macs.kept_fraction` to
    /// `kept_mac_fraction`; versions 1 and 2 are still read.
    public static let formatVersion = 3
    /// The first version with `components`.
    public static let componentsVersion = 3

    public struct Source: Codable, Equatable, Sendable {
        public var model: String
        public var files: [FileDigest]
    }

    public struct FileDigest: Codable, Equatable, Sendable {
        public var path: String
        public var bytes: Int
        public var sha256: String
    }

    public struct ExpertEntry: Codable, Equatable, Sendable {
        public var index: Int
        public var manifest: String
        public var sha256: String
    }

    public struct MACs: Codable, Equatable, Sendable {
        public var latentHeight: Int
        public var latentWidth: Int
        public var contextLength: Int
        public var dense: Int
        public var denseConvLinear: Int
        public var experts: [Int]
        public var meanOverTrainTimesteps: Double
        public var keptFraction: Double

        enum CodingKeys: String, CodingKey {
            case latentHeight = "latent_height", latentWidth = "latent_width", contextLength = "context_length"
            case dense, denseConvLinear = "dense_conv_linear", experts
            case meanOverTrainTimesteps = "mean_over_train_timesteps", keptFraction = "kept_mac_fraction"
        }
    }

    public var format = BundleManifest.formatName
    public var formatVersion = BundleManifest.formatVersion
    public var architecture: JSONValue
    public var predictionType: String
    public var scheduler: JSONValue
    public var source: Source
    public var trainTimesteps: Int
    public var routing: [Int]
    public var units: [String]
    public var experts: [ExpertEntry]
    public var files: [FileDigest]
    public var macs: MACs
    /// The pipeline's tokenizer, text encoder and VAE (version 3), nil when the bundle carries none.
    public var components: Components?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, formatVersion = "format_version", architecture, predictionType = "prediction_type", scheduler, source
        case trainTimesteps = "train_timesteps", routing, units, experts, files, macs, components
    }
}

extension BundleManifest {
    /// Parses and checks `bundle.json` bytes (strict JSON, known format and version, no unknown
    /// keys); errors name `path`. References to other files are checked by `ExpertBundle(path:)`.
    public static func decode(_ data: Data, path: String) throws(BundleError) -> BundleManifest {
        let m = try ManifestCoding.decode(BundleManifest.self, from: data, path: path, format: formatName, version: formatVersion,
                                          keys: CodingKeys.allCases.map(\.rawValue))
        if m.components != nil && m.formatVersion < componentsVersion {
            throw BundleError(path, "unknown key \"components\" (format_version \(m.formatVersion) has none; components need version \(componentsVersion))")
        }
        return m
    }
}

/// `experts/expert-<i>.json` (formats/bundle.md).
public struct ExpertManifest: Codable, Equatable, Sendable {
    public static let formatName = "alter.bundle.expert"
    /// Version 2 renamed `kept_fraction` to `kept_mac_fraction`; version 1 is still read.
    public static let formatVersion = 2

    public struct TensorEntry: Codable, Equatable, Sendable {
        public var name: String
        public var file: String
        public var dtype: String
        public var shape: [Int]
        public var sha256: String
    }

    public var format = ExpertManifest.formatName
    public var formatVersion = ExpertManifest.formatVersion
    public var expert: Int
    public var keptUnits: [String]
    public var skippedUnits: [String]
    public var macs: Int
    public var macsConvLinear: Int
    public var keptFraction: Double
    /// Inclusive ranges [first, last] of the training timesteps routed here.
    public var timesteps: [[Int]]
    public var timestepCount: Int
    public var tensors: [TensorEntry]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, formatVersion = "format_version", expert, keptUnits = "kept_units", skippedUnits = "skipped_units"
        case macs, macsConvLinear = "macs_conv_linear", keptFraction = "kept_mac_fraction", timesteps
        case timestepCount = "timestep_count", tensors
    }
}

extension ExpertManifest {
    /// Parses and checks an expert manifest's bytes (see `BundleManifest.decode`).
    public static func decode(_ data: Data, path: String) throws(BundleError) -> ExpertManifest {
        try ManifestCoding.decode(ExpertManifest.self, from: data, path: path, format: formatName, version: formatVersion,
                                  keys: CodingKeys.allCases.map(\.rawValue))
    }
}

enum ManifestCoding {
    /// Keys that format version 1 spelled differently (version 1 -> current).
    static let version1Keys = ["kept_fraction": "kept_mac_fraction"]

    /// Decodes `T` from `data`, refusing what `StrictJSON` refuses (duplicate keys among it),
    /// unknown top-level keys and unknown format versions (`version` and version 1, whose keys are
    /// read through `version1Keys`).
    static func decode<T: Decodable>(_ type: T.Type, from data: Data, path: String, format: String, version: Int,
                                     keys: [String]) throws(BundleError) -> T {
        let any: Any
        do { any = try StrictJSON.jsonObject(data, source: path) } catch { throw BundleError(path, error.message) }
        guard let object = any as? [String: Any] else { throw BundleError(path, "not a JSON object") }
        guard let f = object["format"] as? String, f == format else {
            throw BundleError(path, "format is \(object["format"].map { "\($0)" } ?? "missing"), expected \"\(format)\"")
        }
        guard let v = object["format_version"] as? Int else { throw BundleError(path, "format_version is missing or not an integer") }
        guard (1...version).contains(v) else {
            throw BundleError(path, "format_version \(v) is not supported (this alter reads versions 1 to \(version))")
        }
        let rename = v == 1 ? version1Keys : [:]
        let known = Set(keys)
        if let extra = object.keys.sorted().first(where: { !known.contains(rename[$0] ?? $0) }) {
            throw BundleError(path, "unknown key \"\(extra)\"")
        }
        let decoder = JSONDecoder.renamingKeys(rename)
        do { return try decoder.decode(T.self, from: data) } catch let DecodingError.keyNotFound(k, _) {
            throw BundleError(path, "missing key \"\(k.stringValue)\"")
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw BundleError(path, "wrong type at \(ctx.codingPath.map(\.stringValue).joined(separator: "."))")
        } catch {
            throw BundleError(path, "invalid: \(error)")
        }
    }

    static func encode(_ value: some Encodable) -> Data {
        (try? JSONEncoder.alterOutput().encode(value)) ?? Data()
    }
}
