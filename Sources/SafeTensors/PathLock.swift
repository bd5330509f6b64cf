#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// An advisory lock (`flock`) held while a process writes an output or a run directory, so that a
/// second alter process writing the same path fails at once instead of silently replacing the
/// first one's work. Released when dropped (and by the kernel when the process dies).
public final class PathLock {
    /// The lock file.
    public let lockPath: String
    private var fd: Int32
    private let removeOnRelease: Bool

    /// Locks `path` through a hidden sibling lock file `.NAME.alter-lock`, removed on release.
    public convenience init(beside path: String) throws(SafeTensorsError) {
        let url = URL(fileURLWithPath: path)
        let lock = url.deletingLastPathComponent().path + "/.\(url.lastPathComponent).alter-lock"
        try self.init(lockFile: lock, describing: path, removeOnRelease: true)
    }

    /// Locks with the lock file `lockFile` (kept after release), reporting `describing` as the path
    /// that is busy.
    public init(lockFile: String, describing path: String, removeOnRelease: Bool = false) throws(SafeTensorsError) {
        lockPath = lockFile
        self.removeOnRelease = removeOnRelease
        fd = -1
        // A lock file removed by its previous holder between our open and our flock is retried.
        for _ in 0..<3 {
            let f = open(lockFile, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard f >= 0 else { throw SafeTensorsError(file: path, .io("cannot create the lock file \(lockFile): \(errnoString())")) }
            guard flock(f, LOCK_EX | LOCK_NB) == 0 else {
                let busy = errno == EWOULDBLOCK
                let why = errnoString()
                close(f)
                throw SafeTensorsError(file: path, .io(busy ? "another alter process is writing it (lock \(lockFile)); wait for it to finish"
                                                            : "cannot lock \(lockFile): \(why)"))
            }
            var held = stat(), named = stat()
            if fstat(f, &held) == 0, stat(lockFile, &named) == 0, held.st_ino == named.st_ino, held.st_dev == named.st_dev {
                fd = f
                return
            }
            close(f)
        }
        throw SafeTensorsError(file: path, .io("cannot lock \(lockFile): it keeps being replaced"))
    }

    deinit { release() }

    /// Releases the lock (no effect the second time).
    public func release() {
        guard fd >= 0 else { return }
        if removeOnRelease { unlink(lockPath) }
        close(fd)
        fd = -1
    }
}

extension TemporaryPaths {
    /// Removes the temporary siblings of `destination` (`.NAME.alter-tmp-PID-*`, files or
    /// directories) that processes which no longer exist left behind (killed during a write).
    public static func removeStale(near destination: String) {
        let url = URL(fileURLWithPath: destination)
        let dir = url.deletingLastPathComponent().path
        let prefix = ".\(url.lastPathComponent).alter-tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let pid = Int32(rest.prefix { $0.isNumber }), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: dir + "/" + name) }
        }
    }
}
