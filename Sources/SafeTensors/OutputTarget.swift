#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Where a command writes, and the one policy every writer follows before it writes anything
/// (docs/reliability.md, "Output paths"):
///
/// - an existing output is replaced only when `replace` is set;
/// - an output is never one of the command's inputs, inside one, or a directory holding one;
/// - an existing output is replaced only by an output of the same kind (a file by a file, a
///   bundle by a bundle, a diffusers UNet folder by such a folder; a run directory never);
/// - the parent directories are created.
public struct OutputTarget: Sendable {
    /// What is written at the path.
    public enum Kind: String, Sendable {
        /// A regular file (safetensors weights, latents, forward outputs).
        case file
        /// A bundle directory (holds `bundle.json`).
        case bundle
        /// A diffusers UNet folder (holds `config.json` and `diffusion_pytorch_model*.safetensors`).
        case unetFolder = "diffusers UNet folder"
        /// A diffusers pipeline folder (holds `model_index.json`).
        case pipelineFolder = "diffusers pipeline folder"

        /// Whether the existing entry at `path` (of kind `existing`) is of this kind.
        func matches(_ path: String, _ existing: RegularFile.Kind) -> Bool {
            let fm = FileManager.default
            switch self {
            case .file:
                return existing == .regular
            case .bundle:
                return existing == .directory && fm.fileExists(atPath: path + "/bundle.json")
            case .pipelineFolder:
                return existing == .directory && fm.fileExists(atPath: path + "/model_index.json")
            case .unetFolder:
                guard existing == .directory, fm.fileExists(atPath: path + "/config.json") else { return false }
                let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
                return names.contains { $0.hasPrefix("diffusion_pytorch_model") }
            }
        }
    }

    public let path: String
    public let kind: Kind
    /// Whether an existing output of the same kind may be replaced.
    public var replace: Bool
    /// Every path the command reads (files or directories).
    public var inputs: [String]

    public init(path: String, kind: Kind, replace: Bool, inputs: [String]) {
        self.path = path
        self.kind = kind
        self.replace = replace
        self.inputs = inputs
    }

    /// Applies the policy and creates the parent directories; throws, naming the path, when the
    /// output may not be written there.
    public func prepare() throws(SafeTensorsError) {
        let target = Self.resolved(path)
        for input in inputs where !input.isEmpty {
            let source = Self.resolved(input)
            if target == source || Self.isInside(source, target) || Self.isInside(target, source) {
                throw SafeTensorsError(file: path, .io("is \(target == source ? "" : Self.isInside(source, target) ? "a directory holding " : "inside ")"
                                                       + "an input of this command (\(input)); choose another output"))
            }
        }
        let existing: RegularFile.Kind?
        do { existing = try RegularFile.status(path)?.kind } catch { throw SafeTensorsError(file: path, .io(error.reason)) }
        if let existing {
            guard replace else { throw SafeTensorsError(file: path, .exists) }
            guard kind.matches(path, existing) else {
                throw SafeTensorsError(file: path, .io("exists and is not a \(kind.rawValue) (\(existing.rawValue)); only a \(kind.rawValue) is replaced"))
            }
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
            throw SafeTensorsError(file: path, .io("cannot create the directory \(parent): \(error.localizedDescription)"))
        }
    }

    /// The absolute path with symbolic links resolved as far as the path exists.
    static func resolved(_ path: String) -> String {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        var tail: [String] = []
        while !FileManager.default.fileExists(atPath: url.path), url.path != "/" {
            tail.insert(url.lastPathComponent, at: 0)
            url.deleteLastPathComponent()
        }
        var base = url.resolvingSymlinksInPath().path
        for t in tail { base = (base == "/" ? "" : base) + "/" + t }
        return base
    }

    /// Whether `inner` lies strictly inside the directory `outer`.
    static func isInside(_ inner: String, _ outer: String) -> Bool {
        inner.count > outer.count && inner.hasPrefix(outer == "/" ? "/" : outer + "/")
    }
}
