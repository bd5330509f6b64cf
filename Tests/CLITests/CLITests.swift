import ExampleSupport
import Foundation
import XCTest

/// The command line as a user meets it: arguments, exit statuses, messages and the output policy,
/// running the built `alter` executable.
final class CLITests: XCTestCase {
    /// The `alter` executable beside the test bundle.
    static var executable: URL {
        var dir = Bundle(for: CLITests.self).bundleURL
        while dir.pathExtension == "xctest" || dir.lastPathComponent.hasSuffix(".xctest") { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("alter")
    }

    struct Result {
        var status: Int32
        var output: String
    }

    /// Runs alter with `arguments` in the package root; stdout and stderr together.
    @discardableResult
    func alter(_ arguments: [String]) throws -> Result {
        let p = Process()
        p.executableURL = Self.executable
        p.arguments = arguments
        p.currentDirectoryURL = Example.root
        var env = ProcessInfo.processInfo.environment
        env["ALTER_KEEP_BLAS_CORE"] = "1"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    func assertFails(_ arguments: [String], saying words: String..., file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try alter(arguments)
        XCTAssertNotEqual(r.status, 0, "\(arguments) succeeded:\n\(r.output)", file: file, line: line)
        for w in words { XCTAssertTrue(r.output.contains(w), "\(arguments): no '\(w)' in:\n\(r.output)", file: file, line: line) }
    }

    var exampleModel: [String] { [Example.model, "--config", Example.config] }

    func testVersionAndUnknownOptions() throws {
        let v = try alter(["--version"])
        XCTAssertEqual(v.status, 0)
        XCTAssertTrue(v.output.hasPrefix("alter "), v.output)
        // A misspelt option is named as unknown, not reported as a missing one.
        try assertFails(["compress"] + exampleModel + ["--stepz", "3"], saying: "Unknown option '--stepz'")
        try assertFails(["sample", Example.model, "--context", Example.data, "--widht", "16", "--height", "16", "-o", "/tmp/x"],
                        saying: "Unknown option '--widht'")
    }

    /// `convert --pipeline`: what an original file cannot tell is asked for by flag; both directions run.
    func testConvertPipeline() throws {
        let dir = try temporaryDirectory(self)
        let f = "Tests/Fixtures/pipeline-convert/"
        let base = ["convert", "--pipeline", f + "original.safetensors", "-o", dir + "/pipe", "--config", f + "configs/unet/config.json",
                    "--text-encoder-config", f + "configs/text_encoder/config.json", "--vae-config", f + "configs/vae/config.json"]
        try assertFails(base + ["--prediction-type", "epsilon"], saying: "--tokenizer DIR", "--no-tokenizer")
        try assertFails(base + ["--tokenizer", "Tests/Fixtures/tokenizer/sd21-tokenizer"], saying: "--prediction-type")
        try assertFails(["convert", f + "original.safetensors", "-o", dir + "/x", "--tokenizer", "t"], saying: "apply with --pipeline")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/pipe"))
        let r = try alter(base + ["--tokenizer", "Tests/Fixtures/tokenizer/sd21-tokenizer", "--prediction-type", "epsilon", "--json"])
        XCTAssertEqual(r.status, 0, r.output)
        let o = try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any]
        XCTAssertEqual(o?["prediction_type"] as? String, "epsilon")
        XCTAssertEqual(o?["tensor_count"] as? Int, 844)
        let back = try alter(["convert", "--pipeline", dir + "/pipe", "-o", dir + "/back.safetensors", "--dtype", "fp16"])
        XCTAssertEqual(back.status, 0, back.output)
        XCTAssertTrue(back.output.contains("added: 12 tensors: an all-zero last resblock"), back.output)
        try assertFails(["convert", "--pipeline", dir + "/pipe", "-o", dir + "/y.safetensors", "--prediction-type", "epsilon"],
                        saying: "an original file stores neither")
    }

    /// Settings a run cannot use are refused before anything is written, naming the flag.
    func testCompressRefusesBadSettingsByFlag() throws {
        let out = try temporaryDirectory(self) + "/run"
        let base = ["compress"] + exampleModel + ["--data", Example.data, "--steps", "10", "-o", out]
        for (extra, words) in [(["--lr-unet", "nan"], "--lr-unet must be a finite number"), (["--lr-hypernet", "inf"], "--lr-hypernet must be a finite number"),
                               (["--ratio-weight", "-5"], "--ratio-weight must not be negative"), (["--warmup", "100"], "--warmup is 100, longer than the run (--steps 10)"),
                               (["--experts", "0"], "--experts must be at least 1"), (["--hypernet-steps", "20"], "--hypernet-steps must be between 0 and --steps"),
                               (["--batch", "64"], "--batch is 64, more than the 32 samples"), (["--keep", "1.5"], "--keep must be in (0, 1]")] {
            try assertFails(base + extra, saying: words)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(extra) left a run directory")
        }
    }

    /// The output policy from the command line: no overwrite without --force, never an input, only
    /// the same kind; every refusal leaves the files as they were.
    func testOutputPolicy() throws {
        let dir = try temporaryDirectory(self)
        let inputs = dir + "/in.safetensors"
        try FileManager.default.copyItem(atPath: Example.inputs, toPath: inputs)
        let before = try Data(contentsOf: URL(fileURLWithPath: inputs))
        let forward = ["forward"] + exampleModel + ["--inputs", inputs, "-o"]
        try assertFails(forward + [inputs, "--force"], saying: "an input of this command")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: inputs)), before)
        XCTAssertEqual(try alter(forward + [dir + "/new/dir/out.safetensors"]).status, 0, "parents are created")
        try assertFails(forward + [dir + "/new/dir/out.safetensors"], saying: "already exists", "--force")
        XCTAssertEqual(try alter(forward + [dir + "/new/dir/out.safetensors", "--force"]).status, 0)
        try assertFails(forward + [dir + "/new", "--force"], saying: "is not a file")

        let model = dir + "/model.safetensors"
        try FileManager.default.copyItem(atPath: Example.model, toPath: model)
        try assertFails(["convert", model, "--config", Example.config, "-o", model, "--layout", "original", "--force"], saying: "an input of this command")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: model)), try Data(contentsOf: URL(fileURLWithPath: Example.model)))
    }

    /// `compress` ends with the budget projection (distances before and after, the warning when the
    /// hypernetwork phase hardly moved the decisions) and the routing table's segments; `inspect`
    /// of the exported bundle counts the segments in text and JSON.
    func testCompressReportsTheProjectionAndInspectTheSegments() throws {
        let dir = try temporaryDirectory(self)
        let r = try alter(["compress"] + exampleModel + ["--data", Example.data, "--steps", "2", "--hypernet-steps", "1", "--keep", "0.5",
                                                         "--experts", "3", "--batch", "2", "-o", dir + "/run"])
        XCTAssertEqual(r.status, 0, r.output)
        for words in ["budget: the learned decisions kept 1.0000 (distance 0.5000 from --keep 0.500); projected onto the budget: 0.",
                      "warning: the hypernetwork phase hardly moved the decisions: it went 0% of the way",
                      "routing: ", "contiguous timestep segments (per expert "] {
            XCTAssertTrue(r.output.contains(words), "no '\(words)' in:\n\(r.output)")
        }
        let bundle = dir + "/b.alter"
        XCTAssertEqual(try alter(["export", dir + "/run", "-o", bundle]).status, 0)
        let text = try alter(["inspect", bundle])
        XCTAssertTrue(text.output.contains("contiguous timestep segments (per expert "), text.output)
        let json = try alter(["inspect", bundle, "--json"])
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
        let experts = try XCTUnwrap(object["experts"] as? [[String: Any]])
        let perExpert = experts.compactMap { $0["routing_segment_count"] as? Int }
        XCTAssertEqual(perExpert.count, 3)
        XCTAssertEqual(object["routing_segment_count"] as? Int, perExpert.reduce(0, +))
        XCTAssertTrue(text.output.contains("  routing:     \(perExpert.reduce(0, +)) contiguous timestep segments (per expert "
                                           + perExpert.map(String.init).joined(separator: "/") + ")"), text.output)

        // verify --keep holds the bundle to the run's promise.
        let ok = try alter(["verify", bundle, "--keep", "0.5"])
        XCTAssertEqual(ok.status, 0, ok.output)
        XCTAssertTrue(ok.output.contains("within 0.01 of --keep 0.500"), ok.output)
        try assertFails(["verify", bundle, "--keep", "0.6"], saying: "more than 0.01 from --keep 0.600")
        try assertFails(["verify", bundle, "--keep", "1.5"], saying: "--keep must be in (0, 1]")
    }

    /// Export never replaces its run or another kind of directory; sample never its context.
    func testExportAndSampleOutputs() throws {
        let dir = try temporaryDirectory(self)
        let run = try Example.finishedRun(at: dir + "/run", steps: 6, hypernetSteps: 3) {
            $0.settings.experts = 2
            $0.settings.keep = 0.7
            $0.settings.warmupSteps = 1
        }
        try assertFails(["export", run.path, "-o", run.path, "--force"], saying: "an input of this command")
        try assertFails(["export", run.path, "-o", dir, "--force"], saying: "an input of this command")
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.decisionsPath))
        let bundle = dir + "/b.alter"
        XCTAssertEqual(try alter(["export", run.path, "-o", bundle]).status, 0)
        try assertFails(["export", run.path, "-o", bundle], saying: "already exists", "--force")
        XCTAssertEqual(try alter(["export", run.path, "-o", bundle, "--force"]).status, 0)
        try FileManager.default.createDirectory(atPath: dir + "/plain", withIntermediateDirectories: false)
        try assertFails(["export", run.path, "-o", dir + "/plain", "--force"], saying: "is not a bundle")

        let context = dir + "/ctx.safetensors"
        try FileManager.default.copyItem(atPath: Example.data, toPath: context)
        let sample = ["sample", bundle, "--context", context, "--rows", "0", "--steps", "2"]
        try assertFails(sample + ["-o", context, "--force"], saying: "an input of this command")
        try assertFails(sample + ["--scheduler", "ddim:3", "--steps", "5", "-o", dir + "/l.safetensors"], saying: "give one")
        try assertFails(sample + ["--uncond", dir + "/missing.safetensors", "-o", dir + "/l.safetensors"], saying: "missing.safetensors: cannot open")
        let ok = try alter(sample + ["-o", dir + "/l.safetensors", "--json"])
        XCTAssertEqual(ok.status, 0, ok.output)
        try assertFails(["forward", bundle, "--expert", "99", "--inputs", Example.inputs, "-o", dir + "/f.safetensors"],
                        saying: "--expert 99 does not exist", "0..<2")
        let verify = try alter(["verify", bundle, "--json"])
        XCTAssertEqual(verify.status, 0, verify.output)
        XCTAssertTrue(verify.output.contains("\"passed\" : true"), verify.output)
    }

    /// `export --pipeline` carries the tokenizer, text encoder and VAE; `inspect`, `verify` and
    /// `diff` show them; flags that only --pipeline uses, and a single file without --tokenizer, are refused.
    func testExportWithPipelineComponents() throws {
        let dir = try temporaryDirectory(self)
        let run = try Example.finishedRun(at: dir + "/run", steps: 3, hypernetSteps: 1) {
            $0.settings.experts = 2
            $0.settings.keep = 0.8
            $0.settings.warmupSteps = 1
        }
        let fixtures = Example.root.appendingPathComponent("Tests/Fixtures/bundle-pipeline").path
        let bundle = dir + "/p.alter", plain = dir + "/plain.alter"
        try assertFails(["export", run.path, "-o", bundle, "--tokenizer", fixtures + "/tokenizer"], saying: "used by --pipeline")
        try assertFails(["export", run.path, "-o", bundle, "--pipeline", fixtures + "/original.safetensors"], saying: "--tokenizer DIR")
        try assertFails(["export", run.path, "-o", bundle, "--pipeline", fixtures + "/original.safetensors", "--tokenizer", fixtures],
                        saying: "pass --heads")
        XCTAssertFalse(FileManager.default.fileExists(atPath: bundle))
        let export = try alter(["export", run.path, "-o", bundle, "--pipeline", fixtures, "--dtype", "fp16"])
        XCTAssertEqual(export.status, 0, export.output)
        XCTAssertEqual(try alter(["export", run.path, "-o", plain]).status, 0)
        let inspect = try alter(["inspect", bundle])
        XCTAssertEqual(inspect.status, 0, inspect.output)
        XCTAssertTrue(inspect.output.contains("components:  tokenizer 1002 ids"), inspect.output)
        XCTAssertTrue(inspect.output.contains("text encoder 32 wide") && inspect.output.contains("F16"), inspect.output)
        let verify = try alter(["verify", bundle])
        XCTAssertEqual(verify.status, 0, verify.output)
        XCTAssertTrue(verify.output.contains("ok   components: tokenizer, text encoder"), verify.output)
        let diff = try alter(["diff", bundle, plain])
        XCTAssertEqual(diff.status, 0, diff.output)
        XCTAssertTrue(diff.output.contains("text_encoder: only in A") && diff.output.contains("vae: only in A"), diff.output)
        try FileManager.default.removeItem(atPath: bundle + "/tokenizer/merges.txt")
        let broken = try alter(["verify", bundle])
        XCTAssertEqual(broken.status, 1, broken.output)
        XCTAssertTrue(broken.output.contains("FAIL components: ") && broken.output.contains("merges.txt"), broken.output)
    }

    /// SIGTERM stops a run after its step with a checkpoint and exit status 143; a run killed before
    /// its first checkpoint restarts at step 0 on --resume; a second process on the same run is
    /// refused while the first holds it.
    func testSignalsAndRunsWithoutACheckpoint() throws {
        let dir = try temporaryDirectory(self)
        /// Starts alter with its output going to the file `log` (read while it runs).
        func start(_ arguments: [String], log: String) throws -> Process {
            FileManager.default.createFile(atPath: log, contents: nil)
            let out = try XCTUnwrap(FileHandle(forWritingAtPath: log))
            let p = Process()
            p.executableURL = Self.executable
            p.arguments = arguments
            p.currentDirectoryURL = Example.root
            p.standardOutput = out
            p.standardError = out
            try p.run()
            return p
        }
        func read(_ log: String) -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        /// Waits (up to a minute) until the log holds `words`.
        func wait(for words: String, in log: String) {
            let deadline = Date().addingTimeInterval(60)
            while !read(log).contains(words), Date() < deadline { usleep(50_000) }
        }
        let long = ["compress"] + exampleModel + ["--data", Example.data, "--steps", "100000", "--batch", "2"]

        // SIGTERM during a run: a checkpoint after the current step, exit status 143. The step line
        // is written after the signal handlers are installed.
        let a = dir + "/a"
        let p = try start(long + ["-o", a], log: dir + "/a.log")
        wait(for: "1/100000", in: dir + "/a.log")
        try assertFails(["compress", "--resume", a], saying: "another alter process is writing it")
        p.terminate()
        p.waitUntilExit()
        let text = read(dir + "/a.log")
        XCTAssertEqual(p.terminationStatus, 143, text)
        XCTAssertTrue(text.contains("SIGTERM: stopping after this step") && text.contains("checkpoint written"), text)
        XCTAssertTrue(FileManager.default.fileExists(atPath: a + "/checkpoint/state.json"))

        // Killed before its first checkpoint: --resume starts the run again from step 0.
        let b = dir + "/b"
        let q = try start(long + ["-o", b], log: dir + "/b.log")
        wait(for: "1/100000", in: dir + "/b.log")
        kill(q.processIdentifier, SIGKILL)
        q.waitUntilExit()
        XCTAssertFalse(FileManager.default.fileExists(atPath: b + "/checkpoint/state.json"))
        let r = try start(["compress", "--resume", b], log: dir + "/r.log")
        wait(for: "1/100000", in: dir + "/r.log")
        r.terminate()
        r.waitUntilExit()
        let rtext = read(dir + "/r.log")
        XCTAssertTrue(rtext.contains("has no checkpoint yet") && rtext.contains("starting it again from step 0"), rtext)
        XCTAssertEqual(r.terminationStatus, 143, rtext)
    }

    /// A tokenizer folder of the 512 byte symbols (GPT-2's byte table) and start/end tokens 512 and
    /// 513, no merges: ids within the text encoder fixture's vocabulary of 520.
    func writeByteTokenizer(_ dir: String) throws {
        var bytes = Array(33...126) + Array(161...172) + Array(174...255)
        var symbols = bytes.map { Character(Unicode.Scalar(UInt32($0))!) }
        var n = 0
        for b in 0..<256 where !bytes.contains(b) {
            bytes.append(b)
            symbols.append(Character(Unicode.Scalar(UInt32(256 + n))!))
            n += 1
        }
        let tokens = symbols.map { String($0) } + symbols.map { String($0) + "</w>" } + ["<|startoftext|>", "<|endoftext|>"]
        let vocab = Dictionary(uniqueKeysWithValues: tokens.enumerated().map { ($1, $0) })
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: vocab).write(to: URL(fileURLWithPath: dir + "/vocab.json"))
        try "#version: 0.2\n".write(toFile: dir + "/merges.txt", atomically: true, encoding: .utf8)
        try #"{"pad_token": "!", "model_max_length": 77}"#.write(toFile: dir + "/tokenizer_config.json", atomically: true, encoding: .utf8)
    }

    /// `alter encode-prompt` on the text encoder fixtures: both layouts give the same context; the
    /// output policy; the flags that a failure names.
    func testEncodePrompt() throws {
        let dir = try temporaryDirectory(self)
        try writeByteTokenizer(dir + "/tok")
        let folder = "Tests/Fixtures/text-encoder/diffusers", original = "Tests/Fixtures/text-encoder/original.safetensors"
        let a = try alter(["encode-prompt", folder, "--tokenizer", dir + "/tok", "--prompt", "a cat", "-o", dir + "/a.safetensors", "--json"])
        XCTAssertEqual(a.status, 0, a.output)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(a.output.utf8)) as? [String: Any])
        XCTAssertEqual(report["shape"] as? [Int], [1, 77, 32])
        // "a" -> "a</w>" (256 + 64); "cat" -> "c", "a", "t</w>" (66, 64, 256 + 83); padding "!" (0).
        XCTAssertEqual(report["input_ids"] as? [Int], [512, 320, 66, 64, 339, 513] + Array(repeating: 0, count: 71))
        XCTAssertEqual(report["token_count"] as? Int, 6)
        try GoldenKeys.check(json: Data(a.output.utf8), name: "encode-prompt")

        try assertFails(["encode-prompt", folder, "--tokenizer", dir + "/tok", "--prompt", "a cat", "-o", dir + "/a.safetensors"], saying: "--force")
        try assertFails(["encode-prompt", original, "--tokenizer", dir + "/tok", "--prompt", "a cat", "-o", dir + "/b.safetensors"], saying: "--heads")
        try assertFails(["encode-prompt", folder, "--prompt", "a cat", "-o", dir + "/c.safetensors"], saying: "--tokenizer")
        try assertFails(["encode-prompt", folder, "--tokenizer", "Tests/Fixtures/tokenizer/sd21-tokenizer", "--prompt", "a cat", "-o", dir + "/c.safetensors"],
                        saying: "49406", "outside the vocabulary")
        let b = try alter(["encode-prompt", original, "--heads", "2", "--tokenizer", dir + "/tok", "--prompt", "a cat", "-o", dir + "/b.safetensors"])
        XCTAssertEqual(b.status, 0, b.output)
        XCTAssertTrue(b.output.contains("assumed: num_hidden_layers = 3"), b.output)
        // Same weights in the two layouts: the same bytes of `context` (the headers differ in metadata only).
        let fa = try Data(contentsOf: URL(fileURLWithPath: dir + "/a.safetensors")), fb = try Data(contentsOf: URL(fileURLWithPath: dir + "/b.safetensors"))
        XCTAssertEqual(fa.suffix(77 * 32 * 4), fb.suffix(77 * 32 * 4))
        XCTAssertNotEqual(fa.suffix(77 * 32 * 4), Data(count: 77 * 32 * 4))
    }

    /// `alter encode-data` on the encode-data fixtures with the tiny pipeline: the --json report,
    /// the output policy, bad captions named by flag; `alter compress` trains 2 steps on the file;
    /// a bundle exported with --pipeline gives the same file.
    func testEncodeDataThenCompress() throws {
        let dir = try temporaryDirectory(self)
        let pipeline = "Tests/Fixtures/pipeline/sd21-tiny", f = "Tests/Fixtures/encode-data/"
        let data = dir + "/data.safetensors"
        let args = ["encode-data", pipeline, "--images", f + "images", "--captions", f + "captions.csv", "--size", "64"]
        let r = try alter(args + ["-o", data, "--dtype", "fp32"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("4 samples; latents [4, 4, 8, 8], context [4, 77, 16], uncond [77, 16], F32, latents: mean"), r.output)
        XCTAssertTrue(r.output.contains("1 captions cut to 77 tokens"), r.output)
        try assertFails(args + ["-o", data], saying: "--force")
        try assertFails(args + ["-o", dir + "/x.safetensors", "--seed", "3"], saying: "--seed applies only with --sample")
        try assertFails(args + ["-o", dir + "/x.safetensors", "--batch", "0"], saying: "batch 0")
        try assertFails(["encode-data", pipeline, "--images", f + "images", "--captions", f + "captions.jsonl", "--size", "64", "-o", dir + "/x.safetensors",
                         "--tokenizer", pipeline + "/tokenizer"], saying: "only with an original single file")
        try assertFails(["encode-data", "Tests/Fixtures/pipeline/sd21-tiny-original.safetensors", "--images", f + "images", "--captions", f + "captions.csv",
                         "-o", dir + "/x.safetensors"], saying: "--tokenizer")
        try "file,text\nwide.png,x\n".write(toFile: dir + "/few.csv", atomically: true, encoding: .utf8)
        try assertFails(["encode-data", pipeline, "--images", f + "images", "--captions", dir + "/few.csv", "--size", "64", "-o", dir + "/x.safetensors"],
                        saying: "tall.png: no caption", "--skip-bad")
        let skipped = try alter(["encode-data", pipeline, "--images", f + "images", "--captions", dir + "/few.csv", "--size", "64", "-o", dir + "/few.safetensors",
                                 "--skip-bad", "--sample", "--seed", "3", "--json"])
        XCTAssertEqual(skipped.status, 0, skipped.output)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(skipped.output.utf8)) as? [String: Any])
        XCTAssertEqual(report["sample_count"] as? Int, 1)
        XCTAssertEqual(report["latents_shape"] as? [Int], [1, 4, 8, 8])
        XCTAssertEqual(report["dtype"] as? String, "F16")
        XCTAssertEqual(report["seed"] as? Int, 3)
        XCTAssertEqual((report["skipped"] as? [[String: String]])?.map { $0["file"] ?? "" }, ["photo.jpg", "square.png", "tall.png"])
        try GoldenKeys.check(json: Data(skipped.output.utf8), name: "encode-data", opaque: ["sources"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.safetensors"))

        let run = dir + "/run"
        let c = try alter(["compress", pipeline, "--data", data, "--steps", "2", "--hypernet-steps", "1", "--experts", "2", "--batch", "2", "-o", run])
        XCTAssertEqual(c.status, 0, c.output)
        let bundle = dir + "/b.alter"
        let e = try alter(["export", run, "-o", bundle, "--pipeline", pipeline, "--dtype", "fp32"])
        XCTAssertEqual(e.status, 0, e.output)
        let fromBundle = dir + "/bundle.safetensors"
        let b = try alter(["encode-data", bundle, "--images", f + "images", "--captions", f + "captions.csv", "--size", "64", "--dtype", "fp32", "-o", fromBundle])
        XCTAssertEqual(b.status, 0, b.output)
        // The same tensors; the metadata names another source.
        let x = try Data(contentsOf: URL(fileURLWithPath: data)), y = try Data(contentsOf: URL(fileURLWithPath: fromBundle))
        let tensorBytes = 4 * 77 * 16 * 4 + 4 * 77 * 4 + 4 * 4 * 8 * 8 * 4 + 77 * 16 * 4
        XCTAssertEqual(x.suffix(tensorBytes), y.suffix(tensorBytes))
    }
}
