#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS
import Foundation

/// OpenBLAS chooses its kernels once, when the library loads. Builds that do not know the CPU
/// (Debian's 0.3.21 on recent Xeons, for one) fall back to the generic "Prescott" kernels, several
/// times slower. This picks a kernel family the CPU supports instead.
public enum BLASCoreSelection {
    /// The kernel family OpenBLAS is using.
    public static var current: String { String(cString: openblas_get_corename()) }

    /// Kernel families OpenBLAS falls back to when it does not recognise the CPU.
    static let generic: Set<String> = ["Prescott", "Katmai", "Coppermine", "Northwood", "Core2", "Penryn", "Dunnington", "Nehalem", "Unknown"]

    /// The best kernel family the CPU's flags allow (from /proc/cpuinfo), or nil if unknown.
    public static func preferred() -> String? {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]) { return "SkylakeX" }
        if flags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        return nil
    }

    /// If OpenBLAS runs generic kernels, `OPENBLAS_CORETYPE` is unset and the CPU supports a better
    /// family, re-executes the process with `OPENBLAS_CORETYPE` set (once). Returns otherwise.
    /// Set `ALTER_KEEP_BLAS_CORE=1` to keep whatever OpenBLAS chose.
    public static func reexecIfGeneric() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["ALTER_KEEP_BLAS_CORE"] == nil,
              generic.contains(current), let better = preferred() else { return }
        setenv("OPENBLAS_CORETYPE", better, 1)
        setenv("ALTER_KEEP_BLAS_CORE", "1", 1)
        let args = CommandLine.arguments
        var cArgs = args.map { strdup($0) }
        cArgs.append(nil)
        execv("/proc/self/exe", &cArgs)
        // execv returned: carry on with the generic kernels.
    }
}
