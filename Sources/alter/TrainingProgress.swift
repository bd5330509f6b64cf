import ALTER
import Foundation

/// A one-line progress display on a terminal (stderr); silent in pipes, where a line every 10% is printed instead.
final class TrainingProgress {
    let total: Int
    let start = Date()
    let initial: Int
    let isTTY = isatty(2) != 0
    var lastPrinted = -1

    init(total: Int, initial: Int) {
        self.total = total
        self.initial = initial
    }

    func update(_ m: StepMetrics) {
        let done = m.step - initial
        let elapsed = Date().timeIntervalSince(start)
        let rate = Double(done) / max(elapsed, 1e-9)
        let eta = Double(total - m.step) / max(rate, 1e-9)
        let width = 24
        let filled = Int(Double(width) * Double(m.step) / Double(max(total, 1)))
        let line = String(format: "[%@%@] %d/%d  %.2f step/s  ETA %@  loss %.4g  kept %.3f",
                          String(repeating: "#", count: filled), String(repeating: ".", count: width - filled),
                          m.step, total, rate, Self.clock(eta), m.loss, m.keptFraction)
        if isTTY {
            FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
        } else {
            let decile = m.step * 10 / max(total, 1)
            if decile != lastPrinted || m.step == total {
                lastPrinted = decile
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
        }
    }

    func finish() {
        if isTTY { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func clock(_ s: Double) -> String {
        guard s.isFinite else { return "--:--" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}
