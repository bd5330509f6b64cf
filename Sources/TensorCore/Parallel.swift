import Dispatch
import Foundation

/// Splits loops over the machine's cores.
public enum Parallel {
    /// Number of worker threads (active processors).
    public static let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Calls `body` on disjoint subranges covering `0..<count`, in parallel when the work is
    /// large enough (`count / minChunk` chunks at most, one per worker at least).
    @inlinable
    public static func forRanges(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(workers, max(1, count / max(minChunk, 1)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        withoutActuallyEscaping(body) { escapable in
            nonisolated(unsafe) let f = escapable
            DispatchQueue.concurrentPerform(iterations: chunks) { i in
                let lo = count * i / chunks
                let hi = count * (i + 1) / chunks
                if lo < hi { f(lo..<hi) }
            }
        }
    }
}
