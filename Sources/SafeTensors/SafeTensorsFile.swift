#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A safetensors file opened read-only through a memory map.
///
/// Opening reads and validates only the header; tensor bytes are paged in when asked for.
/// Buffers handed out are valid while the `SafeTensorsFile` is alive.
public final class SafeTensorsFile: @unchecked Sendable {
    /// Path the file was opened from.
    public let path: String
    /// The validated header.
    public let header: SafeTensorsHeader
    /// Size of the file in bytes.
    public let fileSize: Int
    private let base: UnsafeMutableRawPointer?
    /// The open file, kept for kernel-side copies (`copy_file_range`).
    let descriptor: Int32
    private let dataStart: Int
    private let index: [String: Int]

    /// Opens and validates `path` (a regular file, or a symbolic link to one; see `RegularFile`).
    /// Throws `SafeTensorsError` naming the file (and tensor).
    public init(path: String) throws(SafeTensorsError) {
        self.path = path
        // Regular files only, checked before opening (a FIFO or a device would block or never end).
        let fd: Int32, size: Int
        do { (fd, size) = try RegularFile.open(path) } catch { throw SafeTensorsError(file: path, .cannotOpen(error.reason)) }
        var keepOpen = false
        defer { if !keepOpen { close(fd) } }
        fileSize = size
        guard size >= 8 else { throw SafeTensorsError(file: path, .fileTooShort(size: size)) }
        guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
            throw SafeTensorsError(file: path, .cannotOpen("mmap failed: \(errnoString())"))
        }
        do {
            header = try SafeTensorsHeader.parse(
                UnsafeRawBufferPointer(start: m, count: size), fileSize: size, file: path)
        } catch {
            munmap(m, size)
            throw error
        }
        base = m
        descriptor = fd
        keepOpen = true
        dataStart = 8 + header.headerLength
        var idx: [String: Int] = [:]
        for (i, t) in header.tensors.enumerated() { idx[t.name] = i }
        index = idx
    }

    deinit {
        if let base { munmap(base, fileSize) }
        close(descriptor)
    }

    /// Byte offset of `info`'s data in the file.
    public func fileOffset(_ info: TensorInfo) -> Int { dataStart + info.dataOffsets.lowerBound }

    /// Entries ordered by data offset.
    public var tensors: [TensorInfo] { header.tensors }
    /// The `__metadata__` strings, if any.
    public var metadata: [String: String]? { header.metadata }
    /// Tensor names in data order.
    public var names: [String] { header.tensors.map(\.name) }

    /// The entry for `name`, or nil.
    public func info(_ name: String) -> TensorInfo? {
        index[name].map { header.tensors[$0] }
    }

    /// The entry for `name`, or a `noSuchTensor` error.
    public func require(_ name: String) throws(SafeTensorsError) -> TensorInfo {
        guard let i = info(name) else { throw SafeTensorsError(file: path, tensor: name, .noSuchTensor) }
        return i
    }

    /// The raw little-endian bytes of a tensor; valid while this file is alive.
    public func rawBytes(_ info: TensorInfo) -> UnsafeRawBufferPointer {
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + dataStart + info.dataOffsets.lowerBound, count: info.byteCount)
    }

    /// The raw bytes of the tensor called `name`.
    public func rawBytes(_ name: String) throws(SafeTensorsError) -> UnsafeRawBufferPointer {
        rawBytes(try require(name))
    }

    /// The tensor called `name` converted to `Float` (F32, F16 and BF16 only).
    public func floats(_ name: String) throws(SafeTensorsError) -> [Float] {
        let info = try require(name)
        guard info.dtype.isFloatConvertible else { throw SafeTensorsError(file: path, tensor: name, .notFloat(info.dtype)) }
        let src = rawBytes(info)
        return [Float](unsafeUninitializedCapacity: info.elementCount) { buf, count in
            DTypeConversion.convert(src, from: info.dtype, to: .f32, into: UnsafeMutableRawBufferPointer(buf))
            count = info.elementCount
        }
    }

    /// Tells the kernel the pages of `info` will not be needed again, so a streaming pass over
    /// a large file does not keep it resident.
    public func release(_ info: TensorInfo) {
        guard let base, info.byteCount > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = dataStart + info.dataOffsets.lowerBound
        let end = dataStart + info.dataOffsets.upperBound
        let alignedStart = start - start % page
        _ = madvise(base + alignedStart, end - alignedStart, MADV_DONTNEED)
    }
}

func errnoString() -> String {
    String(cString: strerror(errno))
}
