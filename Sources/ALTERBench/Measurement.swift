import Foundation

/// Statistics and process measurements shared by the benchmarks.
public enum Measurement {
    /// The median (mean of the middle two for an even count; 0 for none).
    public static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Mean and sample standard deviation (0 for fewer than two values).
    public static func meanAndDeviation(_ xs: [Double]) -> (mean: Double, sd: Double) {
        guard !xs.isEmpty else { return (0, 0) }
        let n = Double(xs.count)
        let mean = xs.reduce(0, +) / n
        guard xs.count > 1 else { return (mean, 0) }
        let variance = xs.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)
        return (mean, variance.squareRoot())
    }

    /// User + system CPU seconds of this process so far.
    public static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    /// Seconds since an arbitrary origin (monotonic).
    public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// The 1-minute load average (getloadavg), or none where it cannot be read.
    public static func loadAverage() -> [Double] {
        var l = [Double](repeating: 0, count: 1)
        return getloadavg(&l, 1) == 1 ? l : []
    }

    /// Peak resident memory of this process in MB.
    public static func peakResidentMB() -> Int {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Int(u.ru_maxrss) / 1024
    }
}
