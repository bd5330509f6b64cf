import Dispatch
import Foundation
import SafeTensors

/// On Ctrl-C or SIGTERM, removes temporary files in progress and exits 130, so an
/// interrupted command leaves nothing half-written behind.
enum Interrupts {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    static func installCleanupHandler() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                TemporaryPaths.shared.removeAll()
                FileHandle.standardError.write(Data("\ninterrupted; nothing was written\n".utf8))
                exit(130)
            }
            s.resume()
            sources.append(s)
        }
    }
}
