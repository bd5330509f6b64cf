import Foundation
import NN
import SafeTensors
import TensorCore
import ExampleSupport
import XCTest
@testable import StableDiffusion

/// The CLIP text encoder against transformers' CLIPTextModel (float64 reference,
/// Tests/Fixtures/text-encoder, scripts/make_text_encoder_fixtures.py), from the diffusers folder,
/// a pipeline and the original SD2.x layout; strict loading of both layouts.
final class CLIPTextEncoderTests: XCTestCase {
    static var folder: String { Fixtures.path("text-encoder/diffusers") }
    static var original: String { Fixtures.path("text-encoder/original.safetensors") }
    static var quickConfig: String { Fixtures.path("text-encoder/config-quick-gelu.json") }
    static var folderConfig: String { Fixtures.path("text-encoder/diffusers/config.json") }

    static func expected() throws -> (ids: [[Int]], outputs: [String: Tensor]) {
        let f = try SafeTensorsFile(path: Fixtures.path("text-encoder/expected.safetensors"))
        let info = try f.require("input_ids")
        XCTAssertEqual(info.dtype, .i64)
        let raw = f.rawBytes(info)
        let flat = (0..<info.elementCount).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        let (b, s) = (info.shape[0], info.shape[1])
        let ids = (0..<b).map { Array(flat[($0 * s)..<(($0 + 1) * s)]) }
        var outputs: [String: Tensor] = [:]
        for act in CLIPActivation.allCases {
            let name = "last_hidden_state." + act.rawValue
            let i = try f.require(name)
            outputs[act.rawValue] = Tensor(shape: i.shape, values: try f.floats(name))
        }
        return (ids, outputs)
    }

    func expectTextError(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Any) -> CLIPTextEncoderError? {
        expectError(CLIPTextEncoderError.self, what, file: file, line: line, body)
    }

