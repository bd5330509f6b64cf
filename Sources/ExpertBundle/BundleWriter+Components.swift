import Foundation
import NN
import SafeTensors
import StableDiffusion
import TensorCore
extension BundleWriter {
    /// Writes the components into the bundle's staging directory (formats/bundle.md, "Pipeline
    /// components"): the tokenizer files as they are, each config.json as read (or, for a config
    /// inferred from an original file, as alter writes it), the weights under their canonical
    /// names in `dtype`.
    static func writeComponents(_ c: PipelineComponents, to staging: AtomicDirectory, dtype: DType,
                                progress: (String) -> Void) throws(BundleError) -> BundleManifest.Components {
        let fm = FileManager.default, root = staging.path
        for kind in ComponentKind.allCases {
            do { try staging.createSubdirectory(kind.folder) } catch { throw BundleError(root + "/" + kind.folder, error.description) }
        }
        func copy(_ source: String, to relative: String) throws(BundleError) -> BundleManifest.FileDigest {
            let data: Data
            do { data = try RegularFile.read(source, limit: CLIPTokenizer.fileLimit) } catch { throw BundleError(source, error.reason) }
            return try put(data, relative)
        }
        func put(_ data: Data, _ relative: String) throws(BundleError) -> BundleManifest.FileDigest {
            try writeFile(data, to: root + "/" + relative)
            return .init(path: relative, bytes: data.count, sha256: data.withUnsafeBytes { SHA256.hex($0) })
        }
        func digest(_ relative: String) throws(BundleError) -> BundleManifest.FileDigest {
            let full = root + "/" + relative
            let size = (try? fm.attributesOfItem(atPath: full)[.size] as? Int) ?? 0
            do { return .init(path: relative, bytes: size, sha256: try SHA256.hex(file: full)) } catch { throw BundleError(full, "\(error)") }
        }

        progress("writing tokenizer/ (\(c.tokenizerFolder))")
        var tokenizerFiles: [BundleManifest.FileDigest] = []
        for relative in ComponentKind.tokenizer.requiredFiles + ComponentKind.tokenizer.optionalFiles {
            let source = c.tokenizerFolder + "/" + (relative as NSString).lastPathComponent
            if ComponentKind.tokenizer.optionalFiles.contains(relative), ((try? RegularFile.status(source)) ?? nil) == nil { continue }
            tokenizerFiles.append(try copy(source, to: relative))
        }

        progress("writing text_encoder/ (\(c.textEncoder.keyMap.entries.count) tensors, \(dtype.rawValue))")
        let textConfig: BundleManifest.FileDigest
        if let p = c.textEncoder.configFile { textConfig = try copy(p, to: ComponentKind.textEncoderConfig) } else {
            textConfig = try put(c.textEncoder.config.transformersJSON(), ComponentKind.textEncoderConfig)
        }
        let textTensors = try writeTensors(c.textEncoder.keyMap.entries.map { ($0.canonical, $0.shape) }, from: c.textEncoder,
                                           to: root, relative: ComponentKind.textEncoderWeights, dtype: dtype)
        let textWeights = try digest(ComponentKind.textEncoderWeights)

        progress("writing vae/ (\(c.vae.keyMap.entries.count) tensors, \(dtype.rawValue))")
        let vaeConfig: BundleManifest.FileDigest
        if let p = c.vae.configFile { vaeConfig = try copy(p, to: ComponentKind.vaeConfig) } else {
            vaeConfig = try put(c.vae.config.diffusersJSON(), ComponentKind.vaeConfig)
        }
        let vaeTensors = try writeTensors(c.vae.keyMap.entries.map { ($0.canonical, $0.shape) }, from: c.vae,
                                          to: root, relative: ComponentKind.vaeWeights, dtype: dtype)
        let vaeWeights = try digest(ComponentKind.vaeWeights)

        return .init(tokenizer: .init(files: tokenizerFiles, tensors: []),
                     textEncoder: .init(files: [textConfig, textWeights], tensors: textTensors),
                     vae: .init(files: [vaeConfig, vaeWeights], tensors: vaeTensors))
    }

    /// Writes `params` read from `source` (Float32, converted to `dtype`) as the safetensors file
    /// `root/relative` (metadata `format: pt`, as transformers and diffusers expect), returning
    /// each tensor's entry with the SHA-256 of its stored bytes.
    static func writeTensors(_ params: [(name: String, shape: [Int])], from source: some ParameterSource, to root: String, relative: String,
                             dtype: DType) throws(BundleError) -> [ExpertManifest.TensorEntry] {
        let path = root + "/" + relative
        var out: [ExpertManifest.TensorEntry] = []
        do {
            let w = try SafeTensorsWriter(path: path, tensors: params.map { TensorSpec(name: $0.name, dtype: dtype, shape: $0.shape) },
                                          metadata: ["format": "pt"])
            do {
                for spec in w.order {
                    let t = try source.tensor(spec.name, shape: spec.shape)
                    precondition(t.count == spec.elementCount, "export: \(spec.name)")
                    out.append(try writeConverted(UnsafeRawBufferPointer(start: t.data, count: t.count * 4), as: spec, to: w, file: relative))
                }
                try w.finish()
            } catch {
                w.abort()
                throw error
            }
        } catch let e as BundleError { throw e } catch { throw BundleError(path, "\(error)") }
        return out
    }

    /// Reads the components just written under `root` back with the strict loaders and checks
    /// their fit with `unet`: what a reader will load is what was checked.
    static func checkWrittenComponents(in root: String, unet: UNetConfig) throws(BundleError) {
        let tokenizer = try ExpertBundle.loadTokenizer(in: root)
        let text = try ExpertBundle.loadTextEncoder(in: root)
        let vae = try ExpertBundle.loadVAE(in: root)
        let misfit = PipelineComponents.fitFailures(tokenizer: tokenizer, textEncoder: text.config, vae: vae.config, unet: unet,
                                                    names: ComponentKind.fitNames)
        if !misfit.isEmpty { throw BundleError(root, "the written components do not fit the UNet: " + misfit.joined(separator: "; ")) }
    }
}
