import Foundation

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
final class ProgressBar {
    private let label: String
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var drawn = false
    /// Counts things (images, captions) instead of bytes.
    private let counting: Bool

    /// Returns nil when stderr is not a terminal (pipes, CI). `counting`: `done` and `total` are
    /// item counts, not bytes.
    init?(label: String, counting: Bool = false) {
        guard isatty(STDERR_FILENO) == 1 else { return nil }
        self.label = label
        self.counting = counting
    }

    func update(_ done: Int, _ total: Int) {
        let now = Date()
        guard now.timeIntervalSince(lastDraw) >= 0.1 || done == total else { return }
        lastDraw = now
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = counting
            ? String(format: "\r%@ [%@] %3.0f%% %d/%d %.2f/s ETA %.0fs ", label, bar, fraction * 100, done, total, rate, eta)
            : String(format: "\r%@ [%@] %3.0f%% %@/%@ %@/s ETA %.0fs ", label, bar, fraction * 100,
                     formatBytes(done), formatBytes(total), formatBytes(Int(rate)), eta)
        FileHandle.standardError.write(Data(line.utf8))
        drawn = true
    }

    func finish() {
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
        drawn = false
    }
}