    func strictReport(_ what: String, _ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> LoadReport? {
        guard let e = expectTextError(what, file: file, line: line, body) else { return nil }
        guard case .checkpoint(.strictLoad(let r)) = e else {
            XCTFail("\(what): expected a strict-load error, got \(e)", file: file, line: line)
            return nil
        }
        XCTAssertEqual(r.component, .textEncoder, file: file, line: line)
        return r
    }

    // MARK: parity

    func testDiffusersFolderParity() throws {
        let (ids, outputs) = try Self.expected()
        let ckpt = try CLIPTextCheckpoint(path: Self.folder)
        XCTAssertEqual(ckpt.kind, .transformersFolder)
        XCTAssertEqual(ckpt.layout, .diffusers)
        XCTAssertEqual(ckpt.report.mapped, CLIPTextKeys.parameters(ckpt.config).count)
        XCTAssertTrue(ckpt.assumptions.isEmpty)
        var c = CLIPTextConfig()
        (c.vocabSize, c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads) = (520, 32, 64, 3, 2)
        XCTAssertEqual(ckpt.config, c)
        let out = try ckpt.encoder().encode(ids)
        XCTAssertEqual(out.shape, [4, 77, 32])
        assertParity(out, try XCTUnwrap(outputs["gelu"]), "diffusers layout, gelu")
    }

    func testQuickGELUParity() throws {
        let (ids, outputs) = try Self.expected()
        var o = CLIPTextLoadOptions()
        o.configPath = Self.quickConfig
        let ckpt = try CLIPTextCheckpoint(path: Self.folder, options: o)
        XCTAssertEqual(ckpt.config.hiddenAct, .quickGELU)
        assertParity(try ckpt.encoder().encode(ids), try XCTUnwrap(outputs["quick_gelu"]), "diffusers layout, quick_gelu")
    }

    func testOriginalLayoutParity() throws {
        let (ids, outputs) = try Self.expected()
        var o = CLIPTextLoadOptions()
        o.configPath = Self.folderConfig
        let ckpt = try CLIPTextCheckpoint(path: Self.original, options: o)
        XCTAssertEqual(ckpt.kind, .originalSingleFile)
        XCTAssertEqual(ckpt.layout, .original)
        XCTAssertTrue(ckpt.report.unused.isEmpty)
        assertParity(try ckpt.encoder().encode(ids), try XCTUnwrap(outputs["gelu"]), "original layout, gelu")
    }

    func testOriginalLayoutInferredConfig() throws {
        let (ids, outputs) = try Self.expected()
        var o = CLIPTextLoadOptions()
        o.heads = 2
        let ckpt = try CLIPTextCheckpoint(path: Self.original, options: o)
        let fromJSON = try CLIPTextConfig(transformersJSON: Data(contentsOf: URL(fileURLWithPath: Self.folderConfig)), source: Self.folderConfig)
        XCTAssertEqual(ckpt.config, fromJSON)
        XCTAssertNil(ckpt.configFile)
        XCTAssertTrue(ckpt.assumptions.contains { $0.hasPrefix("num_hidden_layers = 3: the penultimate of 4 resblocks") }, "\(ckpt.assumptions)")
        XCTAssertTrue(ckpt.assumptions.contains { $0.hasPrefix("hidden_act = gelu") })
        assertParity(try ckpt.encoder().encode(ids), try XCTUnwrap(outputs["gelu"]), "original layout, inferred config")

        // Without heads, width 32 is no multiple of OpenCLIP's head width 64.
        let e = expectTextError("inferred heads") { try CLIPTextCheckpoint(path: Self.original) }
        guard case .cannotInfer(let f, let why)? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(f, Self.original)
        XCTAssertTrue(why.contains("64"), why)
    }

    /// A copy of `source` without the tensors in `drop` and with those in `zero` written as zeros.
    func rewrittenCopy(_ source: String, to path: String, drop: Set<String>, zero: Set<String> = []) throws {
        let src = try SafeTensorsFile(path: source)
        let specs = src.tensors.filter { !drop.contains($0.name) }.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let w = try SafeTensorsWriter(path: path, tensors: specs, metadata: ["format": "pt"])
        while let spec = w.nextSpec {
            if zero.contains(spec.name) {
                try [UInt8](repeating: 0, count: spec.byteCount).withUnsafeBytes { try w.write(spec.name, bytes: $0) }
            } else {
                try w.write(spec.name, bytes: src.rawBytes(try src.require(spec.name)))
            }
        }
        try w.finish()
    }

    /// Files written from a transformers CLIPTextModel have no text_projection: diffusers'
    /// convert_diffusers_to_original_stable_diffusion.py stores only the layers SD2.x uses (all
    /// of them are read), a converter that pads with an all-zero last resblock (alter's) keeps
    /// the penultimate rule.
    func testOriginalLayoutWithoutTextProjection() throws {
        let (ids, outputs) = try Self.expected()
        let last = OriginalCLIPTextKeys.resblocks + "3."
        let top = OriginalCLIPTextKeys.unusedTop  // text_projection, logit_scale
        let lastBlock = Set(try SafeTensorsFile(path: Self.original).tensors.map(\.name).filter { $0.hasPrefix(last) })
        XCTAssertEqual(lastBlock.count, 12)
        var o = CLIPTextLoadOptions()
        o.heads = 2
        let tmp = try TemporaryDirectory()

        // diffusers' converter: resblocks 0..2 only, no projection -> 3 layers, all read.
        try rewrittenCopy(Self.original, to: tmp.path("diffusers-converted.safetensors"), drop: top.union(lastBlock))
        let converted = try CLIPTextCheckpoint(path: tmp.path("diffusers-converted.safetensors"), options: o)
        XCTAssertEqual(converted.config.numHiddenLayers, 3)
        XCTAssertTrue(converted.report.unused.isEmpty)
        XCTAssertTrue(converted.assumptions.contains { $0.hasPrefix("num_hidden_layers = 3: every one of 3 resblocks (no text_projection") },
                      "\(converted.assumptions)")
        assertParity(try converted.encoder().encode(ids), try XCTUnwrap(outputs["gelu"]), "diffusers-converted original file")

        // A padded file: resblock 3's output projections all zero -> 3 layers, resblock 3 unused.
        let writers = Set(OriginalCLIPTextKeys.residualWriters.map { last + $0 })
        try rewrittenCopy(Self.original, to: tmp.path("padded.safetensors"), drop: top, zero: writers)
        let padded = try CLIPTextCheckpoint(path: tmp.path("padded.safetensors"), options: o)
        XCTAssertEqual(padded.config.numHiddenLayers, 3)
        XCTAssertTrue(padded.report.unused.isEmpty)  // resblock 3 is on the allow-list of unused tensors
        XCTAssertTrue(padded.assumptions.contains { $0.hasPrefix("num_hidden_layers = 3: resblock 3 is all zeros") }, "\(padded.assumptions)")
        assertParity(try padded.encoder().encode(ids), try XCTUnwrap(outputs["gelu"]), "zero-padded original file")

        // Only one writer zero: not the identity, so all 4 resblocks are layers.
        try rewrittenCopy(Self.original, to: tmp.path("four.safetensors"), drop: top, zero: [last + "mlp.c_proj.weight"])
        XCTAssertEqual(try CLIPTextCheckpoint(path: tmp.path("four.safetensors"), options: o).config.numHiddenLayers, 4)
    }

    func testPipelineFolder() throws {
        let (ids, outputs) = try Self.expected()
        let tmp = try TemporaryDirectory()
        let fm = FileManager.default
        try fm.createDirectory(atPath: tmp.path("text_encoder"), withIntermediateDirectories: true)
        for f in ["config.json", "model.safetensors"] {
            try fm.copyItem(atPath: Self.folder + "/" + f, toPath: tmp.path("text_encoder/" + f))
        }
        try Data(#"{"_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"]}"#.utf8)
            .write(to: URL(fileURLWithPath: tmp.path("model_index.json")))
        let ckpt = try CLIPTextCheckpoint(path: tmp.path)
        XCTAssertEqual(ckpt.kind, .diffusersPipeline)
        XCTAssertEqual(ckpt.configFile, tmp.path("text_encoder/config.json"))
        assertParity(try ckpt.encoder().encode(ids), try XCTUnwrap(outputs["gelu"]), "pipeline folder")
    }

    func testFolderVariants() throws {
        let (ids, outputs) = try Self.expected()
        let fm = FileManager.default
        do {
            // Only an fp16 variant: found without a variant and with --variant fp16.
            let tmp = try TemporaryDirectory()
            try fm.copyItem(atPath: Self.folderConfig, toPath: tmp.path("config.json"))
            try fm.copyItem(atPath: Self.folder + "/model.safetensors", toPath: tmp.path("model.fp16.safetensors"))
            var o = CLIPTextLoadOptions()
            XCTAssertEqual(try CLIPTextCheckpoint(path: tmp.path, options: o).store.files.map(\.path), [tmp.path("model.fp16.safetensors")])
            o.variant = "fp16"
            assertParity(try CLIPTextCheckpoint(path: tmp.path, options: o).encoder().encode(ids), try XCTUnwrap(outputs["gelu"]), "fp16 variant name")
            o.variant = "bf16"
            guard case .checkpoint(.notFound(let p))? = expectTextError("bf16", { try CLIPTextCheckpoint(path: tmp.path, options: o) }) else { return XCTFail() }
            XCTAssertTrue(p.hasSuffix("model.bf16.safetensors"), p)
        }
        do {
            // Sharded: an index naming one shard.
            let tmp = try TemporaryDirectory()
            try fm.copyItem(atPath: Self.folderConfig, toPath: tmp.path("config.json"))
            try fm.copyItem(atPath: Self.folder + "/model.safetensors", toPath: tmp.path("model-00001-of-00001.safetensors"))
            let names = try SafeTensorsFile(path: Self.folder + "/model.safetensors").names
            let map = Dictionary(uniqueKeysWithValues: names.map { ($0, "model-00001-of-00001.safetensors") })
            try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map]).write(to: URL(fileURLWithPath: tmp.path("model.safetensors.index.json")))
            assertParity(try CLIPTextCheckpoint(path: tmp.path).encoder().encode(ids), try XCTUnwrap(outputs["gelu"]), "sharded folder")
        }
        do {
            // Pickle weights are refused, naming the file.
            let tmp = try TemporaryDirectory()
            try fm.copyItem(atPath: Self.folderConfig, toPath: tmp.path("config.json"))
            try Data([0x80]).write(to: URL(fileURLWithPath: tmp.path("pytorch_model.bin")))
            guard case .checkpoint(.unsupportedFormat(let f, _))? = expectTextError("bin", { try CLIPTextCheckpoint(path: tmp.path) }) else { return XCTFail() }
            XCTAssertEqual(f, tmp.path("pytorch_model.bin"))
        }
        // An SD1.x single file: its text encoder is named and refused.
        let sd1 = Fixtures.sd1Original
        guard case .checkpoint(.unrecognisedLayout(let f, let why))? = expectTextError("sd1", { try CLIPTextCheckpoint(path: sd1) }) else { return XCTFail() }
        XCTAssertEqual(f, sd1)
        XCTAssertTrue(why.contains("SD1.x"), why)
    }

