import ExampleSupport
import Foundation
import Images
import XCTest

/// `alter eval`: a candidate's images against a dense reference's, on the tiny pipeline fixture
/// and on a bundle exported from the example run.
extension CLITests {
    func evalReport(_ arguments: [String]) throws -> [String: Any] {
        let r = try alter(["eval"] + arguments + ["--json"])
        XCTAssertEqual(r.status, 0, r.output)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any], r.output)
    }

    /// The pipeline against itself: identical images with the same steps (PSNR null, SSIM 1), and
    /// with fewer steps a finite PSNR, SSIM below 1 and the steps ratio as MAC ratio.
    func testEvalPipelineAgainstItself() throws {
        let dir = try temporaryDirectory(self)
        let f = Self.pipelineFixture
        let prompts = dir + "/prompts.txt"
        try Data("a red cube\ntwo blue balls\n".utf8).write(to: URL(fileURLWithPath: prompts))
        let same = try alter(["eval", f, "--reference", f, "--prompts", prompts, "--seed", "1,2", "--reference-steps", "3",
                              "--images", dir + "/img", "--side-by-side", dir + "/pairs.png", "--json"])
        XCTAssertEqual(same.status, 0, same.output)
        try GoldenKeys.check(json: Data(same.output.utf8), name: "eval")
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(same.output.utf8)) as? [String: Any])
        let pairs = try XCTUnwrap(report["pairs"] as? [[String: Any]])
        XCTAssertEqual(pairs.map { $0["seed"] as? Int }, [1, 2, 1, 2])
        for p in pairs {
            XCTAssertTrue(p["psnr"] is NSNull, "\(p)")
            XCTAssertEqual(try XCTUnwrap(p["ssim"] as? Double), 1, accuracy: 1e-12)
        }
        let psnr = try XCTUnwrap(report["psnr"] as? [String: Any])
        XCTAssertTrue(psnr["mean"] is NSNull)
        XCTAssertEqual(psnr["infinite_count"] as? Int, 4)
        XCTAssertEqual((report["ratio"] as? [String: Any])?["macs"] as? Double, 1)
        XCTAssertEqual((report["candidate"] as? [String: Any])?["scheduler"] as? String, "ddim")
        XCTAssertEqual((report["candidate"] as? [String: Any])?["steps"] as? Int, 3)
        for name in ["reference-p0-s1.png", "candidate-p1-s2.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/img/" + name), name)
        }
        XCTAssertEqual(try ImageFile.read(path: dir + "/img/reference-p1-s2.png"), try ImageFile.read(path: dir + "/img/candidate-p1-s2.png"))
        // The side-by-side image: a row per prompt, a reference | candidate pair of columns per seed.
        XCTAssertEqual(report["side_by_side"] as? String, dir + "/pairs.png")
        let cells = try ["p0-s1", "p0-s2", "p1-s1", "p1-s2"].flatMap { k in
            try ["reference", "candidate"].map { try ImageFile.read(path: dir + "/img/\($0)-\(k).png") }
        }
        XCTAssertEqual(try ImageFile.read(path: dir + "/pairs.png"), try RGBImage.grid(cells, rows: 2, cols: 4))
        // Existing images are kept without --force.
        try assertFails(["eval", f, "--reference", f, "--prompts", prompts, "--seed", "1", "--reference-steps", "3", "--images", dir + "/img"],
                        saying: "reference-p0-s1.png")

        // Fewer steps, in text: a row per pair, then mean, std and min.
        let text = try alter(["eval", f, "--reference", f, "--prompt", "a red cube", "--seed", "1,2", "--reference-steps", "4", "--steps", "2"])
        XCTAssertEqual(text.status, 0, text.output)
        XCTAssertTrue(text.output.contains("MACs 0.5000"), text.output)
        for row in ["mean", "std", "min"] { XCTAssertTrue(text.output.contains("\n" + row + " "), text.output) }
        let fewer = try evalReport([f, "--reference", f, "--prompt", "a red cube", "--seed", "1,2", "--reference-steps", "4", "--steps", "2"])
        XCTAssertEqual(try XCTUnwrap((fewer["ratio"] as? [String: Any])?["macs"] as? Double), 0.5, accuracy: 1e-12)
        for p in try XCTUnwrap(fewer["pairs"] as? [[String: Any]]) {
            XCTAssertNotNil(p["psnr"] as? Double, "\(p)")
            XCTAssertLessThan(try XCTUnwrap(p["ssim"] as? Double), 1)
        }
        let ssim = try XCTUnwrap(fewer["ssim"] as? [String: Any]), psnr2 = try XCTUnwrap(fewer["psnr"] as? [String: Any])
        print("eval fixture DDIM 4 vs DDIM 2 steps, seeds 1,2: PSNR mean \(psnr2["mean"] ?? "-") dB, SSIM mean \(ssim["mean"] ?? "-"), "
              + "ratio \(fewer["ratio"] ?? "-")")
    }

    /// A bundle's experts against the example UNet dense with the same components (--pipeline for both).
    func testEvalBundleAgainstItsDenseModel() throws {
        let dir = try temporaryDirectory(self)
        let run = try Example.finishedRun(at: dir + "/run", steps: 3, hypernetSteps: 1) {
            $0.settings.experts = 2
            $0.settings.keep = 0.6
            $0.settings.warmupSteps = 1
        }
        let components = "Tests/Fixtures/bundle-pipeline"
        let bundle = dir + "/p.alter"
        XCTAssertEqual(try alter(["export", run.path, "-o", bundle, "--pipeline", components]).status, 0)
        let report = try evalReport([bundle, "--reference", Example.model, "--config", Example.config, "--pipeline", components,
                                     "--prompt", "a cube", "--seed", "3,4", "--reference-steps", "4"])
        let candidate = try XCTUnwrap(report["candidate"] as? [String: Any])
        XCTAssertEqual(candidate["is_bundle"] as? Bool, true)
        XCTAssertEqual((report["reference"] as? [String: Any])?["is_bundle"] as? Bool, false)
        let ratio = try XCTUnwrap((report["ratio"] as? [String: Any])?["macs"] as? Double)
        XCTAssertLessThan(ratio, 1)
        XCTAssertGreaterThan(ratio, 0)
        for p in try XCTUnwrap(report["pairs"] as? [[String: Any]]) {
            XCTAssertNotNil(p["psnr"] as? Double, "\(p)")
            XCTAssertLessThan(try XCTUnwrap(p["ssim"] as? Double), 1)
        }
        print("eval bundle vs example UNet, DDIM 4 steps, seeds 3,4: PSNR \(report["psnr"] ?? "-"), SSIM \(report["ssim"] ?? "-"), ratio \(report["ratio"] ?? "-")")
        // Without --pipeline the single-file reference has no tokenizer; a bundle is no reference.
        try assertFails(["eval", bundle, "--reference", Example.model, "--config", Example.config, "--prompt", "x"], saying: "--tokenizer")
        try assertFails(["eval", Self.pipelineFixture, "--reference", bundle, "--prompt", "x"], saying: "drawn dense")
        try assertFails(["eval", Self.pipelineFixture, "--reference", Self.pipelineFixture], saying: "--prompts")
    }
}
