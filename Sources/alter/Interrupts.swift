import Dispatch
import Foundation
import SafeTensors

/// On Ctrl-C or SIGTERM, removes temporary files in progress and exits 128 + the signal (130 for
/// Ctrl-C, 143 for SIGTERM), so an interrupted command leaves nothing half-written behind.
enum Interrupts {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    static func installCleanupHandler() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                TemporaryPaths.shared.removeAll()
                FileHandle.standardError.write(Data("\n\(sig == SIGTERM ? "terminated (SIGTERM)" : "interrupted (Ctrl-C)"); nothing was written\n".utf8))
                exit(128 + sig)
            }
            s.resume()
            sources.append(s)
        }
    }
}
