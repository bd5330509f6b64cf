import ALTER
import ExampleSupport
import Experts
import ExpertBundle
import Foundation
import RunExport
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// Hostile numbers in bundle.json, final/decisions.json and in arguments: each is refused before
/// it is used, by an error naming the field (and the file), never a trap or a runaway allocation.
/// The files are made here: a bundle exported from a short run on the example, copied and edited.
final class BundleBoundsTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("alter-bounds-tests-\(getpid())").path
    nonisolated(unsafe) static var runPath: String?
    nonisolated(unsafe) static var bundlePath: String?

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
        super.tearDown()
    }

    /// A finished 6-step run on the example (made once for the class).
    func finishedRun() throws -> RunDirectory {
        if let p = Self.runPath { return RunDirectory(path: p) }
        try? FileManager.default.removeItem(atPath: Self.scratch)
        let dir = try Example.finishedRun(at: Self.scratch + "/run", steps: 6, hypernetSteps: 4) {
            $0.settings.experts = 3
            $0.settings.keep = 0.7
            $0.settings.warmupSteps = 1
        }
        Self.runPath = dir.path
        return dir
    }

    /// The bundle exported from the run (made once).
    func exportedBundle() throws -> String {
        if let p = Self.bundlePath { return p }
        let path = Self.scratch + "/good.alter"
        try RunExporter.export(run: try finishedRun(), to: path)
        Self.bundlePath = path
        return path
    }

    /// A fresh copy of `source` named `name` in the scratch directory.
    func copy(_ source: String, as name: String) throws -> String {
        let path = Self.scratch + "/" + name
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: source, toPath: path)
        return path
    }

    func editJSON(_ file: String, _ edit: (inout [String: Any]) -> Void) throws {
        var o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        edit(&o)
        try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: file))
    }

    nonisolated(unsafe) static var copies = 0

    /// A copy of the good bundle with bundle.json edited; opening it must fail naming `field` and
    /// bundle.json, and verify's report (as the CLI makes it) must fail its schema check.
    func assertBundleRefused(naming field: String, line: UInt = #line, _ edit: (inout [String: Any]) -> Void) throws {
        Self.copies += 1
        let path = try copy(try exportedBundle(), as: "edited-\(Self.copies).alter")
        try editJSON(path + "/bundle.json", edit)
        XCTAssertThrowsError(try ExpertBundle(path: path), "edit for \(field)", line: line) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("bundle.json"), text, line: line)
            XCTAssertTrue(text.contains("`\(field)`") || text.contains(field), "'\(text)' does not name \(field)", line: line)
            guard let b = e as? BundleError else { return XCTFail("not a BundleError: \(e)", line: line) }
            let report = VerificationReport(schemaError: b)
            XCTAssertFalse(report.passed, line: line)
            XCTAssertTrue(report.failures.joined().contains(field), line: line)
        }
        try? FileManager.default.removeItem(atPath: path)
    }

    func testTheExportedBundleIsWithinBounds() throws {
        let b = try ExpertBundle(path: try exportedBundle())
        XCTAssertTrue(b.verify().passed, b.verify().failures.joined(separator: "\n"))
        XCTAssertEqual(b.manifest.routing.count, ALTERTrainer.trainTimesteps)
    }

    func testArchitectureOutOfBounds() throws {
        func arch(_ key: String, _ value: Any) -> (inout [String: Any]) -> Void {
            { o in
                var a = o["architecture"] as! [String: Any]
                a[key] = value
                o["architecture"] = a
            }
        }
        for v in [1_000_000_000, 0, -2] { try assertBundleRefused(naming: "layers_per_block", arch("layers_per_block", v)) }
        for v in [1_000_000_000_000_000, 0, -16] {
            try assertBundleRefused(naming: "block_out_channels[1]", arch("block_out_channels", [16, v, 32, 32]))
        }
        try assertBundleRefused(naming: "cross_attention_dim", arch("cross_attention_dim", 1_000_000_000_000))
        try assertBundleRefused(naming: "norm_num_groups", arch("norm_num_groups", -8))
        try assertBundleRefused(naming: "sample_size", arch("sample_size", 1_000_000_000))
        try assertBundleRefused(naming: "attention_head_dim[0]", arch("attention_head_dim", [100_000, 4, 4, 4]))
    }

    func testMACLatentSizeOutOfBounds() throws {
        func macs(_ key: String, _ value: Int) -> (inout [String: Any]) -> Void {
            { o in
                var m = o["macs"] as! [String: Any]
                m[key] = value
                o["macs"] = m
            }
        }
        // Too large, overflow-sized, negative, zero, not a multiple of 8 (4 levels), a multiple above the maximum.
        for v in [1_000_000_000_000, Int.max, -16, 0, 12, 4104] {
            try assertBundleRefused(naming: "macs.latent_height", macs("latent_height", v))
        }
        for v in [1_000_000_000, -8, 7] { try assertBundleRefused(naming: "macs.latent_width", macs("latent_width", v)) }
        for v in [1_000_000_000, 0, -77] { try assertBundleRefused(naming: "macs.context_length", macs("context_length", v)) }
        for v in [-1, Int.min] { try assertBundleRefused(naming: "macs.dense", macs("dense", v)) }
    }

    func testTimestepsRoutingAndByteCountsOutOfBounds() throws {
        for v in [1_000_000_000_000, 0, -1, 1] { try assertBundleRefused(naming: "train_timesteps") { $0["train_timesteps"] = v } }
        // A 5-entry routing table, and train_timesteps edited to match it (the bound is per model, 2 at least).
        try assertBundleRefused(naming: "routing") { $0["routing"] = [0, 1, 2, 0, 1] }
        try assertBundleRefused(naming: "experts") { o in
            o["train_timesteps"] = 2
            o["routing"] = [0, 1]
        }
        func bytes(_ key: String, _ value: Int) -> (inout [String: Any]) -> Void {
            { o in
                var files = o["files"] as! [[String: Any]]
                files[0]["bytes"] = value
                o["files"] = files
            }
        }
        for v in [Int.max, 1 << 60, -1] { try assertBundleRefused(naming: "files[0].bytes", bytes("bytes", v)) }
        try assertBundleRefused(naming: "source.files[0].bytes") { o in
            var source = o["source"] as! [String: Any]
            var files = source["files"] as! [[String: Any]]
            files[0]["bytes"] = -5
            source["files"] = files
            o["source"] = source
        }
    }

    func testExpertManifestShapesAndCountsOutOfBounds() throws {
        for (edit, field) in [
            ({ (o: inout [String: Any]) in var t = o["tensors"] as! [[String: Any]]; t[0]["shape"] = [10_000_000_000, 10_000_000_000]; o["tensors"] = t }, "tensors[0].shape"),
            ({ (o: inout [String: Any]) in var t = o["tensors"] as! [[String: Any]]; t[2]["shape"] = [Int.max, 2]; o["tensors"] = t }, "tensors[2].shape"),
            ({ (o: inout [String: Any]) in var t = o["tensors"] as! [[String: Any]]; t[1]["shape"] = [-4, 3]; o["tensors"] = t }, "tensors[1].shape"),
            ({ (o: inout [String: Any]) in o["macs"] = -1 }, "macs"),
            ({ (o: inout [String: Any]) in o["timestep_count"] = Int.min }, "timestep_count"),
        ] as [((inout [String: Any]) -> Void, String)] {
            Self.copies += 1
            let path = try copy(try exportedBundle(), as: "expert-\(Self.copies).alter")
            try editJSON(path + "/experts/expert-0.json", edit)
            XCTAssertThrowsError(try ExpertBundle(path: path)) { e in
                XCTAssertTrue("\(e)".contains("expert-0.json") && "\(e)".contains("`\(field)"), "\(e) does not name \(field)")
            }
        }
    }

    func testSummaryAndScheduleArithmeticIsChecked() throws {
        // Each count is a valid Int, their sum is not (the bundle reader refuses such counts too).
        var o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: try exportedBundle() + "/bundle.json"))) as? [String: Any])
        var files = o["files"] as! [[String: Any]]
        files[0]["bytes"] = Int.max
        files[1]["bytes"] = 1
        o["files"] = files
        let m = try JSONDecoder().decode(BundleManifest.self, from: JSONSerialization.data(withJSONObject: o))
        XCTAssertThrowsError(try ExpertBundle.Summary(m)) { XCTAssertEqual(($0 as? SizeError)?.field, "files[].bytes") }
        // MAC counts that are each valid but whose sum over a schedule does not fit.
        let path = try copy(try exportedBundle(), as: "huge-macs.alter")
        try editJSON(path + "/bundle.json") { o in
            var macs = o["macs"] as! [String: Any]
            macs["dense"] = Int.max / 2
            macs["experts"] = (macs["experts"] as! [Int]).map { _ in Int.max / 2 }
            o["macs"] = macs
        }
        let b = try ExpertBundle(path: path)
        XCTAssertThrowsError(try b.inspection(schedule: try SchedulerKind(.pndm, steps: 20))) { e in
            XCTAssertTrue("\(e)".contains("macs.experts") && "\(e)".contains("bundle.json"), "\(e)")
        }
        XCTAssertFalse(b.verify().passed)
    }

    func testProbeLatentOutOfBoundsIsAFailedCheckNotACrash() throws {
        let bundle = try ExpertBundle(path: try exportedBundle())
        let reference = try UNet(checkpoint: UNetCheckpoint(path: try finishedRun().finalPath + "/unet"))
        for v in [-8, 0, 7, 12, 1_000_000_000] {
            let report = bundle.verify(reference: reference, probeLatent: v)
            XCTAssertFalse(report.passed, "probe latent \(v)")
            XCTAssertTrue(report.fidelity.isEmpty)
            let parity = report.checks.first { $0.name == "parity" }
            XCTAssertTrue(parity?.detail.contains("latent_height") ?? false, "\(String(describing: parity))")
            // Only the argument is at fault: every check of the bundle itself holds.
            XCTAssertTrue(report.checks.filter { $0.name != "parity" }.allSatisfy(\.passed))
        }
        let good = bundle.verify(reference: reference, probeLatent: 8)
        XCTAssertTrue(good.passed, good.failures.joined(separator: "\n"))
    }

    func testSamplingLatentOutOfBounds() throws {
        let bundle = try ExpertBundle(path: try exportedBundle())
        let sampler = try RoutedSampler(bundle: bundle)
        let context = Tensor(zeros: [1, 5, bundle.config.crossAttentionDim])
        for (h, w, field) in [(1_000_000_000, 16, "latent_height"), (-16, 16, "latent_height"), (0, 16, "latent_height"),
                              (16, 7, "latent_width"), (16, Int.max, "latent_width")] {
            var options = RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: 2))
            options.latentHeight = h
            options.latentWidth = w
            XCTAssertThrowsError(try sampler.session(context: context, uncond: nil, options: options)) { e in
                XCTAssertTrue("\(e)".contains(field), "\(h)x\(w): \(e)")
            }
        }
        let long = Tensor(zeros: [1, Bounds.contextLength.upperBound + 1, bundle.config.crossAttentionDim])
        XCTAssertThrowsError(try sampler.session(context: long, uncond: nil, options: RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: 2)))) { e in
            XCTAssertTrue("\(e)".contains("context_length"), "\(e)")
        }
    }

    // MARK: final/decisions.json and export sizes

    /// A copy of the finished run with final/decisions.json edited: reading it and exporting it
    /// must fail naming `field`, and no bundle may be written.
    func assertDecisionsRefused(naming field: String, line: UInt = #line, _ edit: (inout [String: Any]) -> Void) throws {
        Self.copies += 1
        let run = RunDirectory(path: try copy(try finishedRun().path, as: "run-\(Self.copies)"))
        try editJSON(run.decisionsPath, edit)
        XCTAssertThrowsError(try run.readDecisions(), line: line) { e in
            XCTAssertTrue("\(e)".contains(field) && "\(e)".contains("decisions.json"), "'\(e)' does not name \(field)", line: line)
        }
        let out = Self.scratch + "/from-run-\(Self.copies).alter"
        XCTAssertThrowsError(try RunExporter.export(run: run, to: out), line: line) { e in
            XCTAssertTrue("\(e)".contains(field), "'\(e)' does not name \(field)", line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), line: line)
        try? FileManager.default.removeItem(atPath: run.path)
    }

    func testCorruptDecisionsAreRefused() throws {
        func decisions(_ body: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
            { o in
                var d = o["decisions"] as! [String: Any]
                body(&d)
                o["decisions"] = d
            }
        }
        for v in [99, -1, Int.max] {
            try assertDecisionsRefused(naming: "decisions.route[7]", decisions { d in
                var r = d["route"] as! [Int]
                r[7] = v
                d["route"] = r
            })
        }
        try assertDecisionsRefused(naming: "decisions.route", decisions { d in d["route"] = [0, 1, 2, 0, 1] })
        try assertDecisionsRefused(naming: "decisions.route", decisions { d in d["route"] = [Int]() })
        try assertDecisionsRefused(naming: "decisions.kept[1]", decisions { d in
            var k = d["kept"] as! [[Bool]]
            k[1].removeLast()
            d["kept"] = k
        })
        try assertDecisionsRefused(naming: "decisions.kept", decisions { d in d["kept"] = [[Bool]]() })
        for v in [-16, 0, 1_000_000_000_000] { try assertDecisionsRefused(naming: "latent_height") { $0["latent_height"] = v } }
        try assertDecisionsRefused(naming: "latent_width") { $0["latent_width"] = Int.max }
        try assertDecisionsRefused(naming: "context_length") { $0["context_length"] = 0 }
    }

    func testExportMACSizesOutOfBounds() throws {
        let run = try finishedRun()
        for (size, field) in [((-16, -16, 5), "latent_height"), ((12, 12, 5), "latent_height"), ((1_000_000_000_000, 16, 5), "latent_height"),
                              ((16, 0, 5), "latent_width"), ((16, 16, 0), "context_length"), ((16, 16, 1_000_000_000), "context_length")] {
            var o = RunExporter.Options()
            o.macSize = size
            let out = Self.scratch + "/sized.alter"
            XCTAssertThrowsError(try RunExporter.export(run: run, to: out, options: o)) { e in
                XCTAssertTrue("\(e)".contains(field), "\(size): \(e)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
    }

    func testDecisionsValidateTrainTimesteps() throws {
        let units = ["a", "b"]
        let good = ExpertDecisions(units: units, kept: [[true, false], [false, true]], route: Array(repeating: 0, count: 500) + Array(repeating: 1, count: 500))
        XCTAssertNoThrow(try good.validate(trainTimesteps: 1000))
        XCTAssertThrowsError(try good.validate(trainTimesteps: 999)) { XCTAssertEqual($0 as? ExpertsError, .invalid(field: "route", "has 1000 entries, expected one per training timestep: 999")) }
        let tooMany = ExpertDecisions(units: units, kept: Array(repeating: [true, true], count: 3), route: [0, 1])
        XCTAssertThrowsError(try tooMany.validate()) { e in
            guard case .invalid(let f, _)? = e as? ExpertsError else { return XCTFail("\(e)") }
            XCTAssertEqual(f, "kept")
        }
        let huge = ExpertDecisions(units: units, kept: Array(repeating: [true, true], count: Bounds.experts.upperBound + 1), route: Array(repeating: 0, count: 2000))
        XCTAssertThrowsError(try huge.validate(trainTimesteps: 2000))
    }
}
