#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

#if FUZZING
/// libFuzzer entry point: the input is `bundle.json` text, optionally NUL and an expert manifest.
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

/// As in SafeTensorsFuzz (docs/fuzzing.md): SwiftPM's `main` is this module's, so it hands the
/// command line to libFuzzer's driver.
@main
struct FuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzerTestOneInput))
    }
}
#else
/// Without `-DFUZZING`: replays files (or every file in directories) through the fuzz function
/// and prints how each was classified; or writes the seed corpus from a bundle.
@main
struct Replayer {
    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        if args.isEmpty || args.contains("-h") || args.contains("--help") {
            print("""
                usage: BundleManifestFuzz FILE|DIR ...                replay inputs through the fuzz target
                       BundleManifestFuzz --write-seeds DIR BUNDLE    write the seed corpus into DIR from a bundle
                       BundleManifestFuzz --verbose ...               also print each file's outcome
                """)
            exit(args.isEmpty ? 2 : 0)
        }
        if args.first == "--write-seeds" {
            guard args.count == 3 else { fatal("--write-seeds takes a directory and a bundle") }
            do { print("wrote \(try writeSeeds(to: args[1], from: args[2])) seed files to \(args[1])") } catch {
                fatal("\(error)")
            }
            return
        }
        var verbose = false
        if let i = args.firstIndex(of: "--verbose") { verbose = true; args.remove(at: i) }
        var counts: [String: Int] = [:]
        var files = 0
        let start = Date()
        for path in args.flatMap(expand) {
            guard let data = FileManager.default.contents(atPath: path) else { fatal("cannot read \(path)") }
            let outcome = data.withUnsafeBytes { fuzzOne($0) }
            if verbose { print("\(path): \(outcome)") }
            counts[outcome, default: 0] += 1
            files += 1
        }
        print("replayed \(files) inputs in \(String(format: "%.3f", Date().timeIntervalSince(start))) s, no invariant violated")
        for (k, v) in counts.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) { print("  \(k): \(v)") }
    }
}

func fatal(_ message: String) -> Never {
    FileHandle.standardError.write(Data("BundleManifestFuzz: \(message)\n".utf8))
    exit(1)
}

/// A path, or the regular files directly inside it if it is a directory (sorted).
func expand(_ path: String) -> [String] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else { return [path] }
    let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
    return names.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
}
#endif