    /// The encoder reads exactly the parameters the key table lists, in its order.
    func testParameterListMatchesEncoder() throws {
        var c = CLIPTextConfig()
        (c.vocabSize, c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads, c.maxPositionEmbeddings) = (50, 16, 24, 2, 4, 10)
        let enc = try CLIPTextEncoder(config: c, parameters: RandomParameters(seed: 1))
        let listed = CLIPTextKeys.parameters(c)
        XCTAssertEqual(Set(enc.parameters.map(\.name)), Set(listed.map(\.name)))
        XCTAssertEqual(enc.parameters.count, listed.count)
        for (p, l) in zip(enc.parameters.sorted { $0.name < $1.name }, listed.sorted { $0.name < $1.name }) {
            XCTAssertEqual(p.value.shape, l.shape, p.name)
        }
        XCTAssertEqual(CLIPTextKeys.parameters(.sd21).count, 2 + 23 * 16 + 2)
        let map = CLIPTextKeyMap(config: c, layout: .original)
        XCTAssertEqual(map.entries.filter { $0.part != nil }.count, 2 * 6)
        XCTAssertEqual(Set(map.entries.map(\.stored)).count, listed.count - 2 * 4)
    }

    func testCausalMaskAndPositions() throws {
        // The output at position i depends only on tokens 0...i.
        let ckpt = try CLIPTextCheckpoint(path: Self.folder)
        let enc = try ckpt.encoder()
        let a = try enc.encode([[5, 6, 7, 8, 9]]), b = try enc.encode([[5, 6, 7, 100, 200]])
        let d = 32
        for i in 0..<(3 * d) { XCTAssertEqual(a.data[i], b.data[i], "position \(i / d)") }
        XCTAssertNotEqual(a.data[3 * d], b.data[3 * d])
    }

