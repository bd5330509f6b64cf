import Foundation
import NN
import SafeTensors
import TensorCore
import ExampleSupport
import XCTest
@testable import StableDiffusion

/// The VAE against diffusers' AutoencoderKL (float64 reference, Tests/Fixtures/vae,
/// scripts/make_vae_fixtures.py), from the diffusers folder, a pipeline and the original LDM
/// layout (explicit and inferred config); strict loading of both layouts.
final class AutoencoderKLTests: XCTestCase {
    static var folder: String { Fixtures.path("vae/diffusers") }
    static var folderConfig: String { Fixtures.path("vae/diffusers/config.json") }
    static var weights: String { Fixtures.path("vae/diffusers/diffusion_pytorch_model.safetensors") }
    static var original: String { Fixtures.path("vae/original.safetensors") }

    static func expected() throws -> [String: Tensor] {
        let f = try SafeTensorsFile(path: Fixtures.path("vae/expected.safetensors"))
        var out: [String: Tensor] = [:]
        for name in ["image", "latent", "mean", "logvar", "decoded"] {
            out[name] = Tensor(shape: try f.require(name).shape, values: try f.floats(name))
        }
        return out
    }

    static var smallConfig: VAEConfig {
        var c = VAEConfig()
        (c.blockOutChannels, c.layersPerBlock, c.normNumGroups, c.sampleSize) = ([8, 16], 1, 4, 32)
        return c
    }

    func expectVAEError(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Any) -> VAEError? {
        expectError(VAEError.self, what, file: file, line: line, body)
    }

    func strictReport(_ what: String, _ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> LoadReport? {
        guard let e = expectVAEError(what, file: file, line: line, body) else { return nil }
        guard case .checkpoint(.strictLoad(let r)) = e else {
            XCTFail("\(what): expected a strict-load error, got \(e)", file: file, line: line)
            return nil
        }
        XCTAssertEqual(r.component, .vae, file: file, line: line)
        return r
    }

    func checkParity(_ ckpt: VAECheckpoint, _ what: String) throws {
        let x = try Self.expected()
        let vae = try ckpt.autoencoder()
        let dist = try vae.encode(try XCTUnwrap(x["image"]))
        XCTAssertEqual(dist.mean.shape, [1, 4, 16, 16])
        assertParity(dist.mean, try XCTUnwrap(x["mean"]), "\(what), encoder mean")
        assertParity(dist.logvar, try XCTUnwrap(x["logvar"]), "\(what), encoder logvar")
        let decoded = try vae.decode(try XCTUnwrap(x["latent"]))
        XCTAssertEqual(decoded.shape, [1, 3, 32, 32])
        assertParity(decoded, try XCTUnwrap(x["decoded"]), "\(what), decoder")
    }

    // MARK: parity

    func testDiffusersFolderParity() throws {
        let ckpt = try VAECheckpoint(path: Self.folder)
        XCTAssertEqual(ckpt.kind, .diffusersFolder)
        XCTAssertEqual(ckpt.layout, .diffusers)
        XCTAssertEqual(ckpt.config, Self.smallConfig)
        XCTAssertEqual(ckpt.report.mapped, VAEKeys.parameters(ckpt.config).count)
        XCTAssertTrue(ckpt.assumptions.isEmpty)
        try checkParity(ckpt, "diffusers layout")
    }

    func testOriginalLayoutParity() throws {
        var o = VAELoadOptions()
        o.configPath = Self.folderConfig
        let ckpt = try VAECheckpoint(path: Self.original, options: o)
        XCTAssertEqual(ckpt.kind, .originalSingleFile)
        XCTAssertEqual(ckpt.layout, .original)
        XCTAssertEqual(ckpt.report.mapped, VAEKeys.parameters(ckpt.config).count)
        try checkParity(ckpt, "original layout")
    }

    func testOriginalLayoutInferredConfig() throws {
        // The fixture's 4 groups are no LDM VAE's: inference assumes 32 and says so.
        let e = expectVAEError("inferred groups") { try VAECheckpoint(path: Self.original) }
        guard case .invalidConfig(let f, let why)? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(f, Self.original)
        XCTAssertTrue(why.contains("norm_num_groups 32"), why)
        // An LDM-layout file of a 32-group config (random weights): every field is inferred back.
        var c = VAEConfig()
        (c.blockOutChannels, c.layersPerBlock, c.latentChannels, c.outChannels) = ([32, 64, 64], 1, 8, 2)
        let tmp = try TemporaryDirectory()
        let path = tmp.path("random.safetensors")
        try Self.writeRandom(c, layout: .original, to: path)
        let ckpt = try VAECheckpoint(path: path)
        XCTAssertEqual(ckpt.config, c)
        XCTAssertNil(ckpt.configFile)
        XCTAssertTrue(ckpt.assumptions.contains { $0.hasPrefix("norm_num_groups = 32") }, "\(ckpt.assumptions)")
        XCTAssertTrue(ckpt.assumptions.contains { $0.hasPrefix("scaling_factor = 0.18215") }, "\(ckpt.assumptions)")
        // Its weights are the random ones, the attention's 1x1 convolutions read as matrices.
        let vae = try ckpt.autoencoder()
        let reference = try AutoencoderKL(config: c, parameters: RandomParameters(seed: 3))
        for (a, b) in zip(vae.parameters, reference.parameters) { XCTAssertEqual(a.value.scalars, b.value.scalars, a.name) }
    }

    /// Writes RandomParameters(seed: 3) for `config` under the names and stored shapes of `layout`.
    static func writeRandom(_ config: VAEConfig, layout: CheckpointLayout, to path: String) throws {
        let map = VAEKeyMap(config: config, layout: layout)
        let specs = map.entries.map { TensorSpec(name: $0.stored, dtype: .f32, shape: $0.storedShape) }
        let byName = Dictionary(uniqueKeysWithValues: map.entries.map { ($0.stored, $0) })
        let w = try SafeTensorsWriter(path: path, tensors: specs, metadata: ["format": "pt"])
        while let spec = w.nextSpec {
            let e = try XCTUnwrap(byName[spec.name])
            let t = try RandomParameters(seed: 3).tensor(e.canonical, shape: e.shape)
            try t.scalars.withUnsafeBytes { try w.write(spec.name, bytes: $0) }
        }
        try w.finish()
    }

    func testPipelineFolderAndScaledDecode() throws {
        let x = try Self.expected()
        let tmp = try TemporaryDirectory()
        let fm = FileManager.default
        try fm.createDirectory(atPath: tmp.path("vae"), withIntermediateDirectories: true)
        for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
            try fm.copyItem(atPath: Self.folder + "/" + f, toPath: tmp.path("vae/" + f))
        }
        let ckpt = try VAECheckpoint(path: tmp.path)
        XCTAssertEqual(ckpt.kind, .diffusersPipeline)
        XCTAssertEqual(ckpt.configFile, tmp.path("vae/config.json"))
        let vae = try ckpt.autoencoder()
        let latent = try XCTUnwrap(x["latent"])
        let scaled = Tensor(uninitialized: latent.shape)
        for i in 0..<latent.count { scaled.data[i] = latent.data[i] * Float(0.18215) }
        assertParity(try vae.decodeScaled(scaled), try XCTUnwrap(x["decoded"]), "pipeline folder, decodeScaled(latent * 0.18215)")
    }

