import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Recycles large float buffers, so that the many short-lived activations of a forward pass reuse
/// memory instead of page-faulting fresh zeroed pages from the kernel for every kernel call.
///
/// Buffers are grouped in size classes (powers of two and 1.5x powers of two); at most
/// `maxCachedBytes` are kept idle.
final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()
    /// Buffers smaller than this come from malloc directly.
    static let minPooledBytes = 1 << 16
    var maxCachedBytes = 1 << 30

    private let lock = NSLock()
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var cachedBytes = 0

    /// The size class (bytes) a request of `bytes` is served from.
    static func sizeClass(_ bytes: Int) -> Int {
        guard bytes > minPooledBytes else { return bytes }
        var p = minPooledBytes
        while p < bytes {
            if p + p / 2 >= bytes { return p + p / 2 }
            p <<= 1
        }
        return p
    }

    func allocate(bytes: Int) -> (UnsafeMutableRawPointer, Int) {
        let size = Self.sizeClass(max(bytes, 4))
        if size >= Self.minPooledBytes {
            lock.lock()
            if let p = free[size]?.popLast() {
                cachedBytes -= size
                lock.unlock()
                return (p, size)
            }
            lock.unlock()
        }
        return (Self.fresh(size), size)
    }

    /// Large buffers are 2 MB aligned and asked to be backed by transparent huge pages, which cuts
    /// TLB misses when matrix products stream through tens of megabytes.
    static func fresh(_ size: Int) -> UnsafeMutableRawPointer {
        let huge = 2 << 20
        guard size >= 2 * huge else { return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64) }
        let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: huge)
        _ = madvise(p, size - size % huge, MADV_HUGEPAGE)
        return p
    }

    func release(_ p: UnsafeMutableRawPointer, size: Int) {
        if size >= Self.minPooledBytes {
            lock.lock()
            if cachedBytes + size <= maxCachedBytes {
                free[size, default: []].append(p)
                cachedBytes += size
                lock.unlock()
                return
            }
            lock.unlock()
        }
        p.deallocate()
    }

    /// Frees every idle buffer.
    func trim() {
        lock.lock()
        let all = free
        free = [:]
        cachedBytes = 0
        lock.unlock()
        for (_, ps) in all { for p in ps { p.deallocate() } }
    }
}
