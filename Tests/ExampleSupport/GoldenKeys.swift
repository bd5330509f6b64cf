import Foundation
import XCTest

/// Golden key lists of the JSON contract (formats/cli-json.md): every key path a report produces
/// on the example, compared with the committed list in Tests/Fixtures/json-keys/NAME.txt, so a
/// renamed, added or dropped key is a visible change. Set ALTER_UPDATE_GOLDEN=1 to rewrite the lists.
public enum GoldenKeys {
    public static var directory: URL { Example.root.appendingPathComponent("Tests/Fixtures/json-keys") }

    /// Key paths of a JSON document: `a.b` for nested objects, `a[].b` inside arrays. Objects at
    /// the `opaque` paths (maps keyed by data, such as dtype names or a diffusers config) are
    /// listed as `path{}` without their keys.
    public static func paths(_ data: Data, opaque: Set<String> = []) throws -> [String] {
        var out = Set<String>()
        func walk(_ value: Any, _ path: String) {
            if let object = value as? [String: Any] {
                if opaque.contains(path) { out.insert(path + "{}"); return }
                for (k, v) in object {
                    let p = path.isEmpty ? k : path + "." + k
                    out.insert(p)
                    walk(v, p)
                }
            } else if let array = value as? [Any] {
                for v in array { walk(v, path + "[]") }
            }
        }
        walk(try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]), "")
        return out.sorted()
    }

    /// Fails the test, naming the keys added and removed, when `value`'s key paths differ from the
    /// list `name`.
    public static func check<T: Encodable>(_ value: T, name: String, opaque: Set<String> = [], file: StaticString = #filePath,
                                           line: UInt = #line) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try check(json: try encoder.encode(value), name: name, opaque: opaque, file: file, line: line)
    }

    /// As `check(_:name:)` for a JSON document.
    public static func check(json: Data, name: String, opaque: Set<String> = [], file: StaticString = #filePath, line: UInt = #line) throws {
        let got = try paths(json, opaque: opaque)
        let url = directory.appendingPathComponent(name + ".txt")
        if ProcessInfo.processInfo.environment["ALTER_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try (got.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
            return
        }
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            XCTFail("no golden key list \(url.path); run the test with ALTER_UPDATE_GOLDEN=1 to write it", file: file, line: line)
            return
        }
        let expected = Set(text.split(separator: "\n").map(String.init).filter { !$0.isEmpty })
        let added = Set(got).subtracting(expected).sorted(), removed = expected.subtracting(got).sorted()
        XCTAssertTrue(added.isEmpty && removed.isEmpty,
                      "\(name): JSON keys differ from \(url.lastPathComponent) (a contract change: update formats/cli-json.md and the list)"
                          + (added.isEmpty ? "" : "; new: \(added.joined(separator: ", "))")
                          + (removed.isEmpty ? "" : "; gone: \(removed.joined(separator: ", "))"),
                      file: file, line: line)
    }
}