    func testSampleAndClamp() throws {
        let x = try Self.expected()
        let vae = try VAECheckpoint(path: Self.folder).autoencoder()
        let dist = try vae.encode(try XCTUnwrap(x["image"]))
        var g1 = SeededGenerator(seed: 7), g2 = SeededGenerator(seed: 7)
        let a = dist.sample(using: &g1), b = dist.sample(using: &g2)
        XCTAssertEqual(a.scalars, b.scalars, "seeded samples repeat")
        let eps = SeededGenerator(seed: 7).normalsCopy(a.count)
        let std = dist.std
        for i in 0..<a.count {
            XCTAssertEqual(a.data[i], dist.mean.data[i] + std.data[i] * eps[i])
            XCTAssertEqual(std.data[i], Foundation.exp(0.5 * dist.logvar.data[i]), accuracy: 1e-6 * std.data[i])
        }
        // Moments beyond the clamp: logvar is held in [-30, 20].
        let m = Tensor(shape: [1, 2, 1, 2], values: [0.5, -0.5, -100, 100])
        let clamped = LatentDistribution(moments: m)
        XCTAssertEqual(clamped.mean.scalars, [0.5, -0.5])
        XCTAssertEqual(clamped.logvar.scalars, [-30, 20])
    }

    func testInvalidInput() throws {
        let vae = try VAECheckpoint(path: Self.folder).autoencoder()
        for (t, needle) in [(Tensor(zeros: [1, 3, 31, 32]), "height 31"), (Tensor(zeros: [1, 4, 32, 32]), "[N>=1, 3, H, W]"),
                            (Tensor(zeros: [3, 32, 32]), "expected [N, 3, H, W]")] {
            guard case .invalidInput(let why)? = expectVAEError("\(t.shape)", { try vae.encode(t) }) else { XCTFail(); continue }
            XCTAssertTrue(why.contains(needle), why)
        }
        guard case .invalidInput(let why)? = expectVAEError("latent", { try vae.decode(Tensor(zeros: [1, 3, 8, 8])) }) else { return XCTFail() }
        XCTAssertTrue(why.contains("latent"), why)
    }

