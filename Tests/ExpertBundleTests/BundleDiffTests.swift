import ALTER
import Experts
import RunExport
import ExampleSupport
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore
import XCTest

/// `BundleDiff` on bundles of two short ALTER runs of the example model that differ in seed and
/// kept fraction; expected changes are computed here from the manifests, independently.
final class BundleDiffTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("alter-diff-tests-\(getpid())").path
    nonisolated(unsafe) static var bundles: [String: String] = [:]

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
        super.tearDown()
    }

    /// The bundle of a finished 12-step run (made once per name).
    func bundle(_ name: String, seed: UInt64, keep: Double) throws -> String {
        if let p = Self.bundles[name] { return p }
        let run = Self.scratch + "/run-\(name)"
        try? FileManager.default.removeItem(atPath: run)
        let dir = try Example.finishedRun(at: run, steps: 12, hypernetSteps: 8) {
            $0.settings.experts = 3
            $0.settings.keep = keep
            $0.settings.learningRateHypernet = 5e-2
            $0.settings.warmupSteps = 2
            $0.seed = seed
        }
        let path = Self.scratch + "/\(name).alter"
        var eo = RunExporter.Options()
        eo.bundle.replace = true
        try RunExporter.export(run: dir, to: path, options: eo)
        Self.bundles[name] = path
        return path
    }

    func bundleA() throws -> String { try bundle("a", seed: 0, keep: 0.7) }
    func bundleB() throws -> String { try bundle("b", seed: 7, keep: 0.55) }

    func copy(_ path: String, to name: String) throws -> String {
        let dest = Self.scratch + "/\(name)"
        try? FileManager.default.removeItem(atPath: dest)
        try FileManager.default.copyItem(atPath: path, toPath: dest)
        return dest
    }

    func editJSON(_ file: String, _ edit: (inout [String: Any]) -> Void) throws {
        var o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        edit(&o)
        try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: file))
    }

    /// Every stored tensor of a bundle: name -> shape (from the expert manifests).
    func stored(_ b: ExpertBundle) -> [String: [Int]] {
        var out: [String: [Int]] = [:]
        for m in b.experts { for t in m.tensors { out[t.name] = t.shape } }
        return out
    }

    /// The routing changes as a per-timestep table, from the diff's ranges.
    func expand(_ ranges: [BundleDiff.RoutingChange]) -> [Int: [Int?]] {
        var out: [Int: [Int?]] = [:]
        for r in ranges { for t in r.first...r.last { XCTAssertNil(out[t], "timestep \(t) in two ranges"); out[t] = [r.from, r.to] } }
        // Ranges are maximal: neighbours with the same change would have been one range.
        for (x, y) in zip(ranges, ranges.dropFirst()) {
            XCTAssertLessThan(x.last, y.first)
            XCTAssertFalse(x.last + 1 == y.first && x.from == y.from && x.to == y.to, "\(x) and \(y) should be one range")
        }
        return out
    }

    func relativeChange(_ name: String, _ a: ExpertBundle, _ b: ExpertBundle) throws -> Double {
        func values(_ bundle: ExpertBundle) throws -> [Float] {
            let entry = try XCTUnwrap(bundle.experts.lazy.flatMap(\.tensors).first { $0.name == name })
            return try SafeTensorsFile(path: bundle.path + "/" + entry.file).floats(name)
        }
        let x = try values(a), y = try values(b)
        XCTAssertEqual(x.count, y.count)
        var na = 0.0, nd = 0.0
        for i in x.indices {
            na += Double(x[i]) * Double(x[i])
            nd += (Double(y[i]) - Double(x[i])) * (Double(y[i]) - Double(x[i]))
        }
        return nd.squareRoot() / na.squareRoot()
    }

    // MARK: tests

    func testBundleAgainstItselfIsEmpty() throws {
        let a = try bundleA()
        for other in [a, try copy(a, to: "a-copy.alter"), a + "/bundle.json"] {
            let d = try BundleDiff(a, other)
            XCTAssertTrue(d.isEmpty, "\(d)")
            XCTAssertTrue(d.sameArchitecture && d.sameUnits)
            XCTAssertTrue(d.units.isEmpty && d.routing.isEmpty && d.tensorsOnlyInA.isEmpty && d.tensorsOnlyInB.isEmpty)
            XCTAssertEqual(d.tensors.count, stored(try ExpertBundle(path: a)).count)
            XCTAssertTrue(d.tensors.allSatisfy { $0.sameBytes && $0.relativeChange == 0 && $0.normA == nil })
        }
        // The same weights stored as F16: every tensor is read, changes are rounding-sized.
        let run = RunDirectory(path: Self.scratch + "/run-a")
        var o = RunExporter.Options()
        o.bundle.dtype = .f16
        o.bundle.replace = true
        let half = Self.scratch + "/a-half.alter"
        try RunExporter.export(run: run, to: half, options: o)
        let d = try BundleDiff(a, half)
        XCTAssertFalse(d.isEmpty)
        XCTAssertTrue(d.units.isEmpty && d.routing.isEmpty && !d.macsChanged)
        XCTAssertTrue(d.tensors.allSatisfy { !$0.sameBytes && $0.dtype.a == "F32" && $0.dtype.b == "F16" })
        XCTAssertTrue(d.tensors.allSatisfy { ($0.relativeChange ?? 1) < 1e-3 }, "\(d.tensors.prefix(3))")
    }

    func testDifferentRunsShowRoutingUnitAndTensorChanges() throws {
        let pa = try bundleA(), pb = try bundleB()
        let a = try ExpertBundle(path: pa), b = try ExpertBundle(path: pb)
        let d = try BundleDiff(pa, pb)
        XCTAssertTrue(d.sameArchitecture && d.architectureChanges.isEmpty && d.sameUnits)
        XCTAssertNil(d.predictionType)
        XCTAssertNil(d.expertCount)
        XCTAssertFalse(d.isEmpty)

        // Routing, per timestep.
        var expected: [Int: [Int?]] = [:]
        for t in 0..<a.manifest.routing.count where a.manifest.routing[t] != b.manifest.routing[t] {
            expected[t] = [a.manifest.routing[t], b.manifest.routing[t]]
        }
        XCTAssertFalse(expected.isEmpty, "the two runs should route some timesteps differently")
        XCTAssertEqual(expand(d.routing), expected)
        XCTAssertEqual(d.routingChangedTimesteps, expected.count)

        // Units, per expert.
        var expectedUnits: [Int: (Set<String>, Set<String>)] = [:]
        for e in a.experts.indices {
            let ka = Set(a.experts[e].keptUnits), kb = Set(b.experts[e].keptUnits)
            if ka != kb { expectedUnits[e] = (kb.subtracting(ka), ka.subtracting(kb)) }
        }
        XCTAssertEqual(Set(d.units.map(\.expertA)), Set(expectedUnits.keys))
        for u in d.units {
            XCTAssertEqual(u.expertA, u.expertB)
            XCTAssertEqual(Set(u.added), expectedUnits[u.expertA]?.0)
            XCTAssertEqual(Set(u.dropped), expectedUnits[u.expertA]?.1)
            XCTAssertEqual(u.added, a.manifest.units.filter(Set(u.added).contains), "in execution order")
        }
        XCTAssertFalse(expectedUnits.isEmpty, "keep 0.7 and 0.55 should keep different units")

        // MACs.
        XCTAssertEqual(d.macs.dense.a, d.macs.dense.b)
        XCTAssertEqual(d.macs.experts.map(\.macs.a), a.manifest.macs.experts)
        XCTAssertEqual(d.macs.experts.map(\.macs.b), b.manifest.macs.experts)
        XCTAssertEqual(d.macs.routedMean?.a, a.manifest.macs.meanOverTrainTimesteps)
        XCTAssertEqual(d.macs.keptFraction?.b, b.manifest.macs.keptFraction)
        XCTAssertTrue(d.macsChanged)

        // Tensors: only-in sets from the manifests; norms largest first; one checked by hand.
        let sa = stored(a), sb = stored(b)
        XCTAssertEqual(Set(d.tensorsOnlyInA.map(\.name)), Set(sa.keys).subtracting(sb.keys))
        XCTAssertEqual(Set(d.tensorsOnlyInB.map(\.name)), Set(sb.keys).subtracting(sa.keys))
        XCTAssertEqual(Set(d.tensors.map(\.name)), Set(sa.keys).intersection(sb.keys))
        XCTAssertTrue(d.tensorShapeChanges.isEmpty)
        let rel = d.tensors.map { $0.relativeChange ?? .infinity }
        XCTAssertEqual(rel, rel.sorted(by: >))
        XCTAssertGreaterThan(rel[0], 0)
        for name in ["conv_in.weight", d.tensors[0].name] {
            let t = try XCTUnwrap(d.tensors.first { $0.name == name })
            let hand = try relativeChange(name, a, b)
            XCTAssertGreaterThan(hand, 0, name)
            XCTAssertEqual(try XCTUnwrap(t.relativeChange), hand, accuracy: hand * 1e-12, name)
            XCTAssertFalse(t.sameBytes)
        }

        // Swapped: routing and units mirror.
        let r = try BundleDiff(pb, pa)
        XCTAssertEqual(r.routing.map { [$0.first, $0.last, $0.to, $0.from] }, d.routing.map { [$0.first, $0.last, $0.from, $0.to] })
        XCTAssertEqual(r.units.map { [$0.dropped, $0.added] }, d.units.map { [$0.added, $0.dropped] })

        // JSON encodes (no infinities) and lists every tensor.
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(d)) as? [String: Any]
        XCTAssertEqual((json?["tensors"] as? [Any])?.count, d.tensors.count)
        XCTAssertEqual(json?["is_empty"] as? Bool, false)
    }

    func testTwoExpertManifests() throws {
        let pa = try bundleA(), pb = try bundleB()
        let a = try ExpertBundle(path: pa), b = try ExpertBundle(path: pb)
        // A pair of experts that serve different timesteps and keep different units.
        func served(_ x: ExpertBundle, _ e: Int) -> Set<Int> { Set(x.manifest.routing.indices.filter { x.manifest.routing[$0] == e }) }
        let (ea, eb) = try XCTUnwrap(a.experts.indices.flatMap { i in b.experts.indices.map { (i, $0) } }.first { i, j in
            served(a, i) != served(b, j) && Set(a.experts[i].keptUnits) != Set(b.experts[j].keptUnits)
        })
        let d = try BundleDiff(pa + "/experts/expert-\(ea).json", pb + "/experts/expert-\(eb).json")
        XCTAssertEqual(d.a.expert, ea)
        XCTAssertEqual(d.b.expert, eb)
        XCTAssertEqual(d.a.bundle, pa)

        let ka = Set(a.experts[ea].keptUnits), kb = Set(b.experts[eb].keptUnits)
        if ka == kb { XCTAssertTrue(d.units.isEmpty) } else {
            XCTAssertEqual(d.units.count, 1)
            XCTAssertEqual(Set(d.units[0].added), kb.subtracting(ka))
            XCTAssertEqual(Set(d.units[0].dropped), ka.subtracting(kb))
        }
        // Timesteps served by one and not the other, with where they go.
        var expected: [Int: [Int?]] = [:]
        for t in 0..<a.manifest.routing.count where (a.manifest.routing[t] == ea) != (b.manifest.routing[t] == eb) {
            expected[t] = [a.manifest.routing[t], b.manifest.routing[t]]
        }
        XCTAssertFalse(expected.isEmpty)
        XCTAssertEqual(expand(d.routing), expected)
        XCTAssertEqual(d.macs.experts.count, 1)
        XCTAssertEqual(d.macs.experts[0].macs, .init(a: a.experts[ea].macs, b: b.experts[eb].macs))
        XCTAssertNil(d.macs.routedMean)
        let na = Set(a.experts[ea].tensors.map(\.name)), nb = Set(b.experts[eb].tensors.map(\.name))
        XCTAssertEqual(Set(d.tensors.map(\.name)), na.intersection(nb))
        XCTAssertEqual(Set(d.tensorsOnlyInA.map(\.name)), na.subtracting(nb))
        XCTAssertEqual(Set(d.tensorsOnlyInB.map(\.name)), nb.subtracting(na))
        let hand = try relativeChange("conv_in.weight", a, b)
        XCTAssertEqual(try XCTUnwrap(d.tensors.first { $0.name == "conv_in.weight" }?.relativeChange), hand, accuracy: hand * 1e-12)

        // An expert against itself, and through a relative path.
        let same = try BundleDiff(pa + "/experts/expert-2.json", pa + "/./experts/../experts/expert-2.json")
        XCTAssertTrue(same.isEmpty, "\(same)")
    }

    func testDifferentArchitectureIsReportedWithRoutingAndUnits() throws {
        let pa = try bundleA(), pb = try bundleB()
        let edited = try copy(pb, to: "b-eps.alter")
        try editJSON(edited + "/bundle.json") { o in
            var arch = o["architecture"] as! [String: Any]
            arch["norm_eps"] = 1e-6
            o["architecture"] = arch
            o["prediction_type"] = "v_prediction"
        }
        let plain = try BundleDiff(pa, pb)
        let d = try BundleDiff(pa, edited)
        XCTAssertFalse(d.sameArchitecture)
        XCTAssertEqual(d.architectureChanges.map(\.key), ["norm_eps"])
        XCTAssertEqual(d.predictionType, .init(a: "epsilon", b: "v_prediction"))
        XCTAssertEqual(d.routing, plain.routing)
        XCTAssertEqual(d.units, plain.units)
        XCTAssertEqual(d.tensors, plain.tensors)
    }

    func testBadInputsNameThePath() throws {
        let pa = try bundleA()
        let emptyDir = Self.scratch + "/not-a-bundle"
        try FileManager.default.createDirectory(atPath: emptyDir, withIntermediateDirectories: true)
        let text = Self.scratch + "/notes.txt"
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        let loose = Self.scratch + "/expert-0.json"
        try? FileManager.default.removeItem(atPath: loose)
        try FileManager.default.copyItem(atPath: pa + "/experts/expert-0.json", toPath: loose)
        let cases: [(String, String, String, String)] = [  // a, b, the path named, words
            (pa, emptyDir, emptyDir, "not a bundle"),
            (emptyDir, pa, emptyDir, "not a bundle"),
            (pa, text, text, "not a bundle"),
            (pa, Self.scratch + "/missing.alter", Self.scratch + "/missing.alter", "does not exist"),
            (loose, pa + "/experts/expert-1.json", loose, "no enclosing bundle.json lists"),
            (pa, pa + "/experts/expert-1.json", pa, "give two bundles or two expert manifests"),
        ]
        for (a, b, named, words) in cases {
            XCTAssertThrowsError(try BundleDiff(a, b), "\(a) vs \(b)") { error in
                guard let e = error as? BundleError else { return XCTFail("\(error) is not a BundleError") }
                XCTAssertEqual(e.path, named)
                XCTAssertTrue(e.message.contains(words), e.description)
            }
        }
    }

    // MARK: the JSON contract (formats/cli-json.md)

    /// `inspect NAME.alter --json` (with --expert and --schedule), `verify --deep --json`, `diff --json`,
    /// `sample --json`, `export --json`, bundle.json and an expert manifest against their golden key lists.
    func testBundleReportKeys() throws {
        let pa = try bundleA(), pb = try bundleB()
        let a = try ExpertBundle(path: pa)
        try GoldenKeys.check(try a.inspection(expert: 0, schedule: try SchedulerKind(parsing: "pndm:20")), name: "inspect-bundle",
                             opaque: ["expert_manifest.tensors[].shape"])
        try GoldenKeys.check(ExpertBundle.Summary(a.manifest), name: "export")
        let reference = try UNet(checkpoint: UNetCheckpoint(path: Self.scratch + "/run-a/final/unet"))
        let report = a.verify(reference: reference)
        XCTAssertTrue(report.passed, "\(report.failures)")
        try GoldenKeys.check(report, name: "verify")
        try GoldenKeys.check(try BundleDiff(pa, pb), name: "diff")
        let read = { (p: String) throws -> Data in try XCTUnwrap(FileManager.default.contents(atPath: p), p) }
        try GoldenKeys.check(json: try read(pa + "/bundle.json"), name: "bundle-manifest", opaque: ["architecture", "scheduler"])
        try GoldenKeys.check(json: try read(pa + "/experts/expert-0.json"), name: "bundle-expert-manifest")

        let sampler = try RoutedSampler(bundle: a)
        var options = RoutedSampler.Options(scheduler: try SchedulerKind(.ddim, steps: 2))
        options.seed = 1
        let context = Tensor(shape: [1, a.manifest.macs.contextLength, a.config.crossAttentionDim],
                             values: [Float](repeating: 0.1, count: a.manifest.macs.contextLength * a.config.crossAttentionDim))
        let result = try sampler.sample(context: context, uncond: nil, options: options)
        let sample = SamplingReport(result: result, sampler: sampler, model: pa, options: options, uncond: "zeros", output: "out.safetensors",
                                    loadSeconds: 0, sampleSeconds: result.seconds)
        XCTAssertTrue(sample.isBundle)
        try GoldenKeys.check(sample, name: "sample")
    }

    /// A version 1 bundle (key `kept_fraction`) still reads and verifies.
    func testVersion1BundleReads() throws {
        let path = try copy(try bundleA(), to: "version1.alter")
        func downgrade(_ file: String) throws -> Data {
            var text = try String(contentsOfFile: file, encoding: .utf8)
            text = text.replacingOccurrences(of: "\"kept_mac_fraction\"", with: "\"kept_fraction\"")
                .replacingOccurrences(of: "\"format_version\" : 2", with: "\"format_version\" : 1")
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            return Data(text.utf8)
        }
        var manifest = try String(contentsOfFile: path + "/bundle.json", encoding: .utf8)
        for e in 0..<3 {
            let old = try SHA256.hex(file: path + "/experts/expert-\(e).json")
            let new = try downgrade(path + "/experts/expert-\(e).json").withUnsafeBytes { SHA256.hex($0) }
            manifest = manifest.replacingOccurrences(of: old, with: new)
        }
        try manifest.write(toFile: path + "/bundle.json", atomically: true, encoding: .utf8)
        _ = try downgrade(path + "/bundle.json")
        let b = try ExpertBundle(path: path)
        XCTAssertEqual(b.manifest.formatVersion, 1)
        XCTAssertEqual(b.manifest.macs.keptFraction, try ExpertBundle(path: try bundleA()).manifest.macs.keptFraction)
        XCTAssertGreaterThan(b.experts[0].keptFraction, 0)
        let report = b.verify()
        XCTAssertTrue(report.passed, "\(report.failures)")
    }
}
