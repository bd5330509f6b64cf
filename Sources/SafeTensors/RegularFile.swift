#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The one way alter opens a file it reads (weights, training data, manifests, configs, run
/// files): the path is checked with `stat` (or `lstat`) BEFORE it is opened, and only a regular
/// file is opened, so a FIFO, a device (`/dev/zero`), a socket or a directory is an error rather
/// than a read that blocks or never ends. The open itself is non-blocking, and the opened file is
/// checked again (`fstat`: a regular file, the same one) in case the path changed in between.
///
/// A symbolic link is followed (and its target's size reported) unless `followSymlinks` is
/// false; then it is refused ("is a symbolic link").
public enum RegularFile {
    /// What `stat` says about a path.
    public enum Kind: String, Sendable {
        case regular = "a regular file", directory = "a directory", symlink = "a symbolic link", fifo = "a FIFO"
        case characterDevice = "a character device", blockDevice = "a block device", socket = "a socket", other = "not a regular file"
    }

    /// The kind and size of the file at `path` (`lstat` when `followSymlinks` is false), or nil
    /// when nothing is there.
    public static func status(_ path: String, followSymlinks: Bool = true) throws(FileAccessError) -> (kind: Kind, size: Int)? {
        var st = stat()
        let rc = followSymlinks ? stat(path, &st) : lstat(path, &st)
        guard rc == 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw FileAccessError(path: path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        return (kind(st.st_mode), Int(st.st_size))
    }

    static func kind(_ mode: mode_t) -> Kind {
        switch mode & S_IFMT {
        case S_IFREG: return .regular
        case S_IFDIR: return .directory
        case S_IFLNK: return .symlink
        case S_IFIFO: return .fifo
        case S_IFCHR: return .characterDevice
        case S_IFBLK: return .blockDevice
        case S_IFSOCK: return .socket
        default: return .other
        }
    }

    /// The size of the regular file at `path`; any other kind of file is an error naming it.
    public static func size(_ path: String, followSymlinks: Bool = true) throws(FileAccessError) -> Int {
        guard let s = try status(path, followSymlinks: followSymlinks) else { throw FileAccessError(path: path, "not found") }
        guard s.kind == .regular else { throw notRegular(path, s.kind) }
        return s.size
    }

    static func notRegular(_ path: String, _ kind: Kind) -> FileAccessError {
        FileAccessError(path: path, kind == .other ? "not a regular file" : "is \(kind.rawValue), not a regular file")
    }

    /// Opens the regular file at `path` read-only and returns its descriptor (the caller closes
    /// it) and size. Checks before opening, so nothing blocks; see the type's documentation.
    public static func open(_ path: String, followSymlinks: Bool = true) throws(FileAccessError) -> (descriptor: Int32, size: Int) {
        guard let s = try status(path, followSymlinks: followSymlinks) else { throw FileAccessError(path: path, "not found") }
        guard s.kind == .regular else { throw notRegular(path, s.kind) }
        let fd = systemOpen(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (followSymlinks ? 0 : O_NOFOLLOW))
        guard fd >= 0 else { throw FileAccessError(path: path, "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw FileAccessError(path: path, "cannot open: \(why)")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw notRegular(path, kind(st.st_mode))
        }
        // Regular files never block; clear O_NONBLOCK so reads behave as usual.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return (fd, Int(st.st_size))
    }

    /// The whole content of the regular file at `path`, refusing files larger than `limit` bytes
    /// (checked before reading).
    public static func read(_ path: String, limit: Int = 256 << 20, followSymlinks: Bool = true) throws(FileAccessError) -> Data {
        let (fd, size) = try open(path, followSymlinks: followSymlinks)
        defer { close(fd) }
        guard size <= limit else { throw FileAccessError(path: path, "is \(size) bytes, more than the \(limit)-byte limit for this file") }
        var data = Data(count: size)
        var done = 0
        while done < size {
            let n = data.withUnsafeMutableBytes { buf in systemRead(fd, buf.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw FileAccessError(path: path, "read failed: \(String(cString: strerror(errno)))") }
            if n == 0 { break }  // the file shrank while being read
            done += n
        }
        guard done == size else { throw FileAccessError(path: path, "changed while being read (\(done) of \(size) bytes)") }
        return data
    }

    /// Calls `body` with each piece of the regular file at `path`, read in `chunk`-byte pieces
    /// (for hashing files of any size).
    public static func forEachChunk(_ path: String, chunk: Int = 4 << 20, followSymlinks: Bool = true,
                                    _ body: (UnsafeRawBufferPointer) -> Void) throws(FileAccessError) {
        let (fd, _) = try open(path, followSymlinks: followSymlinks)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = systemRead(fd, buffer.baseAddress!, chunk)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw FileAccessError(path: path, "read failed: \(String(cString: strerror(errno)))") }
            if n == 0 { return }
            body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }
}

/// The C library's `open` and `read`, which `RegularFile`'s own methods hide inside the type.
private func systemOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags) }
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buffer, count) }
