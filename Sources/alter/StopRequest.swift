import Dispatch
import Foundation
import SafeTensors

/// Ctrl-C during training: the first asks for a checkpoint after the current step, a second exits
/// at once (removing files in progress).
final class StopRequest: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private var signalNumber: Int32 = 0
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    var requested: Bool {
        lock.lock(); defer { lock.unlock() }
        return count > 0
    }

    /// The shell's exit status for the signal that stopped the run: 128 + its number (130 for
    /// Ctrl-C, 143 for SIGTERM).
    var exitCode: Int32 {
        lock.lock(); defer { lock.unlock() }
        return 128 + (signalNumber == 0 ? SIGINT : signalNumber)
    }

    static func install() -> StopRequest {
        let r = StopRequest()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                r.lock.lock()
                r.count += 1
                if r.signalNumber == 0 { r.signalNumber = sig }
                let n = r.count
                r.lock.unlock()
                let name = sig == SIGTERM ? "SIGTERM" : "Ctrl-C"
                if n == 1 {
                    FileHandle.standardError.write(Data("\n\(name): stopping after this step (send it again to quit without a checkpoint)\n".utf8))
                } else {
                    TemporaryPaths.shared.removeAll()
                    FileHandle.standardError.write(Data("\n\(name): quit; no checkpoint written for the current step\n".utf8))
                    exit(128 + sig)
                }
            }
            s.resume()
            sources.append(s)
        }
        return r
    }
}
