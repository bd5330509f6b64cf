#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SafeTensors

#if FUZZING
/// libFuzzer entry point: the input is a whole safetensors file image.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = fuzzOne(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

/// libFuzzer's driver (in the runtime that `-sanitize=fuzzer` links).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// SwiftPM links executables with `main` aliased to this module's entry point, so libFuzzer's
/// own `main` is never used; this one hands the command line to libFuzzer's driver instead.
@main
struct FuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzerTestOneInput))
    }
}
#else
/// Without `-DFUZZING`: replays files (or every file in directories) through the same function
/// the fuzzer runs, and prints how each was classified; or writes the seed corpus.
@main
struct Replayer {
    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        if args.isEmpty || args.contains("-h") || args.contains("--help") {
            print("""
                usage: SafeTensorsFuzz FILE|DIR ...      replay inputs through the fuzz target
                       SafeTensorsFuzz --write-seeds DIR write the seed corpus into DIR
                       SafeTensorsFuzz --verbose ...     also print each file's outcome
                       SafeTensorsFuzz --bench FILE ...  time opening (header validation) of real files
                """)
            exit(args.isEmpty ? 2 : 0)
        }
        if args.first == "--write-seeds" {
            guard args.count == 2 else { fatal("--write-seeds takes one directory") }
            let n = writeSeeds(to: args[1])
            print("wrote \(n) seed files to \(args[1])")
            return
        }
        if args.first == "--bench" {
            for path in args.dropFirst() { bench(path) }
            return
        }
        var verbose = false
        if let i = args.firstIndex(of: "--verbose") { verbose = true; args.remove(at: i) }
        var counts: [String: Int] = [:]
        var files = 0
        var bytes = 0
        let start = monotonicSeconds()
        for path in args.flatMap(expand) {
            guard let data = readFile(path) else { fatal("cannot read \(path)") }
            let outcome = data.withUnsafeBytes { fuzzOne($0) }
            if verbose { print("\(path): \(outcome)") }
            counts[outcome, default: 0] += 1
            files += 1
            bytes += data.count
        }
        let elapsed = monotonicSeconds() - start
        print("replayed \(files) inputs (\(bytes) bytes) in \(format3(elapsed)) s, no invariant violated")
        for (k, v) in counts.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
            print("  \(k): \(v)")
        }
    }
}

/// Times `SafeTensorsFile(path:)` (mmap and header validation) on a file.
func bench(_ path: String) {
    var best = Double.infinity
    var tensors = 0, headerLength = 0
    for _ in 0..<5 {
        let t0 = monotonicSeconds()
        do {
            let f = try SafeTensorsFile(path: path)
            tensors = f.tensors.count
            headerLength = f.header.headerLength
        } catch {
            print("\(error)")
            return
        }
        best = min(best, monotonicSeconds() - t0)
    }
    print("\(path): \(tensors) tensors, \(headerLength)-byte header, opened in \(format3(best * 1000)) ms (best of 5)")
}

func fatal(_ message: String) -> Never {
    let line = Array("SafeTensorsFuzz: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func format3(_ x: Double) -> String {
    let ms = Int((x * 1000).rounded())
    let frac = String(ms % 1000)
    return "\(ms / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
}

/// A path, or the regular files directly inside it if it is a directory (sorted).
func expand(_ path: String) -> [String] {
    var st = stat()
    guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return [path] }
    guard let dir = opendir(path) else { fatal("cannot list \(path)") }
    defer { closedir(dir) }
    var out: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
        if name.hasPrefix(".") { continue }
        let full = path + "/" + name
        var est = stat()
        if stat(full, &est) == 0, (est.st_mode & S_IFMT) == S_IFREG { out.append(full) }
    }
    return out.sorted()
}

func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n > 0 { out += chunk[0..<n] }
        if n < chunk.count { break }
    }
    return ferror(f) == 0 ? out : nil
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    guard let f = fopen(path, "wb") else { fatal("cannot create \(path)") }
    defer { fclose(f) }
    guard bytes.withUnsafeBytes({ fwrite($0.baseAddress, 1, $0.count, f) }) == bytes.count else {
        fatal("cannot write \(path)")
    }
}
#endif
