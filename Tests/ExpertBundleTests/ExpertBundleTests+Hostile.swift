import ALTER
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import XCTest

/// Hostile bundles, made here in temporary directories: what `verify` vouches for is only what
/// formats/bundle.md allows (every stored file listed, no symbolic link, no duplicate JSON key, a
/// valid scheduler config), special files are refused before they are opened, and every report
/// carries every check.
extension ExpertBundleTests {
    /// A copy of a freshly exported bundle, changed by `edit` (given the copy's path).
    func tampered(_ pristine: String, _ name: String, _ edit: (String) throws -> Void) throws -> String {
        let copy = Self.scratch + "/\(name).alter"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: pristine, toPath: copy)
        try edit(copy)
        return copy
    }

    /// The report of `path`, with `schema` failed when the manifests do not read.
    func report(_ path: String, reference: UNet? = nil) -> VerificationReport {
        do { return try ExpertBundle(path: path).verify(reference: reference) } catch {
            return VerificationReport(schemaError: error, deep: reference != nil)
        }
    }

    /// Inserts `text` right after the first match of `pattern` in the file.
    func insert(_ text: String, after pattern: String, in file: String) throws {
        var s = try String(contentsOfFile: file, encoding: .utf8)
        let r = try XCTUnwrap(s.range(of: pattern, options: .regularExpression), "\(pattern) not in \(file)")
        s.insert(contentsOf: text, at: r.upperBound)
        try s.write(toFile: file, atomically: false, encoding: .utf8)
    }

    /// The failure text of the check called `name`.
    func detail(_ r: VerificationReport, _ name: String) -> String {
        r.checks.first { $0.name == name }?.detail ?? ""
    }

    // MARK: class 1: verify vouches only for what the spec allows

    func testEveryStoredFileMustBeListedAndEveryTensorFileListed() throws {
        let good = try export("listed")
        let units = "weights/units.safetensors"
        let cases: [(String, (String) throws -> Void, [String])] = [
            ("files-empty", { p in try self.editJSON(p + "/bundle.json") { $0["files"] = [Any]() } },
             ["\"weights/base.safetensors\", which bundle.json files does not list", "\(units) is stored in the bundle but no manifest lists it"]),
            ("files-dropped", { p in try self.editJSON(p + "/bundle.json") { o in
                o["files"] = (o["files"] as! [[String: Any]]).filter { $0["path"] as? String != units } } },
             ["list tensors in \"\(units)\", which bundle.json files does not list", "\(units) is stored in the bundle"]),
            ("extra-file", { p in try Data("hello".utf8).write(to: URL(fileURLWithPath: p + "/notes.txt")) },
             ["notes.txt is stored in the bundle but no manifest lists it"]),
            ("hidden-file", { p in try Data().write(to: URL(fileURLWithPath: p + "/weights/.DS_Store")) },
             ["weights/.DS_Store is stored in the bundle"]),
            ("extra-weights", { p in try FileManager.default.copyItem(atPath: p + "/" + units, toPath: p + "/weights/spare.safetensors") },
             ["weights/spare.safetensors is stored in the bundle"]),
            ("empty-dir", { p in try FileManager.default.createDirectory(atPath: p + "/extra/deeper", withIntermediateDirectories: true) },
             ["extra/ is a directory holding no listed file", "extra/deeper/ is a directory holding no listed file"]),
            ("listed-twice", { p in try self.editJSON(p + "/bundle.json") { o in
                let f = o["files"] as! [[String: Any]]; o["files"] = f + [f[0]] } },
             ["is listed twice"]),
            ("outside", { p in try self.editJSON(p + "/bundle.json") { o in
                var f = o["files"] as! [[String: Any]]; f[0]["path"] = "weights/../../x.safetensors"; o["files"] = f } },
             ["is not a path inside the bundle"]),
            ("missing", { p in try self.editJSON(p + "/bundle.json") { o in
                var f = o["files"] as! [[String: Any]]; f.append(["path": "weights/gone.safetensors", "bytes": 8, "sha256": "00"]); o["files"] = f } },
             ["weights/gone.safetensors (files[2]) is not stored in the bundle", "weights/gone.safetensors is missing"]),
        ]
        for (name, edit, words) in cases {
            let r = report(try tampered(good, name, edit))
            XCTAssertFalse(r.passed, "\(name): verify passed")
            XCTAssertEqual(r.checks.first { $0.name == "files" }?.status, .failed, "\(name): \(r.failures)")
            let text = r.failures.joined(separator: "\n")
            for w in words { XCTAssertTrue(text.contains(w), "\(name): no failure mentions \(w):\n\(text)") }
        }
        // Loading for sampling refuses tensors stored in a file `files` does not list, too.
        let dropped = try tampered(good, "files-dropped-load") { p in try self.editJSON(p + "/bundle.json") { o in
            o["files"] = (o["files"] as! [[String: Any]]).filter { $0["path"] as? String != units } } }
        XCTAssertThrowsError(try ExpertBundle(path: dropped).unet()) { e in
            XCTAssertTrue("\(e)".contains("which `files` does not list"), "\(e)")
        }
    }

    func testNoSymbolicLinkAnywhereInABundle() throws {
        let good = try export("links")
        let outside = Self.scratch + "/outside"
        try? FileManager.default.removeItem(atPath: outside)
        try FileManager.default.copyItem(atPath: good, toPath: outside)
        let fm = FileManager.default
        let cases: [(String, (String) throws -> Void, [String])] = [
            ("dir-link", { p in try fm.removeItem(atPath: p + "/weights"); try fm.createSymbolicLink(atPath: p + "/weights", withDestinationPath: outside + "/weights") },
             ["weights is a symbolic link (to \(outside)/weights)"]),
            ("file-link", { p in try fm.removeItem(atPath: p + "/weights/units.safetensors")
                try fm.createSymbolicLink(atPath: p + "/weights/units.safetensors", withDestinationPath: outside + "/weights/units.safetensors") },
             ["weights/units.safetensors is a symbolic link"]),
            ("dev-zero", { p in try fm.removeItem(atPath: p + "/weights/units.safetensors")
                try fm.createSymbolicLink(atPath: p + "/weights/units.safetensors", withDestinationPath: "/dev/zero") },
             ["weights/units.safetensors is a symbolic link (to /dev/zero)"]),
            ("relative-link-inside", { p in try fm.createSymbolicLink(atPath: p + "/alias.json", withDestinationPath: "bundle.json") },
             ["alias.json is a symbolic link (to bundle.json)"]),
            ("expert-manifest-link", { p in try fm.removeItem(atPath: p + "/experts/expert-1.json")
                try fm.createSymbolicLink(atPath: p + "/experts/expert-1.json", withDestinationPath: outside + "/experts/expert-1.json") },
             ["schema:", "experts/expert-1.json: is a symbolic link"]),
            ("bundle-json-link", { p in try fm.removeItem(atPath: p + "/bundle.json")
                try fm.createSymbolicLink(atPath: p + "/bundle.json", withDestinationPath: outside + "/bundle.json") },
             ["schema:", "bundle.json: is a symbolic link"]),
        ]
        for (name, edit, words) in cases {
            let path = try tampered(good, name, edit)
            let r = report(path)
            XCTAssertFalse(r.passed, "\(name): verify passed")
            let text = r.failures.joined(separator: "\n")
            for w in words { XCTAssertTrue(text.contains(w), "\(name): no failure mentions \(w):\n\(text)") }
        }
        // Loading refuses the link too, naming it.
        let linked = try tampered(good, "dir-link-load") { p in
            try fm.removeItem(atPath: p + "/weights"); try fm.createSymbolicLink(atPath: p + "/weights", withDestinationPath: outside + "/weights")
        }
        XCTAssertThrowsError(try ExpertBundle(path: linked).unet(expert: 0)) { e in
            XCTAssertTrue("\(e)".contains("weights: is a symbolic link"), "\(e)")
        }
    }

    func testDuplicateJSONKeysAreRefusedInEveryManifest() throws {
        let good = try export("dupes")
        let cases: [(String, String, String, String, String)] = [
            // (case, file, after pattern, inserted, expected)
            ("top", "bundle.json", #"^\{"#, #""prediction_type":"v_prediction","#, #"duplicate key "prediction_type" at the top level"#),
            ("macs", "bundle.json", #""macs"\s*:\s*\{"#, #""dense":1,"#, #"duplicate key "dense" in macs"#),
            ("architecture", "bundle.json", #""architecture"\s*:\s*\{"#, #""in_channels":8,"#, #"duplicate key "in_channels" in architecture"#),
            ("scheduler", "bundle.json", #""scheduler"\s*:\s*\{"#, #""num_train_timesteps":10,"#, #"duplicate key "num_train_timesteps" in scheduler"#),
            ("files-entry", "bundle.json", #""files"\s*:\s*\[\s*\{"#, #""bytes":1,"#, #"duplicate key "bytes" in files[0]"#),
            ("escaped", "bundle.json", #"^\{"#, #""\u0066ormat":"alter.bundle","#, #"duplicate key "format" at the top level"#),
            ("nul", "bundle.json", #"^\{"#, #""format\u0000x":1,"#, #"contains a NUL character"#),
            ("expert-top", "experts/expert-1.json", #"^\{"#, #""expert":0,"#, #"experts/expert-1.json: duplicate key "expert" at the top level"#),
            ("expert-tensor", "experts/expert-0.json", #""tensors"\s*:\s*\[\s*\{"#, #""name":"conv_in.weight","#, #"duplicate key "name" in tensors[0]"#),
        ]
        for (name, file, pattern, text, expected) in cases {
            let path = try tampered(good, "dupe-\(name)") { p in try self.insert(text, after: pattern, in: p + "/" + file) }
            XCTAssertThrowsError(try ExpertBundle(path: path), name) { e in
                XCTAssertTrue("\(e)".contains(path + "/" + file), "\(name): \(e) does not name the file")
                XCTAssertTrue("\(e)".contains(expected), "\(name): \(e) does not say \(expected)")
            }
            let r = report(path)
            XCTAssertEqual(r.checks.first?.status, .failed, name)
        }
    }

    func testDuplicateJSONKeysAreRefusedByEveryOtherReader() throws {
        let dup = Data(#"{"num_train_timesteps": 1000, "beta_start": 0.001, "num_train_timesteps": 10}"#.utf8)
        XCTAssertThrowsError(try SchedulerConfig(diffusersJSON: dup, source: "s.json")) { e in
            XCTAssertTrue("\(e)".contains("s.json") && "\(e)".contains(#"duplicate key "num_train_timesteps""#), "\(e)")
        }
        let config = try Data(contentsOf: Self.root.appendingPathComponent("examples/sd21-tiny.config.json"))
        var text = String(decoding: config, as: UTF8.self)
        text.insert(contentsOf: #""sample_size": 4096,"#, at: text.index(after: try XCTUnwrap(text.firstIndex(of: "{"))))
        XCTAssertThrowsError(try UNetConfig(diffusersJSON: Data(text.utf8), source: "config.json")) { e in
            XCTAssertTrue("\(e)".contains(#"duplicate key "sample_size""#), "\(e)")
        }
        // A UNet folder whose config.json repeats a key.
        let folder = Self.scratch + "/dup-unet"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.copyItem(atPath: try finishedRun().finalPath + "/unet", toPath: folder)
        try insert(#""in_channels": 4,"#, after: #"^\{"#, in: folder + "/config.json")
        XCTAssertThrowsError(try UNetCheckpoint(path: folder)) { e in
            XCTAssertTrue("\(e)".contains(folder + "/config.json") && "\(e)".contains("duplicate key \"in_channels\""), "\(e)")
        }
        // Run-directory files.
        let run = Self.scratch + "/dup-run"
        try? FileManager.default.removeItem(atPath: run)
        try FileManager.default.copyItem(atPath: try finishedRun().path, toPath: run)
        try insert(#""steps": 1,"#, after: #"^\{"#, in: run + "/config.json")
        XCTAssertThrowsError(try RunDirectory(path: run).readConfig()) { e in
            XCTAssertTrue("\(e)".contains(run + "/config.json") && "\(e)".contains("duplicate key \"steps\""), "\(e)")
        }
        try insert(#""context_length": 7,"#, after: #"^\{"#, in: run + "/final/decisions.json")
        XCTAssertThrowsError(try RunDirectory(path: run).readDecisions()) { e in XCTAssertTrue("\(e)".contains("decisions.json"), "\(e)") }
        XCTAssertThrowsError(try JSONValue.parse(Data(#"{"a": [{"b": 1, "b": 2}]}"#.utf8), source: "v.json")) { e in
            XCTAssertTrue("\(e)".contains(#"duplicate key "b" in a[0]"#), "\(e)")
        }
    }

    func testSchedulerConfigIsValidatedByVerify() throws {
        let good = try export("scheduler")
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("huge-T", { s in s["num_train_timesteps"] = 1_000_000_000_000_000_000 }, "num_train_timesteps 1000000000000000000 is not in 2...100000"),
            ("zero-T", { s in s["num_train_timesteps"] = 0 }, "num_train_timesteps 0"),
            ("other-T", { s in s["num_train_timesteps"] = 999 }, "scheduler.num_train_timesteps is 999, train_timesteps is 1000"),
            ("beta-above-one", { s in s["beta_schedule"] = "linear"; s["beta_end"] = 1.5 }, "betas outside (0, 1)"),
            ("beta-zero", { s in s["beta_schedule"] = "linear"; s["beta_start"] = 0.0 }, "betas outside (0, 1)"),
            ("beta-string", { s in s["beta_start"] = "0.1" }, "beta_start must be a finite number"),
            ("prediction", { s in s["prediction_type"] = "v_prediction" }, "scheduler.prediction_type is \"v_prediction\""),
            ("unsupported", { s in s["thresholding"] = true }, "unsupported thresholding"),
        ]
        for (name, edit, expected) in cases {
            let path = try tampered(good, "sched-\(name)") { p in
                try self.editJSON(p + "/bundle.json") { o in var s = o["scheduler"] as! [String: Any]; edit(&s); o["scheduler"] = s }
            }
            let r = report(path)
            XCTAssertEqual(r.checks.first { $0.name == "scheduler" }?.status, .failed, "\(name): \(r.failures)")
            XCTAssertTrue(detail(r, "scheduler").contains(expected), "\(name): '\(detail(r, "scheduler"))' does not say \(expected)")
            XCTAssertTrue(detail(r, "scheduler").contains("bundle.json"), name)
        }
        let notObject = try tampered(good, "sched-not-object") { p in try self.editJSON(p + "/bundle.json") { $0["scheduler"] = 3 } }
        XCTAssertTrue(detail(report(notObject), "scheduler").contains("not a JSON object"), detail(report(notObject), "scheduler"))
    }

    func testEveryReportCarriesEveryCheck() throws {
        let good = try export("checks")
        let passing = report(good)
        XCTAssertEqual(passing.checks.map(\.name), VerificationReport.checkNames)
        XCTAssertTrue(passing.passed, "\(passing.failures)")
        XCTAssertEqual(passing.checks.last?.status, .skipped)
        XCTAssertTrue(passing.checks.dropLast().allSatisfy { $0.status == .passed })

        for deep in [false, true] {
            let r = VerificationReport(schemaError: BundleError("x.alter/bundle.json", "duplicate key"), deep: deep)
            XCTAssertEqual(r.checks.map(\.name), VerificationReport.checkNames)
            XCTAssertFalse(r.passed)
            XCTAssertEqual(r.checks[0].status, .failed)
            for c in r.checks.dropFirst().dropLast() {
                XCTAssertEqual(c.status, .notRun, c.name)
                XCTAssertFalse(c.passed)
                XCTAssertEqual(c.detail, "not run: the manifests could not be read")
            }
            XCTAssertEqual(r.checks.last?.status, deep ? .notRun : .skipped)
            let json = String(decoding: try JSONEncoder().encode(r), as: UTF8.self)
            XCTAssertTrue(json.contains(#""status":"not_run""#), json)
        }
        // --deep after a failed check: parity is not run, and says why.
        let broken = try tampered(good, "checks-broken") { p in try Data("x".utf8).write(to: URL(fileURLWithPath: p + "/stray")) }
        let reference = try UNet(checkpoint: UNetCheckpoint(path: try finishedRun().finalPath + "/unet"))
        let r = report(broken, reference: reference)
        XCTAssertEqual(r.checks.map(\.name), VerificationReport.checkNames)
        XCTAssertEqual(r.checks.last?.status, .notRun)
        XCTAssertEqual(r.checks.last?.detail, "not run: earlier checks failed")
    }

    // MARK: class 2: special files

    func testSpecialFilesInABundleAreRefusedBeforeOpening() throws {
        let good = try export("special")
        let units = "weights/units.safetensors"
        let fifo = try tampered(good, "fifo") { p in
            try FileManager.default.removeItem(atPath: p + "/" + units)
            XCTAssertEqual(mkfifo(p + "/" + units, 0o644), 0)
        }
        let r = report(fifo)
        XCTAssertTrue(detail(r, "files").contains("\(units) is a FIFO"), detail(r, "files"))
        XCTAssertTrue(detail(r, "checksums").contains("\(units) is a FIFO, not a regular file"), detail(r, "checksums"))
        XCTAssertThrowsError(try ExpertBundle(path: fifo).unet()) { e in XCTAssertTrue("\(e)".contains("is a FIFO"), "\(e)") }
        let fifoManifest = try tampered(good, "fifo-manifest") { p in
            try FileManager.default.removeItem(atPath: p + "/experts/expert-0.json")
            XCTAssertEqual(mkfifo(p + "/experts/expert-0.json", 0o644), 0)
        }
        XCTAssertThrowsError(try ExpertBundle(path: fifoManifest)) { e in XCTAssertTrue("\(e)".contains("expert-0.json: is a FIFO"), "\(e)") }
        let fifoBundle = try tampered(good, "fifo-bundle-json") { p in
            try FileManager.default.removeItem(atPath: p + "/bundle.json")
            XCTAssertEqual(mkfifo(p + "/bundle.json", 0o644), 0)
        }
        XCTAssertThrowsError(try ExpertBundle(path: fifoBundle)) { e in XCTAssertTrue("\(e)".contains("bundle.json: is a FIFO"), "\(e)") }
        let directory = try tampered(good, "dir-as-file") { p in
            try FileManager.default.removeItem(atPath: p + "/" + units)
            try FileManager.default.createDirectory(atPath: p + "/" + units, withIntermediateDirectories: false)
        }
        XCTAssertTrue(detail(report(directory), "checksums").contains("\(units) is a directory, not a regular file"))
    }

    func testSizeMismatchStopsBeforeHashingAndMessagesAreDeduplicated() throws {
        let good = try export("sizes")
        let grown = try tampered(good, "grown") { p in
            let h = try XCTUnwrap(FileHandle(forWritingAtPath: p + "/weights/base.safetensors"))
            try h.seekToEnd(); try h.write(contentsOf: Data(count: 100)); try h.close()
        }
        let checksums = detail(report(grown), "checksums")
        XCTAssertTrue(checksums.contains("weights/base.safetensors has "), checksums)
        XCTAssertFalse(checksums.contains("weights/base.safetensors has SHA-256"), checksums)
        // A weight file that no longer parses: one failure, not one per tensor or per expert.
        let junk = try tampered(good, "junk") { p in try Data(repeating: 0x41, count: 64).write(to: URL(fileURLWithPath: p + "/weights/base.safetensors")) }
        let tensors = detail(report(junk), "tensors")
        XCTAssertEqual(tensors.components(separatedBy: "weights/base.safetensors:").count - 1, 1, tensors)
        // Tensor entries naming a file that is not listed: one failure naming every expert.
        let unlisted = try tampered(good, "unlisted") { p in
            for e in 0..<3 {
                try self.editJSON(p + "/experts/expert-\(e).json") { o in
                    o["tensors"] = (o["tensors"] as! [[String: Any]]).map { var t = $0; t["file"] = "weights/other.safetensors"; return t }
                }
            }
        }
        let files = detail(report(unlisted), "files")
        XCTAssertEqual(files.components(separatedBy: "weights/other.safetensors").count - 1, 1, files)
        XCTAssertTrue(files.contains("experts 0, 1, 2 list tensors in \"weights/other.safetensors\""), files)
    }
}
