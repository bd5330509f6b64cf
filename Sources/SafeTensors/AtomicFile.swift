#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CFileCopy
import Foundation

/// A file written under a temporary name beside its destination and renamed into place
/// only by `commit()`. Dropped without a commit, the temporary file is removed.
public final class AtomicFile {
    /// The final path.
    public let destination: String
    /// The temporary path being written.
    public let temporaryPath: String
    private var fd: Int32
    private var buffer: UnsafeMutableRawPointer
    private var buffered = 0
    private static let bufferSize = 1 << 20
    /// Bytes written so far.
    public private(set) var bytesWritten = 0 {
        didSet { startWritebackIfDue() }
    }
    /// Up to where writeback has been started.
    private var writebackStarted = 0
    private static let writebackChunk = 64 << 20

    /// Starts writeback of every completed 64 MB, so the disk works while we copy and the final
    /// fsync waits for little.
    private func startWritebackIfDue() {
        let flushed = bytesWritten - buffered
        guard fd >= 0, flushed - writebackStarted >= Self.writebackChunk else { return }
        alter_start_writeback(fd, Int64(writebackStarted), Int64(flushed - writebackStarted))
        writebackStarted = flushed
    }

    /// Creates the temporary file for `destination` (in the same directory).
    public init(destination: String) throws(SafeTensorsError) {
        self.destination = destination
        let url = URL(fileURLWithPath: destination)
        let dir = url.deletingLastPathComponent().path
        temporaryPath = dir + "/.\(url.lastPathComponent).alter-tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        TemporaryPaths.removeStale(near: destination)
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SafeTensorsError(file: destination, .io("cannot create \(temporaryPath): \(errnoString())")) }
        buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 64)
        TemporaryPaths.shared.add(temporaryPath)
    }

    deinit {
        discard()
        buffer.deallocate()
    }

    /// Appends bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard fd >= 0 else { throw SafeTensorsError(file: destination, .io("write after close")) }
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        if bytes.count >= Self.bufferSize {
            try flush()
            try writeAll(src, bytes.count)
        } else {
            if buffered + bytes.count > Self.bufferSize { try flush() }
            (buffer + buffered).copyMemory(from: src, byteCount: bytes.count)
            buffered += bytes.count
        }
        bytesWritten += bytes.count
    }

    /// Appends bytes.
    public func write(_ bytes: [UInt8]) throws(SafeTensorsError) {
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
        defer { p.deallocate() }
        p.copyBytes(from: bytes)
        try write(UnsafeRawBufferPointer(p))
    }

    /// Appends `count` bytes read from `source` at `offset`, copied by the kernel
    /// (`copy_file_range`, falling back to read/write where the kernel cannot).
    public func copy(from source: Int32, offset: Int, count: Int) throws(SafeTensorsError) {
        guard fd >= 0 else { throw SafeTensorsError(file: destination, .io("write after close")) }
        try flush()
        var inOff = Int64(offset)
        var remaining = count
        while remaining > 0 {
            let r = alter_copy_file_range(source, &inOff, fd, remaining)
            if r > 0 {
                remaining -= r
                continue
            }
            if r < 0 && errno == EINTR { continue }
            if r == 0 { throw SafeTensorsError(file: destination, .io("source ended \(remaining) bytes early")) }
            // EXDEV, ENOSYS, EINVAL...: copy through a buffer.
            let chunk = min(remaining, Self.bufferSize)
            let n = pread(source, buffer, chunk, off_t(inOff))
            if n < 0 {
                if errno == EINTR { continue }
                throw SafeTensorsError(file: destination, .io("read failed: \(errnoString())"))
            }
            if n == 0 { throw SafeTensorsError(file: destination, .io("source ended \(remaining) bytes early")) }
            try writeAll(UnsafeRawPointer(buffer), n)
            inOff += Int64(n)
            remaining -= n
        }
        bytesWritten += count
    }

    private func flush() throws(SafeTensorsError) {
        if buffered > 0 {
            try writeAll(UnsafeRawPointer(buffer), buffered)
            buffered = 0
        }
    }

    private func writeAll(_ p: UnsafeRawPointer, _ n: Int) throws(SafeTensorsError) {
        var done = 0
        while done < n {
            let r = Glibc.write(fd, p + done, n - done)
            if r < 0 {
                if errno == EINTR { continue }
                throw SafeTensorsError(file: destination, .io("write failed: \(errnoString())"))
            }
            done += r
        }
    }

    /// Flushes, fsyncs, closes and renames into place, then fsyncs the directory.
    public func commit() throws(SafeTensorsError) {
        try flush()
        guard fsync(fd) == 0 else { throw SafeTensorsError(file: destination, .io("fsync failed: \(errnoString())")) }
        close(fd)
        fd = -1
        guard rename(temporaryPath, destination) == 0 else {
            let why = errnoString()
            discard()
            throw SafeTensorsError(file: destination, .io("rename failed: \(why)"))
        }
        TemporaryPaths.shared.remove(temporaryPath)
        syncDirectory(of: destination)
    }

    /// Writes `data` to `path` atomically (temporary file, fsync, rename).
    public static func write(_ data: Data, to path: String) throws(SafeTensorsError) {
        let f = try AtomicFile(destination: path)
        do {
            try f.write([UInt8](data))
            try f.commit()
        } catch {
            f.discard()
            throw error
        }
    }

    /// Closes and removes the temporary file (no effect after `commit()`).
    public func discard() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if TemporaryPaths.shared.remove(temporaryPath) { unlink(temporaryPath) }
    }
}

/// Fsyncs the directory holding `path`, so a rename into it is durable.
public func syncDirectory(of path: String) {
    let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
    let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 {
        _ = fsync(dfd)
        close(dfd)
    }
}

/// Temporary files and directories in progress, so that an interrupt handler can remove them.
public final class TemporaryPaths: @unchecked Sendable {
    /// The process-wide registry.
    public static let shared = TemporaryPaths()
    private let lock = NSLock()
    private var paths: Set<String> = []

    public func add(_ path: String) {
        lock.lock(); defer { lock.unlock() }
        paths.insert(path)
    }

    /// Forgets `path`; returns whether it was registered.
    @discardableResult
    public func remove(_ path: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return paths.remove(path) != nil
    }

    /// Removes every registered path from disk (files and directory trees).
    public func removeAll() {
        lock.lock()
        let all = paths
        paths.removeAll()
        lock.unlock()
        for p in all { try? FileManager.default.removeItem(atPath: p) }
    }
}

extension JSONEncoder {
    /// The encoder of every JSON file and `--json` output alter writes: pretty-printed, keys
    /// sorted, slashes unescaped. Keys come from each type's explicit `CodingKeys`
    /// (formats/cli-json.md); no key strategy is applied.
    public static func alterOutput() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

extension JSONDecoder {
    /// A decoder that reads each key named in `table` (at any depth) as the key it maps to: how an
    /// older version of a JSON file with renamed keys is read by the current types.
    public static func renamingKeys(_ table: [String: String]) -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .custom { path in
            let last = path[path.count - 1]
            if let i = last.intValue { return RenamedKey(intValue: i) }
            return RenamedKey(stringValue: table[last.stringValue] ?? last.stringValue)
        }
        return d
    }
}

private struct RenamedKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        stringValue = String(intValue)
        self.intValue = intValue
    }
}