    func testInvalidInput() throws {
        let enc = try CLIPTextCheckpoint(path: Self.folder).encoder()
        for (ids, needle) in [([[Int]](), "no token rows"), ([[1, 520]], "520"), ([[1, -1]], "-1"), ([[1, 2], [3]], "row 1"),
                              ([Array(repeating: 1, count: 78)], "78")] {
            let e = expectTextError("\(ids)") { try enc.encode(ids) }
            guard case .invalidInput(let why)? = e else { XCTFail("\(String(describing: e))"); continue }
            XCTAssertTrue(why.contains(needle), why)
        }
    }

    /// `alter encode-prompt --json`'s keys (formats/cli-json.md).
    func testPromptEncodingReportKeys() throws {
        let ckpt = try CLIPTextCheckpoint(path: Self.folder)
        let t = CLIPTokenization(inputIds: [1, 2, 0], attentionMask: [1, 1, 0], length: 2, untruncatedLength: 2)
        let report = PromptEncodingReport(checkpoint: ckpt, tokenizerSource: "tok", prompt: "p", tokenization: t, output: "o.safetensors",
                                          shape: [1, 3, 32], loadSeconds: 0.5, encodeSeconds: 0.25)
        try GoldenKeys.check(report, name: "encode-prompt")
        // A context file holds `context` as F32.
        let tmp = try TemporaryDirectory()
        let context = Tensor(shape: [1, 2, 3], values: [1, 2, 3, 4, 5, 6])
        try PromptEncodingReport.writeContext(context, to: tmp.path("c.safetensors"), metadata: ["prompt": "p"])
        let f = try SafeTensorsFile(path: tmp.path("c.safetensors"))
        XCTAssertEqual(f.names, ["context"])
        XCTAssertEqual(try f.floats("context"), context.scalars)
        XCTAssertEqual(f.metadata?["prompt"], "p")
    }

    // MARK: config

