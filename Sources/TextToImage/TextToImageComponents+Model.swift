import ExpertBundle
import Foundation
import StableDiffusion

extension TextToImageComponents {
    /// The components of `path`: a bundle that carries them, a diffusers pipeline folder, or an
    /// original SD2.x single file with `tokenizer` (a tokenizer folder, a pipeline or open_clip's
    /// BPE file; only a single file takes one). `textEncoder` and `vae` are the load options of a
    /// pipeline folder or a single file (a bundle's components are fixed).
    public init(model path: String, tokenizer: String? = nil, textEncoder textOptions: CLIPTextLoadOptions = CLIPTextLoadOptions(),
                vae vaeOptions: VAELoadOptions = VAELoadOptions()) throws(TextToImageError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw .input("\(path): no such file or folder")
        }
        if isDirectory.boolValue {
            if let tokenizer { throw .input("\(path): a tokenizer (\(tokenizer)) is given only with an original single file; this folder brings its own") }
            if ExpertBundle.isBundle(path) {
                let bundle: ExpertBundle
                do { bundle = try ExpertBundle(path: path) } catch { throw .bundle(error) }
                try self.init(bundle: bundle)
            } else {
                try self.init(pipeline: path, textEncoder: textOptions, vae: vaeOptions)
            }
            return
        }
        guard let tokenizer else {
            throw .input("\(path): an original single file holds no tokenizer (give a tokenizer folder)")
        }
        let t: CLIPTokenizer
        do { t = try CLIPTokenizer(path: tokenizer) } catch { throw .tokenizer(error) }
        try self.init(singleFile: path, tokenizer: t, tokenizerSource: tokenizer, textEncoder: textOptions, vae: vaeOptions)
    }
}
