import Dispatch
import Foundation
import SafeTensors

/// Ctrl-C during training: the first asks for a checkpoint after the current step, a second exits
/// at once (removing files in progress).
final class StopRequest: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    var requested: Bool {
        lock.lock(); defer { lock.unlock() }
        return count > 0
    }

    static func install() -> StopRequest {
        let r = StopRequest()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                r.lock.lock()
                r.count += 1
                let n = r.count
                r.lock.unlock()
                if n == 1 {
                    FileHandle.standardError.write(Data("\nstopping after this step (Ctrl-C again to quit without a checkpoint)\n".utf8))
                } else {
                    TemporaryPaths.shared.removeAll()
                    FileHandle.standardError.write(Data("\ninterrupted; no checkpoint written for the current step\n".utf8))
                    exit(130)
                }
            }
            s.resume()
            sources.append(s)
        }
        return r
    }
}
