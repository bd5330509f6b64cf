import ALTER
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion

/// Exports a finished ALTER run (formats/run-directory.md) as a bundle: the run's fine-tuned UNet
/// (`final/unet`), its noise-free decisions (`final/decisions.json`), the prediction type and
/// source model from its `config.json`.
public enum RunExporter {
    public struct Options: Sendable {
        /// Storage dtype and whether an existing bundle may be replaced.
        public var bundle = BundleWriter.Options()
        /// Where MACs are counted: (height, width, context length); default the run's training data.
        public var macSize: (height: Int, width: Int, context: Int)?
        /// A diffusers pipeline folder, or an original SD2.x single file, whose tokenizer, text
        /// encoder and VAE the bundle carries (format version 3); nil: none.
        public var pipeline: String?
        /// The tokenizer folder to carry instead of the pipeline's (needed with a single file).
        public var tokenizer: String?
        /// The text encoder's attention heads when an original file's width does not tell them.
        public var heads: Int?
        /// A diffusers VAE config.json replacing the pipeline's or the one inferred from an original file.
        public var vaeConfig: String?
        public init() {}
    }

    /// Writes the bundle of `run` at `destination`. `progress` receives short messages.
    @discardableResult
    public static func export(run: RunDirectory, to destination: String, options: Options = Options(),
                              progress: (String) -> Void = { _ in }) throws(BundleError) -> BundleManifest {
        let config: CompressionConfig, final: FinalDecisions
        do {
            config = try run.readConfig()
            final = try run.readDecisions()
        } catch { throw BundleError(run.path, error.description) }
        let unet: UNetCheckpoint
        do { unet = try UNetCheckpoint(path: run.finalPath + "/unet") } catch { throw BundleError(run.finalPath + "/unet", "\(error)") }
        var bundleOptions = options.bundle
        bundleOptions.inputs += [run.path, config.model, config.data] + [config.configPath, options.pipeline, options.tokenizer, options.vaeConfig].compactMap { $0 }
        let lock = try BundleWriter.prepareDestination(destination, options: bundleOptions, unet: unet)
        defer { lock.release() }
        guard final.decisions.units == unet.config.units().map(\.name) else {
            throw BundleError(run.decisionsPath, "units do not match the architecture of \(run.finalPath)/unet")
        }
        let size = options.macSize ?? (final.latentHeight, final.latentWidth, final.contextLength)
        do { _ = try LatentSize(height: size.height, width: size.width, contextLength: size.context, config: unet.config) } catch {
            throw BundleError(options.macSize == nil ? run.decisionsPath : destination, "MACs: \(error)")
        }
        var components: PipelineComponents?
        if let pipeline = options.pipeline {
            progress("reading the pipeline components of \(pipeline)")
            components = try PipelineComponents(pipeline: pipeline, tokenizer: options.tokenizer, heads: options.heads, vaeConfig: options.vaeConfig)
        } else if let t = options.tokenizer {
            throw BundleError(t, "a tokenizer is carried only with the pipeline's text encoder and VAE (--pipeline)")
        }
        progress("hashing the source model \(config.model)")
        let source = try BundleWriter.source(model: config.model, variant: config.variant)
        var contents = BundleWriter.Contents(
            unet: unet, decisions: final.decisions, predictionType: config.predictionType,
            scheduler: BundleWriter.schedulerConfig(model: config.model, variant: config.variant, predictionType: config.predictionType),
            source: source, macLatentHeight: size.height, macLatentWidth: size.width, macContextLength: size.context)
        contents.components = components
        return try BundleWriter.write(contents, to: destination, options: bundleOptions, lock: lock, progress: progress)
    }
}