    /// The model reads exactly the parameters the key table lists; the original table maps each
    /// to a distinct stored name.
    func testParameterListMatchesModel() throws {
        for add in [true, false] {
            var c = VAEConfig()
            (c.blockOutChannels, c.layersPerBlock, c.normNumGroups, c.midBlockAddAttention, c.useQuantConv) = ([8, 16, 16], 2, 4, add, add)
            let vae = try AutoencoderKL(config: c, parameters: RandomParameters(seed: 1))
            let listed = VAEKeys.parameters(c)
            XCTAssertEqual(vae.parameters.map(\.name), listed.map(\.name))
            XCTAssertEqual(vae.parameters.map(\.value.shape), listed.map(\.shape))
            let map = VAEKeyMap(config: c, layout: .original)
            XCTAssertEqual(Set(map.entries.map(\.stored)).count, listed.count)
        }
        // SD2.1: as many tensors as diffusers' AutoencoderKL state dict holds.
        XCTAssertEqual(VAEKeys.parameters(.sd21).count, 248)
    }

    // MARK: config

    func testConfigJSON() throws {
        func parse(_ json: String) -> VAEError? {
            expectVAEError(json) { try VAEConfig(diffusersJSON: Data(json.utf8), source: "cfg.json") }
        }
        for (json, needle) in [(#"{"act_fn": "gelu"}"#, "act_fn"), (#"{"shift_factor": 0.1159}"#, "shift_factor"),
                               (#"{"block_out_channels": [64, 64], "down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#, "AttnDownEncoderBlock2D")] {
            guard case .unsupportedConfig(let f, let why)? = parse(json) else { XCTFail(json); continue }
            XCTAssertEqual(f, "cfg.json")
            XCTAssertTrue(why.contains(needle), "\(json): \(why)")
        }
        for (json, needle) in [(#"{"_class_name": "UNet2DConditionModel"}"#, "_class_name"),
                               (#"{"block_out_channels": [48], "norm_num_groups": 32}"#, "multiple"),
                               (#"{"block_out_channels": [64, 64]}"#, "down_block_types"),
                               (#"{"layers_per_block": true}"#, "layers_per_block"),
                               (#"{"use_quant_conv": 1}"#, "use_quant_conv"),
                               (#"{"scaling_factor": 0}"#, "scaling_factor"),
                               (#"{"latent_channels": 4, "latent_channels": 4}"#, "duplicate"),
                               ("[1]", "not a JSON object")] {
            guard case .invalidConfig(let f, let why)? = parse(json) else { XCTFail(json); continue }
            XCTAssertEqual(f, "cfg.json")
            XCTAssertTrue(why.lowercased().contains(needle.lowercased()), "\(json): \(why)")
        }
        // diffusers' defaults for absent fields.
        let d = try VAEConfig(diffusersJSON: Data("{}".utf8), source: "d")
        XCTAssertEqual(d.blockOutChannels, [64])
        XCTAssertEqual([d.layersPerBlock, d.normNumGroups, d.sampleSize], [1, 32, 32])
        XCTAssertEqual(try VAEConfig(diffusersJSON: Data(#"{"scaling_factor": 1}"#.utf8), source: "s").scalingFactor, 1)
    }

    // MARK: strict loading

    enum Edit {
        case drop(String)
        case reshape(String, [Int])
        case add(String, [Int], DType)
    }

    func editedCopy(_ source: String, _ edit: Edit, to path: String) throws {
        let src = try SafeTensorsFile(path: source)
        var specs = src.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        switch edit {
        case .drop(let n): specs.removeAll { $0.name == n }
        case .reshape(let n, let s): specs = specs.map { $0.name == n ? TensorSpec(name: n, dtype: $0.dtype, shape: s) : $0 }
        case .add(let n, let s, let d): specs.append(TensorSpec(name: n, dtype: d, shape: s))
        }
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
        try editedCopy(Self.weights, edit, to: tmp.path("diffusion_pytorch_model.safetensors"))
        return tmp.path
    }

    func editedOriginal(_ edit: Edit, _ tmp: TemporaryDirectory) throws -> (String, VAELoadOptions) {
        try editedCopy(Self.original, edit, to: tmp.path("original.safetensors"))
        var o = VAELoadOptions()
        o.configPath = Self.folderConfig
        return (tmp.path("original.safetensors"), o)
    }

    func testDiffusersStrictLoading() throws {
        let q = "decoder.mid_block.attentions.0.to_q.weight", up = "decoder.up_blocks.1.resnets.1.conv2.bias"
        let stray = "decoder.up_blocks.1.resnets.2.conv2.bias"
        do {
            let tmp = try TemporaryDirectory()
            let r = strictReport("missing") { try VAECheckpoint(path: try editedFolder(.drop(up), tmp)) }
            XCTAssertEqual(r?.missing, [up])
            XCTAssertTrue(r?.description.contains("VAE tensors") ?? false, r?.description ?? "")
        }
        do {
            let tmp = try TemporaryDirectory()
            let r = strictReport("misshapen") { try VAECheckpoint(path: try editedFolder(.reshape(q, [16, 16, 1, 1]), tmp)) }
            XCTAssertEqual(r?.misshapen.map(\.stored), [q])
            XCTAssertEqual(r?.misshapen.first?.actual, [16, 16, 1, 1])
        }
        do {
            let tmp = try TemporaryDirectory()
            let r = strictReport("unused") { try VAECheckpoint(path: try editedFolder(.add(stray, [8], .f32), tmp)) }
            XCTAssertEqual(r?.unused, [stray])
            XCTAssertTrue(r?.description.contains(stray) ?? false)
        }
    }

    func testOriginalStrictLoading() throws {
        let q = "first_stage_model.decoder.mid.attn_1.q.weight"
        let up = "first_stage_model.decoder.up.0.block.1.conv2.bias"
        do {
            let tmp = try TemporaryDirectory()
            let (p, o) = try editedOriginal(.drop(up), tmp)
            XCTAssertEqual(strictReport("missing") { try VAECheckpoint(path: p, options: o) }?.missing, [up])
        }
        do {
            // A linear-shaped attention weight is not the LDM layout's 1x1 convolution.
            let tmp = try TemporaryDirectory()
            let (p, o) = try editedOriginal(.reshape(q, [16, 16]), tmp)
            let r = strictReport("misshapen") { try VAECheckpoint(path: p, options: o) }
            XCTAssertEqual(r?.misshapen.first?.stored, q)
            XCTAssertEqual(r?.misshapen.first?.canonical, "decoder.mid_block.attentions.0.to_q.weight")
            XCTAssertEqual(r?.misshapen.first?.expected, [16, 16, 1, 1])
        }
        do {
            let tmp = try TemporaryDirectory()
            let stray = "first_stage_model.encoder.mid.attn_2.q.weight"
            let (p, o) = try editedOriginal(.add(stray, [16, 16, 1, 1], .f32), tmp)
            XCTAssertEqual(strictReport("unused") { try VAECheckpoint(path: p, options: o) }?.unused, [stray])
        }
        do {
            let tmp = try TemporaryDirectory()
            let (p, o) = try editedOriginal(.add("first_stage_model.encoder.conv_in.scale", [1], .i64), tmp)
            XCTAssertEqual(strictReport("unused i64") { try VAECheckpoint(path: p, options: o) }?.unused, ["first_stage_model.encoder.conv_in.scale"])
        }
        do {
            // Other components and a training checkpoint's loss are outside the VAE's namespace.
            let tmp = try TemporaryDirectory()
            let (p1, o) = try editedOriginal(.add("loss.discriminator.main.0.weight", [4], .f32), tmp)
            try editedCopy(p1, .add("model.diffusion_model.out.2.bias", [4], .f32), to: tmp.path("both.safetensors"))
            let ckpt = try VAECheckpoint(path: tmp.path("both.safetensors"), options: o)
            XCTAssertTrue(ckpt.report.unused.isEmpty)
        }
        do {
            // A file without a VAE is named; so is one whose VAE tensors are too few to infer it.
            let none = Fixtures.path("text-encoder/diffusers/model.safetensors")
            let e = expectVAEError("no vae") { try VAECheckpoint(path: none) }
            guard case .checkpoint(.unrecognisedLayout(let f, let why))? = e else { return XCTFail("\(String(describing: e))") }
            XCTAssertEqual(f, none)
            XCTAssertTrue(why.contains("first_stage_model."), why)
            let stub = expectVAEError("stub vae") { try VAECheckpoint(path: Fixtures.sd1Original) }
            guard case .cannotInfer(let f2, let why2)? = stub else { return XCTFail("\(String(describing: stub))") }
            XCTAssertEqual(f2, Fixtures.sd1Original)
            XCTAssertTrue(why2.contains("first_stage_model.encoder.down."), why2)
            XCTAssertTrue(why.contains("first_stage_model."), why)
        }
    }
}

extension SeededGenerator {
    /// The normals a copy of this generator would give.
    func normalsCopy(_ count: Int) -> [Float] {
        var g = self
        return g.normals(count)
    }
}
