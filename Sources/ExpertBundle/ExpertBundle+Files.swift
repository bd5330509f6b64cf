import Foundation
import SafeTensors

/// Files inside a bundle directory (formats/bundle.md, "Layout"): a bundle holds regular files and
/// directories only, no symbolic link at any depth, so every path a manifest names stays inside
/// the bundle and is the file that was hashed.
extension ExpertBundle {
    /// A path inside the bundle from a manifest's relative path (no absolute paths, no `.` or
    /// `..`, no empty component), refusing a symbolic link at any component under `bundle`.
    /// `what` names the manifest field in errors. The file need not exist.
    static func resolve(_ relative: String, in bundle: String, what: String) throws(BundleError) -> String {
        let parts = try checkRelative(relative, in: bundle, what: what)
        var prefix = bundle
        for p in parts {
            prefix += "/" + p
            let status: (kind: RegularFile.Kind, size: Int)?
            do { status = try RegularFile.status(prefix, followSymlinks: false) } catch { throw BundleError(prefix, error.reason) }
            guard let status else { break }
            if status.kind == .symlink { throw symlinkError(prefix) }
        }
        return bundle + "/" + relative
    }

    /// The components of a manifest's relative path, or an error when it could leave the bundle.
    @discardableResult
    static func checkRelative(_ relative: String, in bundle: String, what: String) throws(BundleError) -> [Substring] {
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
        guard !relative.hasPrefix("/"), !parts.isEmpty, !parts.contains(".."), !parts.contains("."), !parts.contains(""),
              !relative.utf8.contains(0) else {
            throw BundleError(bundle + "/bundle.json", "\(what) \"\(relative)\" is not a path inside the bundle")
        }
        return parts
    }

    static func symlinkError(_ path: String) -> BundleError {
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)).map { " (to \($0))" } ?? ""
        return BundleError(path, "is a symbolic link\(target); a bundle holds regular files only (formats/bundle.md)")
    }

    /// The bytes of a manifest inside the bundle (`resolve`d, a regular file of at most 64 MB),
    /// checked by `StrictJSON`.
    static func readManifest(_ relative: String, in bundle: String, what: String) throws(BundleError) -> Data {
        let full = try resolve(relative, in: bundle, what: what)
        do { return try StrictJSON.read(full, limit: 64 << 20, followSymlinks: false) } catch {
            throw BundleError(full, error.message)
        }
    }

    /// Every entry stored under the bundle directory, recursively (symbolic links are listed, not
    /// followed), as paths relative to the bundle, with their kind; at most `limit` entries.
    func storedEntries(limit: Int = 100_000) -> (entries: [(path: String, kind: RegularFile.Kind)], errors: [String]) {
        var out: [(path: String, kind: RegularFile.Kind)] = []
        var errors: [String] = []
        var pending = [""]
        while let dir = pending.popLast() {
            let full = dir.isEmpty ? path : path + "/" + dir
            let names: [String]
            do { names = try FileManager.default.contentsOfDirectory(atPath: full).sorted() } catch {
                errors.append("\(dir.isEmpty ? "the bundle directory" : dir) cannot be listed: \(error.localizedDescription)")
                continue
            }
            for name in names {
                let rel = dir.isEmpty ? name : dir + "/" + name
                guard out.count < limit else { errors.append("more than \(limit) entries stored; the rest not examined"); return (out, errors) }
                let kind: RegularFile.Kind
                do { kind = try RegularFile.status(path + "/" + rel, followSymlinks: false)?.kind ?? .other } catch {
                    errors.append("\(rel): \(error.reason)")
                    continue
                }
                out.append((rel, kind))
                if kind == .directory { pending.append(rel) }
            }
        }
        return (out, errors)
    }
}
