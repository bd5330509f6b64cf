import ExampleSupport
import ExpertBundle
import Foundation
import Images
import SafeTensors
import StableDiffusion
import TextToImage
import XCTest

/// `alter sample --prompt`: prompts to PNG files, from a pipeline folder, a single file with a
/// tokenizer, and a bundle that carries its components.
extension CLITests {
    static let pipelineFixture = "Tests/Fixtures/pipeline/sd21-tiny"

    /// The PNG bytes the library makes for one prompt and seed (the same noise rule as the CLI).
    func libraryPNG(_ pipe: TextToImagePipeline, prompt: String, negative: String?, seed: UInt64, steps: Int, scheduler: SchedulerKind.Method) throws -> [UInt8] {
        var o = RoutedSampler.Options(scheduler: try SchedulerKind(scheduler, steps: steps))
        o.guidance = 7.5
        let r = try pipe.draw([PromptEntry(prompt: prompt)], negativePrompt: negative, seeds: [seed], options: o)
        return try PNGWriter.encode(r.images[0].image)
    }

    func testSamplePromptWritesThePipelinesImages() throws {
        let dir = try temporaryDirectory(self)
        let pipe = try TextToImagePipeline(pipeline: Example.root.appendingPathComponent(Self.pipelineFixture).path)
        let one = dir + "/one.png"
        let a = try alter(["sample", Self.pipelineFixture, "--prompt", "a red cube", "--negative-prompt", "blurry", "--seed", "3",
                           "--scheduler", "ddim:4", "-o", one])
        XCTAssertEqual(a.status, 0, a.output)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: one)))
        XCTAssertEqual(bytes, try libraryPNG(pipe, prompt: "a red cube", negative: "blurry", seed: 3, steps: 4, scheduler: .ddim))
        let read = try ImageFile.read(path: one)
        XCTAssertEqual([read.width, read.height], [64, 64])

        // Several prompts and seeds: one file per prompt and seed; each image depends on its own seed only.
        let prompts = dir + "/prompts.jsonl"
        try Data("{\"prompt\": \"a red cube\", \"negative_prompt\": \"blurry\"}\n\n{\"prompt\": \"two blue balls\"}\n".utf8)
            .write(to: URL(fileURLWithPath: prompts))
        // --batch 1: bit for bit the library's images drawn alone (batches agree within rounding: DrawingBatchTests).
        let many = try alter(["sample", Self.pipelineFixture, "--prompts", prompts, "--seed", "3,4", "--scheduler", "ddim:4",
                              "-o", dir + "/m.png", "--latents", dir + "/m.safetensors", "--json", "--batch", "1"])
        XCTAssertEqual(many.status, 0, many.output)
        for p in 0..<2 { for s in [3, 4] { XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/m-p\(p)-s\(s).png"), many.output) } }
        XCTAssertEqual(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/m-p0-s3.png"))), bytes)
        XCTAssertEqual(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/m-p1-s4.png"))),
                       try libraryPNG(pipe, prompt: "two blue balls", negative: nil, seed: 4, steps: 4, scheduler: .ddim))
        let json = Data(many.output.utf8)
        try GoldenKeys.check(json: json, name: "sample-prompt", opaque: ["expert_call_counts"])
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: json) as? [String: Any])
        XCTAssertEqual(report["unet_call_count"] as? Int, 16)
        XCTAssertEqual(report["batch"] as? Int, 1)
        for bad in ["0", "257"] {
            let refused = try alter(["sample", Self.pipelineFixture, "--prompts", prompts, "--batch", bad, "-o", dir + "/b.png"])
            XCTAssertNotEqual(refused.status, 0, refused.output)
            XCTAssertTrue(refused.output.contains("--batch"), refused.output)
        }
        XCTAssertEqual((report["images"] as? [[String: Any]])?.map { $0["seed"] as? Int }, [3, 4, 3, 4])
        let latents = try SafeTensorsFile(path: dir + "/m.safetensors")
        XCTAssertEqual(latents.tensors.first?.shape, [4, 4, 8, 8])

        // A grid: a row per prompt, a column per seed, at the size asked for.
        let grid = try alter(["sample", Self.pipelineFixture, "--prompts", prompts, "--seed", "3,4", "--steps", "2",
                              "--height", "128", "--width", "64", "--grid", "-o", dir + "/g.png"])
        XCTAssertEqual(grid.status, 0, grid.output)
        let g = try ImageFile.read(path: dir + "/g.png")
        XCTAssertEqual([g.width, g.height], [128, 256])

        // Existing outputs are kept without --force, and nothing is written.
        try assertFails(["sample", Self.pipelineFixture, "--prompts", prompts, "--seed", "3,4,5", "--steps", "2", "-o", dir + "/m.png"],
                        saying: "m-p0-s3.png")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m-p0-s5.png"))
        XCTAssertEqual(try alter(["sample", Self.pipelineFixture, "--prompt", "x", "--steps", "2", "-o", one, "--force"]).status, 0)
    }

    func testSamplePromptRefusals() throws {
        let dir = try temporaryDirectory(self)
        let f = Self.pipelineFixture
        try assertFails(["sample", f, "--prompt", "x", "-o", dir + "/x.safetensors"], saying: "give a .png name")
        try assertFails(["sample", f, "--prompt", "x", "--context", Example.data, "-o", dir + "/x.png"], saying: "give one kind")
        try assertFails(["sample", f, "-o", dir + "/x.png"], saying: "--prompt, --prompts FILE or --context")
        try assertFails(["sample", f, "--prompt", "x", "--height", "60", "--width", "64", "-o", dir + "/x.png"], saying: "multiples of 8")
        try assertFails(["sample", f + "/../sd21-tiny-original.safetensors", "--prompt", "x", "-o", dir + "/x.png"], saying: "--tokenizer")
        let bad = dir + "/bad.jsonl"
        try Data("{\"prompt\": \"a\", \"negativ_prompt\": \"b\"}\n".utf8).write(to: URL(fileURLWithPath: bad))
        try assertFails(["sample", f, "--prompts", bad, "-o", dir + "/x.png"], saying: "bad.jsonl:1", "negativ_prompt")
        try assertFails(["sample", Example.model, "--context", Example.data, "--grid", "-o", dir + "/x.safetensors"], saying: "--grid applies")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".png") }, [])
    }

    /// The original single file with its tokenizer draws what the folder draws.
    func testSamplePromptFromASingleFile() throws {
        let dir = try temporaryDirectory(self)
        let folder = dir + "/f.png", single = dir + "/s.png"
        XCTAssertEqual(try alter(["sample", Self.pipelineFixture, "--prompt", "a cube", "--steps", "3", "--seed", "9", "-o", folder]).status, 0)
        let s = try alter(["sample", "Tests/Fixtures/pipeline/sd21-tiny-original.safetensors", "--config", Self.pipelineFixture + "/unet/config.json",
                           "--scheduler-config", Self.pipelineFixture + "/scheduler/scheduler_config.json",
                           "--tokenizer", Self.pipelineFixture + "/tokenizer", "--heads", "2", "--vae-config", Self.pipelineFixture + "/vae/config.json",
                           "--prompt", "a cube", "--steps", "3", "--seed", "9", "-o", single])
        XCTAssertEqual(s.status, 0, s.output)
        XCTAssertEqual(try ImageFile.read(path: folder), try ImageFile.read(path: single))
    }

    /// A bundle exported with --pipeline draws on its own with its experts; one without needs --pipeline.
    func testSamplePromptFromABundle() throws {
        let dir = try temporaryDirectory(self)
        let run = try Example.finishedRun(at: dir + "/run", steps: 3, hypernetSteps: 1) {
            $0.settings.experts = 2
            $0.settings.keep = 0.6
            $0.settings.warmupSteps = 1
        }
        let fixtures = "Tests/Fixtures/bundle-pipeline"
        let bundle = dir + "/p.alter", plain = dir + "/plain.alter"
        XCTAssertEqual(try alter(["export", run.path, "-o", bundle, "--pipeline", fixtures]).status, 0)
        XCTAssertEqual(try alter(["export", run.path, "-o", plain]).status, 0)
        let a = try alter(["sample", bundle, "--prompt", "a cube", "--steps", "3", "-o", dir + "/a.png", "--json"])
        XCTAssertEqual(a.status, 0, a.output)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(a.output.utf8)) as? [String: Any])
        XCTAssertEqual(report["is_bundle"] as? Bool, true)
        XCTAssertLessThan(try XCTUnwrap(report["kept_mac_fraction"] as? Double), 1)
        try assertFails(["sample", plain, "--prompt", "a cube", "--steps", "3", "-o", dir + "/b.png"], saying: "carries no tokenizer")
        let b = try alter(["sample", plain, "--pipeline", fixtures, "--prompt", "a cube", "--steps", "3", "-o", dir + "/b.png"])
        XCTAssertEqual(b.status, 0, b.output)
        XCTAssertEqual(try ImageFile.read(path: dir + "/a.png"), try ImageFile.read(path: dir + "/b.png"))
    }
}
