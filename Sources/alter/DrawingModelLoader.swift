import ArgumentParser
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import TextToImage

/// How `sample` and `eval` load a model to draw with: the denoiser of `model` (a bundle's routed
/// experts, or a checkpoint's UNet dense) and its tokenizer, text encoder and VAE (from
/// `pipeline` when given, else the bundle's, else `model`'s: a pipeline folder, or an original
/// single file with `tokenizer`).
struct DrawingModelLoader {
    var model: String
    var pipeline: String?
    var tokenizer: String?
    var heads: Int?
    var vaeConfig: String?
    var predictionType: NoiseSchedule.PredictionType?
    var schedulerConfig: String?
    var loadOptions: LoadOptions

    /// The denoiser of `model`: a bundle's routed experts, or a checkpoint's UNet dense with the
    /// scheduler config of `schedulerConfig`, else of its pipeline, else SD2.1's with epsilon.
    func sampler() throws -> RoutedSampler {
        do {
            switch try ModelInput(path: model) {
            case .bundle(let bundle):
                guard predictionType == nil, schedulerConfig == nil else {
                    throw ValidationError("--prediction-type and --scheduler-config apply to models; a bundle carries its own")
                }
                return try RoutedSampler(bundle: bundle)
            case .checkpoint(let path):
                let ckpt = try UNetCheckpoint(path: path, options: loadOptions)
                var config = SchedulerConfig.sd21
                config.predictionType = .epsilon
                if let path = schedulerConfig ?? ckpt.source.schedulerConfigPath {
                    config = try SchedulerConfig(contentsOfFile: path, defaults: config)
                }
                if let p = predictionType { config.predictionType = p }
                return RoutedSampler(unet: try UNet(checkpoint: ckpt), schedulerConfig: config)
            }
        } catch let e as ValidationError { throw e } catch let e as CommandFailure { throw e } catch { throw CommandFailure("\(error)") }
    }

    /// Refuses a single file without `tokenizer` when the components would come from it.
    func checkTokenizerSource() throws {
        let bundleInput = ExpertBundle.isBundle(model)
        if !(bundleInput && pipeline == nil), tokenizer == nil, !Self.isDirectory(pipeline ?? model) {
            throw ValidationError("\(pipeline ?? model) is a single file: it holds no tokenizer; give --tokenizer DIR (a tokenizer or pipeline folder, or open_clip's BPE .gz)")
        }
    }

    /// The tokenizer, text encoder and VAE: from `pipeline`, else the bundle's, else `model`'s.
    func components(sampler: RoutedSampler) throws -> TextToImageComponents {
        if case .bundle(let bundle) = sampler.experts, pipeline == nil {
            guard bundle.hasComponents else {
                throw CommandFailure("\(model) carries no tokenizer, text encoder and VAE: export it with --pipeline, or give --pipeline DIR (the pipeline it was compressed from)")
            }
            do { return try TextToImageComponents(bundle: bundle) } catch { throw CommandFailure(error.description) }
        }
        let source = pipeline ?? model
        var text = CLIPTextLoadOptions()
        text.heads = heads
        var vae = VAELoadOptions()
        vae.configPath = vaeConfig
        if let tokenizer {
            let t: CLIPTokenizer
            do { t = try CLIPTokenizer(path: tokenizer) } catch { throw CommandFailure(error.description) }
            do { return try TextToImageComponents(singleFile: source, tokenizer: t, tokenizerSource: tokenizer, textEncoder: text, vae: vae) } catch {
                throw CommandFailure(error.description.replacingOccurrences(of: "give the number of heads", with: "pass --heads"))
            }
        }
        do { return try TextToImageComponents(pipeline: source, textEncoder: text, vae: vae) } catch { throw CommandFailure(error.description) }
    }

    /// The whole text-to-image pipeline: `sampler()` with `components(sampler:)`.
    func textToImagePipeline() throws -> TextToImagePipeline {
        try checkTokenizerSource()
        let sampler = try sampler()
        let components = try components(sampler: sampler)
        do { return try TextToImagePipeline(components: components, sampler: sampler) } catch { throw CommandFailure(error.description) }
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
}
