import Foundation

/// Optional wall-clock accounting per kernel, for `alter bench forward --profile`.
/// Off by default; when off, `measure` only runs its body.
public final class Profiler: @unchecked Sendable {
    public static let shared = Profiler()
    public var enabled = false
    private let lock = NSLock()
    private var seconds: [String: Double] = [:]
    private var calls: [String: Int] = [:]
    private var flops: [String: Double] = [:]

    /// Runs `body`, adding its wall time (and `flops`) under `name` when enabled.
    @inline(__always)
    public func measure<T>(_ name: @autoclosure () -> String, flops f: Double = 0, _ body: () -> T) -> T {
        guard enabled else { return body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = body()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let key = name()
        lock.lock()
        seconds[key, default: 0] += dt
        calls[key, default: 0] += 1
        flops[key, default: 0] += f
        lock.unlock()
        return r
    }

    /// (name, seconds, calls, GFLOP/s) sorted by time.
    public func report() -> [(name: String, seconds: Double, calls: Int, gflops: Double)] {
        lock.lock(); defer { lock.unlock() }
        return seconds.map { ($0.key, $0.value, calls[$0.key] ?? 0, (flops[$0.key] ?? 0) / max($0.value, 1e-12) / 1e9) }
            .sorted { $0.1 > $1.1 }
    }

    public func reset() {
        lock.lock(); defer { lock.unlock() }
        seconds = [:]
        calls = [:]
        flops = [:]
    }
}
