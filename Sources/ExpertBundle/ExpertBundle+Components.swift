import Foundation
import SafeTensors
import StableDiffusion
import TensorCore

/// The pipeline components a bundle may carry (formats/bundle.md, "Pipeline components"): each
/// read with alter's strict loaders from the bundle's `tokenizer/`, `text_encoder/` and `vae/`,
/// after every file the manifest lists for it is found to be a regular file inside the bundle.
/// Checksums are `verify`'s (as for the UNet's weights).
extension ExpertBundle {
    /// Whether the bundle carries a tokenizer, text encoder and VAE.
    public var hasComponents: Bool { manifest.components != nil }

    /// The carried tokenizer; nil when the bundle carries no components.
    public func tokenizer() throws(BundleError) -> CLIPTokenizer? {
        guard manifest.components != nil else { return nil }
        try checkComponentFiles(.tokenizer)
        return try Self.loadTokenizer(in: path)
    }

    /// The carried text encoder's checkpoint (config and strictly matched tensors); nil when the
    /// bundle carries no components.
    public func textEncoderCheckpoint() throws(BundleError) -> CLIPTextCheckpoint? {
        guard manifest.components != nil else { return nil }
        try checkComponentFiles(.textEncoder)
        return try Self.loadTextEncoder(in: path)
    }

    /// The carried text encoder, built; nil when the bundle carries no components.
    public func textEncoder() throws(BundleError) -> CLIPTextEncoder? {
        guard let c = try textEncoderCheckpoint() else { return nil }
        do { return try c.encoder() } catch { throw BundleError(path + "/" + ComponentKind.textEncoderWeights, "\(error)") }
    }

    /// The carried VAE's checkpoint; nil when the bundle carries no components.
    public func vaeCheckpoint() throws(BundleError) -> VAECheckpoint? {
        guard manifest.components != nil else { return nil }
        try checkComponentFiles(.vae)
        return try Self.loadVAE(in: path)
    }

    /// The carried VAE, built; nil when the bundle carries no components.
    public func autoencoder() throws(BundleError) -> AutoencoderKL? {
        guard let c = try vaeCheckpoint() else { return nil }
        do { return try c.autoencoder() } catch { throw BundleError(path + "/" + ComponentKind.vaeWeights, "\(error)") }
    }

    /// The manifest entry of one component (nil without components).
    public func component(_ kind: ComponentKind) -> BundleManifest.Component? {
        manifest.components?.all.first { $0.kind == kind }?.component
    }

    /// Every file the manifest lists for `kind` is a regular file inside the bundle (no link).
    func checkComponentFiles(_ kind: ComponentKind) throws(BundleError) {
        for f in component(kind)?.files ?? [] {
            let full = try Self.resolve(f.path, in: path, what: "components.\(kind.rawValue).files")
            let status: (kind: RegularFile.Kind, size: Int)?
            do { status = try RegularFile.status(full, followSymlinks: false) } catch { throw BundleError(full, error.reason) }
            guard let status else { throw BundleError(full, "is missing (listed in components.\(kind.rawValue).files)") }
            guard status.kind == .regular else { throw BundleError(full, "is \(status.kind.rawValue), not a regular file") }
        }
    }

    static func loadTokenizer(in root: String) throws(BundleError) -> CLIPTokenizer {
        do { return try CLIPTokenizer(folder: root + "/" + ComponentKind.tokenizer.folder) } catch { throw BundleError(error.file, error.description) }
    }

    static func loadTextEncoder(in root: String) throws(BundleError) -> CLIPTextCheckpoint {
        let dir = root + "/" + ComponentKind.textEncoder.folder
        do { return try CLIPTextCheckpoint(path: dir) } catch { throw BundleError(dir, "\(error)") }
    }

    static func loadVAE(in root: String) throws(BundleError) -> VAECheckpoint {
        let dir = root + "/" + ComponentKind.vae.folder
        do { return try VAECheckpoint(path: dir) } catch { throw BundleError(dir, "\(error)") }
    }

    /// Structural checks of `components` when the manifest is read: each component lists exactly
    /// its required files (and for the tokenizer any of its optional ones), each once, with sizes
    /// within `Bounds.fileBytes`; tensor entries name the component's weight file and have shapes
    /// whose bytes stay within bounds.
    static func checkComponents(_ c: BundleManifest.Components, path: String) throws(BundleError) {
        for (kind, component) in c.all {
            let field = "components.\(kind.rawValue)"
            let names = component.files.map(\.path)
            let allowed = Set(kind.requiredFiles + kind.optionalFiles)
            if let other = names.first(where: { !allowed.contains($0) }) {
                throw BundleError(path, "\(field).files lists \"\(other)\"; it may list only \(kind.requiredFiles + kind.optionalFiles)")
            }
            if let missing = kind.requiredFiles.first(where: { !names.contains($0) }) {
                throw BundleError(path, "\(field).files does not list \"\(missing)\"")
            }
            guard Set(names).count == names.count else { throw BundleError(path, "\(field).files lists a file twice") }
            do throws(SizeError) {
                for (i, f) in component.files.enumerated() { try Bounds.check(f.bytes, in: Bounds.fileBytes, field: "\(field).files[\(i)].bytes") }
                try checkTensorBytes(component.tensors.map(\.shape), field: "\(field).tensors")
            } catch { throw BundleError(path, error.description) }
            if let t = component.tensors.first(where: { $0.file != kind.weightFile }) {
                throw BundleError(path, "\(field): tensor '\(t.name)' is in \"\(t.file)\"; expected " + (kind.weightFile.map { "\"\($0)\"" } ?? "no tensors"))
            }
        }
    }

