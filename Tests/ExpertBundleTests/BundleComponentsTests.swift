import ALTER
import ExampleSupport
import ExpertBundle
import Foundation
import RunExport
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// Bundles that carry the pipeline's tokenizer, text encoder and VAE (formats/bundle.md, "Pipeline
/// components"), exported from a short run of the example with Tests/Fixtures/bundle-pipeline
/// (scripts/make_bundle_pipeline_fixtures.py): what is loaded back reproduces transformers' and
/// diffusers' float64 outputs, `verify` names every tampered file and tensor, `diff` and `inspect`
/// show the components.
final class BundleComponentsTests: XCTestCase {
    static let fixtures = Example.root.appendingPathComponent("Tests/Fixtures/bundle-pipeline").path
    static let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("alter-components-tests-\(getpid())").path
    nonisolated(unsafe) static var runPath: String?
    nonisolated(unsafe) static var bundles: [String: String] = [:]

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
        super.tearDown()
    }

    func finishedRun() throws -> RunDirectory {
        if let p = Self.runPath { return RunDirectory(path: p) }
        try? FileManager.default.removeItem(atPath: Self.scratch)
        let dir = try Example.finishedRun(at: Self.scratch + "/run", steps: 4, hypernetSteps: 2) {
            $0.settings.experts = 2
            $0.settings.keep = 0.8
            $0.settings.warmupSteps = 1
        }
        Self.runPath = dir.path
        return dir
    }

    /// The bundle `name` exported with `pipeline` (nil: none), made once per name.
    func export(_ name: String, pipeline: String? = fixtures, tokenizer: String? = nil, heads: Int? = nil, vaeConfig: String? = nil,
                dtype: DType = .f32) throws -> String {
        if let p = Self.bundles[name] { return p }
        let path = Self.scratch + "/\(name).alter"
        var o = RunExporter.Options()
        o.bundle.dtype = dtype
        o.bundle.replace = true
        o.pipeline = pipeline
        o.tokenizer = tokenizer
        o.heads = heads
        o.vaeConfig = vaeConfig
        try RunExporter.export(run: try finishedRun(), to: path, options: o)
        Self.bundles[name] = path
        return path
    }

    /// A copy of `pristine` changed by `edit`.
    func tampered(_ pristine: String, _ name: String, _ edit: (String) throws -> Void) throws -> String {
        let copy = Self.scratch + "/\(name).alter"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: pristine, toPath: copy)
        try edit(copy)
        return copy
    }

    func report(_ path: String) -> VerificationReport {
        do { return try ExpertBundle(path: path).verify() } catch { return VerificationReport(schemaError: error) }
    }

    func detail(_ r: VerificationReport, _ name: String) -> String { r.checks.first { $0.name == name }?.detail ?? "" }

    /// Relative L2 error of `actual` against `expected`, failing with the worst element named.
    func assertClose(_ actual: Tensor, _ expected: Tensor, _ what: String, relativeL2: Double) {
        XCTAssertEqual(actual.shape, expected.shape, what)
        guard actual.shape == expected.shape else { return }
        var diff = 0.0, norm = 0.0, worst = 0, worstDiff = -1.0
        for i in 0..<actual.count {
            let d = Double(actual.data[i]) - Double(expected.data[i])
            diff += d * d
            norm += Double(expected.data[i]) * Double(expected.data[i])
            if Swift.abs(d) > worstDiff { worstDiff = Swift.abs(d); worst = i }
        }
        let rel = (diff / max(norm, 1e-300)).squareRoot()
        XCTAssertLessThanOrEqual(rel, relativeL2, "\(what): rel. L2 error \(rel); worst element \(worst): \(actual.data[worst]) vs \(expected.data[worst])")
    }

    func expected() throws -> SafeTensorsFile { try SafeTensorsFile(path: Self.fixtures + "/expected.safetensors") }

    /// The I64 `input_ids` [1, 77] of the fixture.
    func ids(_ f: SafeTensorsFile) throws -> [Int] {
        let info = try f.require("input_ids")
        XCTAssertEqual(info.dtype, .i64)
        let raw = f.rawBytes(info)
        return (0..<info.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
    }

    func tensor(_ f: SafeTensorsFile, _ name: String) throws -> Tensor {
        Tensor(shape: try XCTUnwrap(f.info(name)).shape, values: try f.floats(name))
    }

    // MARK: export and load

    func testCarriedComponentsReproduceTheReferences() throws {
        let path = try export("pipeline")
        let bundle = try ExpertBundle(path: path)
        XCTAssertEqual(bundle.manifest.formatVersion, 3)
        XCTAssertTrue(bundle.hasComponents)
        for f in ["tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
                  "text_encoder/config.json", "text_encoder/model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: path + "/" + f), f)
        }
        let report = bundle.verify(reference: try UNet(checkpoint: UNetCheckpoint(path: try finishedRun().finalPath + "/unet")))
        XCTAssertTrue(report.passed, report.failures.joined(separator: "\n"))
        XCTAssertEqual(report.checks.map(\.name), VerificationReport.checkNames)
        XCTAssertTrue(detail(report, "components").contains("finite"), detail(report, "components"))

        let e = try expected()
        let tokenizer = try XCTUnwrap(try bundle.tokenizer())
        let prompt = try XCTUnwrap(e.metadata?["prompt"])
        XCTAssertEqual(tokenizer.tokenize(prompt).inputIds, try ids(e))
        let encoder = try XCTUnwrap(try bundle.textEncoder())
        assertClose(try encoder.encode([tokenizer.tokenize(prompt).inputIds]), try tensor(e, "context"), "text encoder", relativeL2: 1e-5)
        let vae = try XCTUnwrap(try bundle.autoencoder())
        assertClose(try vae.decode(try tensor(e, "latent")), try tensor(e, "decoded"), "VAE decoder", relativeL2: 1e-5)
        // Stored under the canonical names, in the bundle's dtype.
        let te = try SafeTensorsFile(path: path + "/text_encoder/model.safetensors")
        XCTAssertTrue(te.names.allSatisfy { $0.hasPrefix("text_model.") })
        XCTAssertEqual(Set(te.names.compactMap { te.info($0)?.dtype }), [.f32])
    }

    func testSingleFileNeedsATokenizerAndStoresTheBundleDType() throws {
        let original = Self.fixtures + "/original.safetensors"
        XCTAssertThrowsError(try export("single-no-tokenizer", pipeline: original)) { error in
            XCTAssertTrue("\(error)".contains("--tokenizer"), "\(error)")
        }
        let path = try export("single", pipeline: original, tokenizer: Self.fixtures + "/tokenizer", heads: 2,
                              vaeConfig: Self.fixtures + "/vae/config.json", dtype: .f16)
        let bundle = try ExpertBundle(path: path)
        let report = bundle.verify()
        XCTAssertTrue(report.passed, report.failures.joined(separator: "\n"))
        XCTAssertEqual(Set(bundle.component(.vae)?.tensors.map(\.dtype) ?? []), ["F16"])
        // A config inferred from the original file is written as transformers writes it.
        let text = try XCTUnwrap(try bundle.textEncoderCheckpoint())
        XCTAssertEqual(text.config.hiddenSize, 32)
        XCTAssertEqual(text.config.vocabSize, 1002)
        let e = try expected()
        let tokenizer = try XCTUnwrap(try bundle.tokenizer())
        let ids = tokenizer.tokenize(try XCTUnwrap(e.metadata?["prompt"])).inputIds
        assertClose(try text.encoder().encode([ids]), try tensor(e, "context"), "text encoder (F16 storage)", relativeL2: 1e-2)
        assertClose(try XCTUnwrap(try bundle.autoencoder()).decode(try tensor(e, "latent")), try tensor(e, "decoded"), "VAE decoder (F16)",
                    relativeL2: 1e-2)
    }

    func testBundleWithoutComponentsStaysVersion2() throws {
        let path = try export("plain", pipeline: nil)
        let bundle = try ExpertBundle(path: path)
        XCTAssertEqual(bundle.manifest.formatVersion, 2)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path + "/bundle.json"))) as? [String: Any])
        XCTAssertNil(json["components"])
        XCTAssertNil(try bundle.tokenizer())
        XCTAssertNil(try bundle.textEncoder())
        XCTAssertNil(try bundle.autoencoder())
        let report = bundle.verify()
        XCTAssertTrue(report.passed, report.failures.joined(separator: "\n"))
        XCTAssertTrue(detail(report, "components").contains("no pipeline components"))
        XCTAssertNil(try bundle.inspection().components)
    }

    func testComponentsThatDoNotFitAreRefusedBeforeWriting() throws {
        // The text encoder of Tests/Fixtures/text-encoder has vocab_size 520; the tokenizer here has 1,002 ids.
        let pipeline = Self.scratch + "/misfit-pipeline"
        try? FileManager.default.removeItem(atPath: pipeline)
        try FileManager.default.createDirectory(atPath: pipeline, withIntermediateDirectories: true)
        for c in ["tokenizer", "vae"] { try FileManager.default.copyItem(atPath: Self.fixtures + "/" + c, toPath: pipeline + "/" + c) }
        try FileManager.default.copyItem(atPath: Example.root.appendingPathComponent("Tests/Fixtures/text-encoder/diffusers").path,
                                          toPath: pipeline + "/text_encoder")
        XCTAssertThrowsError(try export("misfit", pipeline: pipeline)) { error in
            XCTAssertTrue("\(error)".contains("vocab_size is 520"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.scratch + "/misfit.alter"))
    }

    func testVersionsAndComponentsKey() throws {
        let good = try export("pipeline")
        let v2 = try tampered(good, "v2-with-components") { p in
            try self.editJSON(p + "/bundle.json") { $0["format_version"] = 2 }
        }
        XCTAssertThrowsError(try ExpertBundle(path: v2)) { XCTAssertTrue("\($0)".contains("unknown key \"components\""), "\($0)") }
        let v4 = try tampered(good, "v4") { p in try self.editJSON(p + "/bundle.json") { $0["format_version"] = 4 } }
        XCTAssertThrowsError(try ExpertBundle(path: v4)) { XCTAssertTrue("\($0)".contains("format_version 4 is not supported"), "\($0)") }
        let extra = try tampered(good, "component-extra-file") { p in
            try self.editJSON(p + "/bundle.json") { o in
                var c = o["components"] as! [String: Any], t = c["tokenizer"] as! [String: Any]
                t["files"] = (t["files"] as! [[String: Any]]) + [["path": "tokenizer/added_tokens.json", "bytes": 2, "sha256": String(repeating: "0", count: 64)]]
                c["tokenizer"] = t
                o["components"] = c
            }
        }
        XCTAssertThrowsError(try ExpertBundle(path: extra)) { XCTAssertTrue("\($0)".contains("tokenizer/added_tokens.json"), "\($0)") }
    }

    func editJSON(_ file: String, _ edit: (inout [String: Any]) -> Void) throws {
        var o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        edit(&o)
        try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: file))
    }

    // MARK: tampering

    func testTamperedComponentsFailVerifyNamingTheFileAndTensor() throws {
        let good = try export("pipeline")
        let vae = "vae/diffusion_pytorch_model.safetensors"
        let victim = "decoder.conv_out.weight"

        let flipped = try tampered(good, "flipped-vae") { p in
            let f = try SafeTensorsFile(path: p + "/" + vae)
            let offset = f.fileOffset(try XCTUnwrap(f.info(victim))) + 3
            let h = try FileHandle(forUpdating: URL(fileURLWithPath: p + "/" + vae))
            try h.seek(toOffset: UInt64(offset))
            let b = try XCTUnwrap(h.readData(ofLength: 1).first)
            try h.seek(toOffset: UInt64(offset))
            h.write(Data([b ^ 0x10]))
            try h.close()
        }
        var r = report(flipped)
        XCTAssertFalse(r.passed)
        XCTAssertTrue(detail(r, "checksums").contains("\(vae) has SHA-256"), detail(r, "checksums"))
        XCTAssertTrue(detail(r, "components").contains("tensor '\(victim)' has SHA-256"), detail(r, "components"))

        let deleted = try tampered(good, "deleted-vae-tensor") { p in
            let f = try SafeTensorsFile(path: p + "/" + vae)
            let keep = f.names.filter { $0 != victim }
            let out = p + "/vae/rewritten.safetensors"
            let w = try SafeTensorsWriter(path: out, tensors: keep.map { TensorSpec(name: $0, dtype: f.info($0)!.dtype, shape: f.info($0)!.shape) },
                                          metadata: ["format": "pt"])
            for spec in w.order { try w.write(spec.name, bytes: f.rawBytes(f.info(spec.name)!)) }
            try w.finish()
            try FileManager.default.removeItem(atPath: p + "/" + vae)
            try FileManager.default.moveItem(atPath: out, toPath: p + "/" + vae)
        }
        r = report(deleted)
        XCTAssertTrue(detail(r, "components").contains("\(vae): tensor '\(victim)' is missing"), detail(r, "components"))
        XCTAssertTrue(detail(r, "components").contains(victim) && detail(r, "components").contains("VAE:"), detail(r, "components"))

        let edited = try tampered(good, "edited-vae-config") { p in
            try self.editJSON(p + "/vae/config.json") { $0["latent_channels"] = 8 }
        }
        r = report(edited)
        XCTAssertTrue(detail(r, "checksums").contains("vae/config.json has"), detail(r, "checksums"))
        XCTAssertTrue(detail(r, "components").contains("VAE:"), detail(r, "components"))
        XCTAssertThrowsError(try ExpertBundle(path: edited).autoencoder()) { XCTAssertTrue("\($0)".contains("quant_conv"), "\($0)") }

        let missing = try tampered(good, "missing-merges") { p in try FileManager.default.removeItem(atPath: p + "/tokenizer/merges.txt") }
        r = report(missing)
        XCTAssertTrue(detail(r, "files").contains("tokenizer/merges.txt (components.tokenizer.files[1]) is not stored"), detail(r, "files"))
        XCTAssertTrue(detail(r, "checksums").contains("tokenizer/merges.txt is missing"), detail(r, "checksums"))
        XCTAssertTrue(detail(r, "components").contains("tokenizer: ") && detail(r, "components").contains("merges.txt"), detail(r, "components"))
        XCTAssertThrowsError(try ExpertBundle(path: missing).tokenizer()) { XCTAssertTrue("\($0)".contains("merges.txt"), "\($0)") }

        let linked = try tampered(good, "linked-vocab") { p in
            try FileManager.default.removeItem(atPath: p + "/tokenizer/vocab.json")
            try FileManager.default.createSymbolicLink(atPath: p + "/tokenizer/vocab.json", withDestinationPath: Self.fixtures + "/tokenizer/vocab.json")
        }
        XCTAssertThrowsError(try ExpertBundle(path: linked).tokenizer()) { XCTAssertTrue("\($0)".contains("symbolic link"), "\($0)") }
        XCTAssertTrue(detail(report(linked), "files").contains("tokenizer/vocab.json"), detail(report(linked), "files"))
    }

    // MARK: inspect and diff

    func testInspectionAndDiffShowTheComponents() throws {
        let a = try export("pipeline"), half = try export("pipeline-f16", dtype: .f16), plain = try export("plain", pipeline: nil)
        let inspection = try XCTUnwrap(try ExpertBundle(path: a).inspection().components)
        XCTAssertEqual(inspection.tokenizer.vocabSize, 1002)
        XCTAssertEqual(inspection.textEncoder.hiddenSize, 32)
        XCTAssertEqual(inspection.vae.latentChannels, 4)
        XCTAssertEqual(inspection.vae.dtype, "F32")

        let same = try BundleDiff(a, a)
        XCTAssertTrue(same.isEmpty)
        XCTAssertEqual(same.components.map(\.component), ["tokenizer", "text_encoder", "vae"])
        XCTAssertTrue(same.components.allSatisfy(\.same))

        let d = try BundleDiff(a, half)
        XCTAssertFalse(d.isEmpty)
        let byName = Dictionary(uniqueKeysWithValues: d.components.map { ($0.component, $0) })
        XCTAssertEqual(byName["tokenizer"]?.same, true)
        for c in ["text_encoder", "vae"] {
            let row = try XCTUnwrap(byName[c])
            XCTAssertFalse(row.same, c)
            XCTAssertFalse(row.tensors.isEmpty, c)
            // F32 -> F16 rounding: every tensor changes by at most 2^-11 relative.
            for t in row.tensors { XCTAssertLessThan(t.relativeChange ?? .infinity, 1e-3, "\(c) \(t.name)") }
            XCTAssertTrue(row.tensors.contains { $0.dtype.a == "F32" && $0.dtype.b == "F16" })
        }
        let dropped = try BundleDiff(a, plain)
        XCTAssertTrue(dropped.components.allSatisfy { $0.inA && !$0.inB && !$0.same })

        try GoldenKeys.check(inspection, name: "inspect-bundle-components")
        try GoldenKeys.check(d.components, name: "diff-components")
        let manifest = try XCTUnwrap(FileManager.default.contents(atPath: a + "/bundle.json"))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: manifest) as? [String: Any])
        try GoldenKeys.check(json: try JSONSerialization.data(withJSONObject: try XCTUnwrap(object["components"])), name: "bundle-manifest-components")
    }

}
