import Foundation

/// The seed corpus, from a real bundle: its `bundle.json`; `bundle.json` NUL expert 0's manifest
/// (so `ExpertBundle(path:)` opens a one-expert bundle); each expert manifest alone; and
/// near-misses (duplicate key, version 1 keys, unknown key, wrong types, empty routing).
func seedFiles(bundle: String) throws -> [(name: String, bytes: Data)] {
    func read(_ p: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: bundle + "/" + p)) }
    let manifest = try read("bundle.json")
    guard var o = try JSONSerialization.jsonObject(with: manifest) as? [String: Any],
          let experts = o["experts"] as? [[String: Any]] else { throw CocoaError(.fileReadCorruptFile) }
    var seeds: [(String, Data)] = [("bundle", manifest)]
    var expertTexts: [Data] = []
    for (i, e) in experts.enumerated() {
        guard let p = e["manifest"] as? String else { continue }
        let text = try read(p)
        expertTexts.append(text)
        seeds.append(("expert-\(i)", text))
    }
    func json(_ v: Any) -> Data { (try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys])) ?? Data() }
    // A one-expert bundle: routing all to expert 0, one MAC figure.
    if let first = experts.first, let e0 = expertTexts.first {
        var one = o
        one["experts"] = [first]
        one["routing"] = [Int](repeating: 0, count: (o["routing"] as? [Any])?.count ?? 1000)
        if var macs = one["macs"] as? [String: Any], let m = (macs["experts"] as? [Int])?.first { macs["experts"] = [m]; one["macs"] = macs }
        seeds.append(("one-expert-with-manifest", json(one) + Data([0]) + e0))
        seeds.append(("bundle-with-manifest", manifest + Data([0]) + e0))
    }
    var text = String(decoding: manifest, as: UTF8.self)
    if let brace = text.firstIndex(of: "{") {
        text.insert(contentsOf: "\"prediction_type\":\"v_prediction\",", at: text.index(after: brace))
        seeds.append(("bad-duplicate-key", Data(text.utf8)))
    }
    var v1 = o
    v1["format_version"] = 1
    if var macs = v1["macs"] as? [String: Any] { macs["kept_fraction"] = macs.removeValue(forKey: "kept_mac_fraction"); v1["macs"] = macs }
    seeds.append(("version-1", json(v1)))
    o["extra_key"] = true
    seeds.append(("bad-unknown-key", json(o)))
    o.removeValue(forKey: "extra_key")
    o["routing"] = []
    seeds.append(("bad-empty-routing", json(o)))
    o["routing"] = "0"
    seeds.append(("bad-routing-type", json(o)))
    return seeds
}

#if !FUZZING
/// Writes the seed corpus into `dir` (created if needed); returns the number of files.
func writeSeeds(to dir: String, from bundle: String) throws -> Int {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let seeds = try seedFiles(bundle: bundle)
    for (name, bytes) in seeds { try bytes.write(to: URL(fileURLWithPath: dir + "/" + name + ".json")) }
    return seeds.count
}
#endif
