import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion

/// The bundle directory every fuzz input is written into (one per process), and the names its
/// errors must carry.
let fuzzBundle = FileManager.default.temporaryDirectory.appendingPathComponent("bundle-manifest-fuzz-\(getpid()).alter").path
let fuzzManifestName = "fuzz-input/bundle.json"
let fuzzExpertName = "fuzz-input/expert.json"

/// Stops the process (a libFuzzer crash) when an invariant does not hold.
@inline(never)
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("BundleManifestFuzz invariant violated: \(message())") }
}

/// Runs one input through the manifest readers. The input is `bundle.json` text, optionally
/// followed by a NUL byte and an expert manifest's text.
///
/// 1. `StrictJSON.validate`, then a differential check: text it accepts, Foundation's
///    `JSONSerialization` must accept too.
/// 2. `BundleManifest.decode` and `ExpertManifest.decode` on each part: an error must name the
///    input; a manifest that decodes must survive an encode/decode round trip unchanged.
/// 3. If the bundle manifest decodes: `ExpertBundle(path:)` on a directory holding it as
///    `bundle.json` and the expert text at every manifest path it names (inside the bundle), then
///    what a reader does with an opened bundle that needs no weights: decisions, absent units,
///    routing lookups, the scheduler config and a sampler schedule.
///
/// Returns the outcome: "bundle", "manifest" (decoded, the directory did not open) or the first
/// words of the error.
func fuzzOne(_ bytes: UnsafeRawBufferPointer) -> String {
    let split = bytes.firstIndex(of: 0)
    let bundleText = Data(bytes[..<(split ?? bytes.count)])
    let expertText = split.map { Data(bytes[($0 + 1)...]) }

    for (text, name) in [(bundleText, fuzzManifestName)] + (expertText.map { [($0, fuzzExpertName)] } ?? []) {
        if (try? StrictJSON.validate(text, source: name)) != nil {
            require((try? JSONSerialization.jsonObject(with: text, options: [.fragmentsAllowed])) != nil,
                    "StrictJSON accepted text that Foundation rejects")
        }
    }
    if let expertText { exerciseExpert(expertText) }

    let manifest: BundleManifest
    do { manifest = try BundleManifest.decode(bundleText, path: fuzzManifestName) } catch {
        require(error.path == fuzzManifestName, "error names '\(error.path)'")
        require(!error.message.isEmpty, "empty error message")
        return outcome(error)
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    if let again = try? encoder.encode(manifest) {
        do {
            let back = try BundleManifest.decode(again, path: fuzzManifestName)
            require(back == manifest, "bundle.json changed in an encode/decode round trip")
        } catch { require(false, "re-encoded bundle.json does not decode: \(error)") }
    }
    return openBundle(bundleText, expertText: expertText ?? Data(), manifest: manifest)
}

func exerciseExpert(_ text: Data) {
    let m: ExpertManifest
    do { m = try ExpertManifest.decode(text, path: fuzzExpertName) } catch {
        require(error.path == fuzzExpertName, "error names '\(error.path)'")
        require(!error.message.isEmpty, "empty error message")
        return
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    if let again = try? encoder.encode(m) {
        do {
            let back = try ExpertManifest.decode(again, path: fuzzExpertName)
            require(back == m, "expert manifest changed in an encode/decode round trip")
        } catch { require(false, "re-encoded expert manifest does not decode: \(error)") }
    }
}

/// Writes the bundle directory and opens it.
func openBundle(_ bundleText: Data, expertText: Data, manifest: BundleManifest) -> String {
    let fm = FileManager.default
    try? fm.removeItem(atPath: fuzzBundle)
    defer { try? fm.removeItem(atPath: fuzzBundle) }
    guard (try? fm.createDirectory(atPath: fuzzBundle, withIntermediateDirectories: true)) != nil else { return "manifest" }
    guard fm.createFile(atPath: fuzzBundle + "/bundle.json", contents: bundleText) else { return "manifest" }
    // The expert text at every simple relative path the manifest names (at most 8 experts).
    for e in manifest.experts.prefix(8) {
        let parts = e.manifest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 3, !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." || $0.utf8.count > 64 }),
              !e.manifest.hasPrefix("/"), !e.manifest.utf8.contains(0) else { continue }
        let full = fuzzBundle + "/" + e.manifest
        try? fm.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        _ = fm.createFile(atPath: full, contents: expertText)
    }
    let bundle: ExpertBundle
    do { bundle = try ExpertBundle(path: fuzzBundle) } catch {
        require(error.path.hasPrefix(fuzzBundle), "error names '\(error.path)', outside the bundle")
        require(!error.message.isEmpty, "empty error message")
        return "manifest"
    }
    // What readers do with an open bundle before loading weights.
    _ = bundle.decisions
    _ = bundle.absentUnits
    for t in [-1, 0, 1, 499, 999, 1000, Int.max, Int.min] { _ = try? bundle.expert(forTimestep: t) }
    if (try? bundle.schedulerConfig()) != nil {
        for method in SchedulerKind.Method.allCases {
            if let kind = try? SchedulerKind(method, steps: 5) { _ = try? bundle.schedule(kind) }
        }
    }
    return "bundle"
}

/// A short, stable name for an error (its message up to the first quote or digit).
func outcome(_ error: BundleError) -> String {
    let words = error.message.prefix { !"\"'0123456789(".contains($0) }
    return String(words.trimmingCharacters(in: .whitespaces).prefix(48))
}
