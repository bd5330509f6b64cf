import Dispatch
import Foundation

/// Splits loops over the machine's cores.
public enum Parallel {
    /// Number of worker threads (active processors).
    public static let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// How many chunks `forChunks` splits `count` items into: one per worker at most, and no
    /// chunk smaller than `minChunk` unless there is only one.
    @inlinable
    public static func chunks(_ count: Int, minChunk: Int = 1) -> Int {
        min(workers, max(1, count / max(minChunk, 1)))
    }

    /// Calls `body(chunk, range)` for `chunks(count, minChunk:)` disjoint ranges covering
    /// `0..<count`, in parallel; `chunk` numbers the ranges from 0, so callers can give each
    /// its own scratch buffer.
    @inlinable
    public static func forChunks(_ count: Int, minChunk: Int = 1, _ body: (_ chunk: Int, _ range: Range<Int>) -> Void) {
        guard count > 0 else { return }
        let n = chunks(count, minChunk: minChunk)
        if n == 1 {
            body(0, 0..<count)
            return
        }
        withoutActuallyEscaping(body) { escapable in
            nonisolated(unsafe) let f = escapable
            DispatchQueue.concurrentPerform(iterations: n) { i in
                let lo = count * i / n
                let hi = count * (i + 1) / n
                if lo < hi { f(i, lo..<hi) }
            }
        }
    }

    /// Calls `body` on disjoint subranges covering `0..<count`, in parallel when the work is
    /// large enough (see `chunks`).
    @inlinable
    public static func forRanges(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        forChunks(count, minChunk: minChunk) { _, r in body(r) }
    }
}
