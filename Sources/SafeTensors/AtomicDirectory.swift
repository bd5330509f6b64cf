#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A directory built under a temporary name beside its destination and published by renaming it
/// into place (`commit`). An existing destination, when it may be replaced, is first renamed
/// aside and removed after the new one is in place, so a crash leaves the old directory or the new
/// one complete, never a mixture. Dropped without a commit (an error, an interrupt through
/// `TemporaryPaths`), the staging directory is removed.
public final class AtomicDirectory {
    /// The final path.
    public let destination: String
    /// The staging directory being filled.
    public let path: String
    /// Where an existing destination is moved while the new one is renamed into place.
    public let asidePath: String
    private var committed = false

    /// Creates the staging directory for `destination`: `staging` if given (a stale one of that
    /// name is removed first), else a hidden, unique sibling `.NAME.alter-tmp-PID-RANDOM`.
    /// `aside` names where an old destination waits during `commit` (default: the staging path
    /// with `.old` appended).
    public init(destination: String, staging: String? = nil, aside: String? = nil) throws(SafeTensorsError) {
        self.destination = destination
        let url = URL(fileURLWithPath: destination)
        let dir = url.deletingLastPathComponent().path
        path = staging ?? dir + "/.\(url.lastPathComponent).alter-tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        asidePath = aside ?? path + ".old"
        let fm = FileManager.default
        if staging != nil { try? fm.removeItem(atPath: path) } else { TemporaryPaths.removeStale(near: destination) }
        do { try fm.createDirectory(atPath: path, withIntermediateDirectories: false) } catch {
            throw SafeTensorsError(file: destination, .io("cannot create \(path): \(error.localizedDescription)"))
        }
        TemporaryPaths.shared.add(path)
    }

    deinit { discard() }

    /// Creates a subdirectory (and its parents) inside the staging directory.
    public func createSubdirectory(_ relative: String) throws(SafeTensorsError) {
        do { try FileManager.default.createDirectory(atPath: path + "/" + relative, withIntermediateDirectories: true) } catch {
            throw SafeTensorsError(file: destination, .io("cannot create \(path)/\(relative): \(error.localizedDescription)"))
        }
    }

    /// Publishes the staging directory at `destination`. An existing destination is an error
    /// (`.exists`) unless `replacing`; then it is renamed aside first and removed afterwards.
    public func commit(replacing: Bool) throws(SafeTensorsError) {
        precondition(!committed, "AtomicDirectory: committed twice")
        let fm = FileManager.default
        syncDirectory(of: path + "/.")
        var movedAside = false
        if fm.fileExists(atPath: destination) {
            guard replacing else { throw SafeTensorsError(file: destination, .exists) }
            try? fm.removeItem(atPath: asidePath)
            guard rename(destination, asidePath) == 0 else {
                throw SafeTensorsError(file: destination, .io("cannot move the old one aside: \(errnoString())"))
            }
            movedAside = true
        }
        guard rename(path, destination) == 0 else {
            let why = errnoString()
            if movedAside { _ = rename(asidePath, destination) }
            throw SafeTensorsError(file: destination, .io("cannot rename \(path) into place: \(why)"))
        }
        committed = true
        TemporaryPaths.shared.remove(path)
        syncDirectory(of: destination)
        if movedAside { try? fm.removeItem(atPath: asidePath) }
    }

    /// Removes the staging directory (no effect after `commit`).
    public func discard() {
        if !committed, TemporaryPaths.shared.remove(path) { try? FileManager.default.removeItem(atPath: path) }
    }
}