    func testConfigJSON() throws {
        func parse(_ json: String) -> CLIPTextEncoderError? {
            expectTextError(json) { try CLIPTextConfig(transformersJSON: Data(json.utf8), source: "cfg.json") }
        }
        guard case .unsupportedActivation(let f, let act)? = parse(#"{"hidden_act": "relu"}"#) else { return XCTFail() }
        XCTAssertEqual(f, "cfg.json")
        XCTAssertEqual(act, "relu")
        XCTAssertTrue(CLIPTextEncoderError.unsupportedActivation(file: f, hiddenAct: act).description.contains("hidden_act 'relu'"))
        for (json, needle) in [(#"{"model_type": "clip_vision_model"}"#, "model_type"),
                               (#"{"hidden_size": 30, "num_attention_heads": 4}"#, "multiple"),
                               (#"{"hidden_size": "32"}"#, "hidden_size"),
                               (#"{"num_hidden_layers": 0}"#, "num_hidden_layers"),
                               (#"{"hidden_act": "gelu", "hidden_act": "gelu"}"#, "duplicate"),
                               (#"{"architectures": ["CLIPTextModelWithProjection"]}"#, "projection"),
                               ("[1]", "not a JSON object")] {
            guard case .invalidConfig(let f, let why)? = parse(json) else { XCTFail(json); continue }
            XCTAssertEqual(f, "cfg.json")
            XCTAssertTrue(why.lowercased().contains(needle.lowercased()), "\(json): \(why)")
        }
        // transformers' defaults for absent fields; a round trip through transformersJSON.
        let d = try CLIPTextConfig(transformersJSON: Data("{}".utf8), source: "d")
        XCTAssertEqual([d.hiddenSize, d.numHiddenLayers, d.numAttentionHeads], [512, 12, 8])
        XCTAssertEqual(d.hiddenAct, .quickGELU)
        XCTAssertEqual(try CLIPTextConfig(transformersJSON: CLIPTextConfig.sd21.transformersJSON(), source: "sd21"), .sd21)
    }

    // MARK: strict loading

    enum Edit {
        case drop(String)
        case reshape(String, [Int])
        case add(String, [Int], DType)
    }

    /// A copy of `source` with `edit` applied, written as `name` in `dir`.
    func editedCopy(_ source: String, _ edit: Edit, to path: String) throws {
        let src = try SafeTensorsFile(path: source)
        var specs = src.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        switch edit {
        case .drop(let n): specs.removeAll { $0.name == n }
        case .reshape(let n, let s): specs = specs.map { $0.name == n ? TensorSpec(name: n, dtype: $0.dtype, shape: s) : $0 }
        case .add(let n, let s, let d): specs.append(TensorSpec(name: n, dtype: d, shape: s))
        }
        XCTAssertNotEqual(specs, src.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }, "the edit changes nothing")
        let w = try SafeTensorsWriter(path: path, tensors: specs, metadata: ["format": "pt"])
        while let spec = w.nextSpec {
            if let info = src.info(spec.name), info.shape == spec.shape {
                try w.write(spec.name, bytes: src.rawBytes(info))
            } else {
                let bytes = [UInt8](repeating: 0, count: spec.byteCount)
                try bytes.withUnsafeBytes { try w.write(spec.name, bytes: $0) }
            }
        }
        try w.finish()
    }

    func editedFolder(_ edit: Edit, _ tmp: TemporaryDirectory) throws -> String {
        try FileManager.default.copyItem(atPath: Self.folderConfig, toPath: tmp.path("config.json"))
        try editedCopy(Self.folder + "/model.safetensors", edit, to: tmp.path("model.safetensors"))
        return tmp.path
    }

    func editedOriginal(_ edit: Edit, _ tmp: TemporaryDirectory) throws -> (String, CLIPTextLoadOptions) {
        try editedCopy(Self.original, edit, to: tmp.path("original.safetensors"))
        var o = CLIPTextLoadOptions()
        o.configPath = Self.folderConfig
        return (tmp.path("original.safetensors"), o)
    }

    func testDiffusersStrictLoading() throws {
        let fc2 = "text_model.encoder.layers.1.mlp.fc2.bias", fc1 = "text_model.encoder.layers.0.mlp.fc1.weight"
        let stray = "text_model.encoder.layers.3.mlp.fc1.weight"
        do {
            let tmp = try TemporaryDirectory()
            let r = strictReport("missing") { try CLIPTextCheckpoint(path: try editedFolder(.drop(fc2), tmp)) }
            XCTAssertEqual(r?.missing, [fc2])
            XCTAssertTrue(r?.description.contains(fc2) ?? false)
            XCTAssertTrue(r?.description.contains("text encoder tensors") ?? false, r?.description ?? "")
        }
        do {
            let tmp = try TemporaryDirectory()
            let r = strictReport("misshapen") { try CLIPTextCheckpoint(path: try editedFolder(.reshape(fc1, [64, 31]), tmp)) }
            XCTAssertEqual(r?.misshapen.map(\.stored), [fc1])
            XCTAssertEqual(r?.misshapen.first?.actual, [64, 31])
            XCTAssertTrue(r?.description.contains("\(fc1): expected [64, 32], found [64, 31]") ?? false, r?.description ?? "")
        }
        do {
            let tmp = try TemporaryDirectory()
            let r = strictReport("unexpected") { try CLIPTextCheckpoint(path: try editedFolder(.add(stray, [64, 32], .f32), tmp)) }
            XCTAssertEqual(r?.unused, [stray])
            XCTAssertTrue(r?.description.contains(stray) ?? false)
        }
        do {
            let tmp = try TemporaryDirectory()
            let r = strictReport("wrong dtype") { try CLIPTextCheckpoint(path: try editedFolder(.add(stray, [2], .i64), tmp)) }
            XCTAssertEqual(r?.unused, [stray])
        }
        do {
            // The position_ids buffer older transformers saved is allowed.
            let tmp = try TemporaryDirectory()
            let ckpt = try CLIPTextCheckpoint(path: try editedFolder(.add("text_model.embeddings.position_ids", [1, 77], .i64), tmp))
            XCTAssertTrue(ckpt.report.unused.isEmpty)
        }
    }

    func testOriginalStrictLoading() throws {
        let p = "cond_stage_model.model."
        do {
            let tmp = try TemporaryDirectory()
            let name = p + "transformer.resblocks.2.attn.in_proj_weight"
            let (path, o) = try editedOriginal(.drop(name), tmp)
            let r = strictReport("missing fused") { try CLIPTextCheckpoint(path: path, options: o) }
            XCTAssertEqual(r?.missing, [name], "a fused tensor is reported once")
        }
        do {
            let tmp = try TemporaryDirectory()
            let name = p + "transformer.resblocks.0.attn.in_proj_bias"
            let (path, o) = try editedOriginal(.reshape(name, [64]), tmp)
            let r = strictReport("misshapen fused") { try CLIPTextCheckpoint(path: path, options: o) }
            XCTAssertEqual(r?.misshapen.map(\.stored), [name])
            XCTAssertEqual(r?.misshapen.first?.expected, [96])
        }
        do {
            let tmp = try TemporaryDirectory()
            let name = p + "ln_final.bias"
            let (path, o) = try editedOriginal(.reshape(name, [33]), tmp)
            let r = strictReport("misshapen") { try CLIPTextCheckpoint(path: path, options: o) }
            XCTAssertEqual(r?.misshapen.map(\.stored), [name])
        }
        for stray in [p + "transformer.resblocks.4.ln_1.weight", p + "attn_mask", "cond_stage_model.transformer.text_model.final_layer_norm.weight"] {
            // Only the last resblock (3 here), text_projection and logit_scale may stay unused.
            let tmp = try TemporaryDirectory()
            let (path, o) = try editedOriginal(.add(stray, [32], .f32), tmp)
            let r = strictReport("unexpected \(stray)") { try CLIPTextCheckpoint(path: path, options: o) }
            XCTAssertEqual(r?.unused, [stray])
            XCTAssertTrue(r?.description.contains(stray) ?? false)
        }
        do {
            // Tensors of the other components are not the text encoder's business.
            let tmp = try TemporaryDirectory()
            let (path, o) = try editedOriginal(.add("model.diffusion_model.out.2.bias", [4], .f32), tmp)
            XCTAssertNoThrow(try CLIPTextCheckpoint(path: path, options: o))
        }
        do {
            // A file without an OpenCLIP text encoder.
            let tmp = try TemporaryDirectory()
            let (path, o) = try editedOriginal(.drop(p + "token_embedding.weight"), tmp)
            let e = expectTextError("no text encoder") { try CLIPTextCheckpoint(path: path, options: o) }
            guard case .checkpoint(.unrecognisedLayout(let f, _))? = e else { return XCTFail("\(String(describing: e))") }
            XCTAssertEqual(f, path)
        }
    }
}
