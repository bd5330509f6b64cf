import ALTER
import ExampleSupport
import Experts
import RunExport
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// Export, load and verify bundles of a short ALTER run on the example model, and tamper with
/// them: each change must be a `verify` failure that names what is wrong.
final class ExpertBundleTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    nonisolated(unsafe) static var runPath: String?
    static let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("alter-bundle-tests-\(getpid())").path

    /// A finished 12-step run on the example (made once for the class).
    func finishedRun() throws -> RunDirectory {
        if let p = Self.runPath { return RunDirectory(path: p) }
        try? FileManager.default.removeItem(atPath: Self.scratch)
        let dir = try Example.finishedRun(at: Self.scratch + "/run", steps: 12, hypernetSteps: 8) {
            $0.settings.experts = 3
            $0.settings.keep = 0.7
            $0.settings.learningRateHypernet = 5e-2
            $0.settings.warmupSteps = 2
        }
        Self.runPath = dir.path
        return dir
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
        super.tearDown()
    }

    func export(_ name: String, dtype: DType = .f32) throws -> String {
        let path = Self.scratch + "/\(name).alter"
        var o = RunExporter.Options()
        o.bundle.dtype = dtype
        o.bundle.replace = true
        try RunExporter.export(run: try finishedRun(), to: path, options: o)
        return path
    }

    func testExportedBundleVerifiesAndMatchesTheRun() throws {
        let dir = try finishedRun()
        let path = try export("good")
        let bundle = try ExpertBundle(path: path)
        let final = try dir.readDecisions()
        XCTAssertEqual(bundle.manifest.routing, final.decisions.route)
        XCTAssertEqual(bundle.experts.map(\.keptUnits), final.decisions.kept.map { k in final.decisions.units.indices.filter { k[$0] }.map { final.decisions.units[$0] } })
        XCTAssertEqual(bundle.manifest.macs.keptFraction, final.keptFraction, accuracy: 1e-9)
        let reference = try UNet(checkpoint: UNetCheckpoint(path: dir.finalPath + "/unet"))
        let report = bundle.verify(reference: reference)
        XCTAssertTrue(report.passed, report.failures.joined(separator: "\n"))
        XCTAssertEqual(report.fidelity.count, bundle.experts.count)
        XCTAssertTrue(report.fidelity.allSatisfy { $0.parityError == 0 })
        // Units no expert keeps are not stored; an expert's UNet holds only its tensors.
        let units = try SafeTensorsFile(path: path + "/weights/units.safetensors")
        for u in bundle.absentUnits { XCTAssertFalse(units.names.contains { $0.hasPrefix(u + ".") }, u) }
        for e in bundle.experts.indices {
            let unet = try bundle.unet(expert: e)
            XCTAssertEqual(Set(unet.parameters.map(\.name)), Set(bundle.experts[e].tensors.map(\.name)))
        }
    }

    func testHalfPrecisionBundleVerifiesWithinItsTolerance() throws {
        let path = try export("half", dtype: .f16)
        let report = try ExpertBundle(path: path).verify(reference: UNet(checkpoint: UNetCheckpoint(path: try finishedRun().finalPath + "/unet")))
        XCTAssertTrue(report.passed, report.failures.joined(separator: "\n"))
        XCTAssertTrue(report.fidelity.allSatisfy { $0.parityError > 0 && $0.parityError < 5e-3 })
    }

    // MARK: tampering

    func failures(_ path: String) -> [String] {
        do { return try ExpertBundle(path: path).verify().failures } catch { return ["schema: \(error)"] }
    }

    func assertFails(_ path: String, mentioning words: [String], line: UInt = #line) {
        let f = failures(path)
        XCTAssertFalse(f.isEmpty, "verify passed a tampered bundle", line: line)
        let text = f.joined(separator: "\n")
        for w in words { XCTAssertTrue(text.contains(w), "no failure mentions \(w):\n\(text)", line: line) }
    }

    func editJSON(_ file: String, _ edit: (inout [String: Any]) -> Void) throws {
        var o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        edit(&o)
        try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: file))
    }

    func testFlippedByteInAWeightFile() throws {
        let path = try export("flip")
        let file = path + "/weights/units.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count - 5] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: file))
        assertFails(path, mentioning: ["weights/units.safetensors has SHA-256", "tensor '"])
    }

    func testDeletedTensor() throws {
        let path = try export("deleted")
        let file = path + "/weights/base.safetensors"
        let src = try SafeTensorsFile(path: file)
        let victim = "conv_in.weight"
        let keep = src.tensors.filter { $0.name != victim }
        let w = try SafeTensorsWriter(path: file + ".new", tensors: keep.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) })
        for spec in w.order { try w.write(spec.name, bytes: src.rawBytes(try src.require(spec.name))) }
        try w.finish()
        try FileManager.default.removeItem(atPath: file)
        try FileManager.default.moveItem(atPath: file + ".new", toPath: file)
        assertFails(path, mentioning: ["tensor '\(victim)' is missing"])
    }

    func testRoutingToAMissingExpert() throws {
        let path = try export("routing")
        try editJSON(path + "/bundle.json") { o in
            var r = o["routing"] as! [Int]
            r[5] = 99
            o["routing"] = r
        }
        assertFails(path, mentioning: ["routing[5] = 99 is not an expert"])
    }

    func testTruncatedFile() throws {
        let path = try export("truncated")
        let file = path + "/weights/units.safetensors"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: file))
        assertFails(path, mentioning: ["weights/units.safetensors has \(bytes.count / 2) bytes"])
    }

    func testManifestEditedToDropAUnitsTensors() throws {
        let path = try export("dropped")
        let bundle = try ExpertBundle(path: path)
        let e = try XCTUnwrap(bundle.experts.firstIndex { !$0.keptUnits.isEmpty })
        let unit = bundle.experts[e].keptUnits[0]
        try editJSON(path + "/experts/expert-\(e).json") { o in
            o["tensors"] = (o["tensors"] as! [[String: Any]]).filter { !($0["name"] as! String).hasPrefix(unit + ".") }
        }
        assertFails(path, mentioning: ["expert \(e) needs '\(unit).", "experts/expert-\(e).json has SHA-256"])
    }

    func testUnknownFormatVersion() throws {
        let path = try export("version")
        try editJSON(path + "/bundle.json") { $0["format_version"] = 4 }
        assertFails(path, mentioning: ["format_version 4 is not supported"])
    }

    func testExportRefusesToOverwriteAndLeavesNoPartialDirectory() throws {
        let path = try export("exists")
        var o = RunExporter.Options()
        o.bundle.replace = false
        XCTAssertThrowsError(try RunExporter.export(run: try finishedRun(), to: path, options: o)) { e in
            XCTAssertTrue("\(e)".contains("already exists"))
        }
        let siblings = try FileManager.default.contentsOfDirectory(atPath: Self.scratch)
        XCTAssertFalse(siblings.contains { $0.contains(".alter-tmp-") }, "\(siblings)")
    }

    /// The output policy of export: never the run directory (or a directory holding it, or a path
    /// inside it), never a directory that is not a bundle, a bundle only with replace.
    func testExportNeverReplacesARunOrAnotherKindOfDirectory() throws {
        let run = try finishedRun()
        var o = RunExporter.Options()
        o.bundle.replace = true
        let parent = (run.path as NSString).deletingLastPathComponent
        for target in [run.path, parent, run.path + "/final/x.alter"] {
            XCTAssertThrowsError(try RunExporter.export(run: run, to: target, options: o)) { e in
                XCTAssertTrue("\(e)".contains("an input of this command"), "\(e)")
            }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.decisionsPath), "the run is intact")
        let plain = Self.scratch + "/plain-dir"
        try FileManager.default.createDirectory(atPath: plain + "/sub", withIntermediateDirectories: true)
        XCTAssertThrowsError(try RunExporter.export(run: run, to: plain, options: o)) { e in
            XCTAssertTrue("\(e)".contains("is not a bundle"), "\(e)")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: plain + "/sub"))
        let bundle = try export("replaced")
        XCTAssertNoThrow(try RunExporter.export(run: run, to: bundle, options: o))
        XCTAssertNoThrow(try RunExporter.export(run: run, to: Self.scratch + "/new/parents/b.alter", options: o))
    }
}