    /// The `components` check of `verify`: every listed tensor is stored in its weight file with the
    /// listed dtype, shape and SHA-256 and nothing unlisted is stored; the tokenizer, text encoder
    /// and VAE load strictly and fit the UNet; with `deep`, a prompt encodes and a seeded latent
    /// decodes (and the image encodes) to finite values. Returns the failures and what was checked.
    func componentFailures(deep: Bool) -> (failures: [String], detail: String) {
        guard let components = manifest.components else { return ([], "the bundle carries no pipeline components") }
        var bad: [String] = []
        var tensorCount = 0
        for (kind, component) in components.all {
            guard let weightFile = kind.weightFile else { continue }
            let file: SafeTensorsFile
            do {
                try checkComponentFiles(kind)
                file = try self.file(weightFile)
            } catch { bad.append("\(error)"); continue }
            let listed = Set(component.tensors.map(\.name))
            for entry in component.tensors {
                guard let info = file.info(entry.name) else { bad.append("\(weightFile): tensor '\(entry.name)' is missing"); continue }
                if info.dtype.rawValue != entry.dtype || info.shape != entry.shape {
                    bad.append("\(weightFile): '\(entry.name)' is \(info.dtype.rawValue) \(info.shape), the manifest says \(entry.dtype) \(entry.shape)")
                    continue
                }
                let digest = SHA256.hex(file.rawBytes(info))
                file.release(info)
                if digest != entry.sha256 { bad.append("\(weightFile): tensor '\(entry.name)' has SHA-256 \(digest), the manifest says \(entry.sha256)") }
                tensorCount += 1
            }
            for name in file.names where !listed.contains(name) {
                bad.append("\(weightFile): tensor '\(name)' is not listed in components.\(kind.rawValue).tensors")
            }
        }
        // Strict loading and fit (each loader names the file and tensor).
        var tokenizer: CLIPTokenizer?, text: CLIPTextCheckpoint?, vae: VAECheckpoint?
        do { tokenizer = try self.tokenizer() } catch { bad.append("tokenizer: \(error)") }
        do { text = try textEncoderCheckpoint() } catch { bad.append("text encoder: \(error)") }
        do { vae = try vaeCheckpoint() } catch { bad.append("VAE: \(error)") }
        if let tokenizer, let text, let vae {
            bad += PipelineComponents.fitFailures(tokenizer: tokenizer, textEncoder: text.config, vae: vae.config, unet: config,
                                                  names: ComponentKind.fitNames)
            if bad.isEmpty && deep { bad += Self.finitenessFailures(tokenizer: tokenizer, text: text, vae: vae) }
        }
        var detail = "tokenizer, text encoder (\(text?.keyMap.entries.count ?? 0) tensors) and VAE (\(vae?.keyMap.entries.count ?? 0) tensors) "
            + "load strictly and fit the UNet; \(tensorCount) tensors match their SHA-256"
        if deep { detail += "; a prompt encodes and a seeded latent decodes and re-encodes to finite values" }
        return (bad, detail)
    }

    /// `verify --deep` on the components: "a photo of a cat" through the tokenizer and text
    /// encoder, a seeded latent (8 x 8) through the decoder, its image through the encoder; every
    /// output value must be finite.
    static func finitenessFailures(tokenizer: CLIPTokenizer, text: CLIPTextCheckpoint, vae: VAECheckpoint) -> [String] {
        var bad: [String] = []
        func check(_ t: Tensor, _ what: String) {
            if let i = (0..<t.count).first(where: { !t.data[$0].isFinite }) { bad.append("\(what): value \(i) is \(t.data[i])") }
        }
        do {
            let ids = tokenizer.tokenize("a photo of a cat").inputIds
            check(try text.encoder().encode([ids]), "text encoder on \"a photo of a cat\"")
        } catch { bad.append("text encoder: \(error)") }
        do {
            let autoencoder = try vae.autoencoder()
            var rng = SeededGenerator(seed: 0)
            let c = vae.config.latentChannels
            let image = try autoencoder.decode(Tensor(shape: [1, c, 8, 8], values: rng.normals(c * 64)))
            check(image, "VAE decoder on a seeded 8x8 latent")
            check(try autoencoder.encode(image).mean, "VAE encoder on the decoded image")
        } catch { bad.append("VAE: \(error)") }
        return bad
    }
}
