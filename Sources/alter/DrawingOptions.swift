import ArgumentParser
import StableDiffusion
import TextToImage

/// The prompts of `sample` and `eval`.
struct PromptOptions: ParsableArguments {
    @Option(help: "A prompt to draw (repeat for several).")
    var prompt: [String] = []

    @Option(help: "A file of prompts: one per line, or JSON lines {\"prompt\": ..., \"negative_prompt\": ...} (.jsonl).")
    var prompts: String?

    @Option(help: "The negative prompt of every prompt (default: the empty prompt; used when --guidance is above 1).")
    var negativePrompt: String?

    @Option(help: ArgumentHelp("Images denoised together in one UNet call per step (default: \(PromptOptions.defaultBatch)); each image is as drawn alone, up to rounding.",
                               valueName: "n"))
    var batch: Int?

    /// The images denoised together when --batch is not given: on the example teacher (16x16
    /// latents) the images per second stop growing at about this size (BENCHMARKS.md).
    static let defaultBatch = 8

    /// --batch, or the default.
    var batchSize: Int { batch ?? Self.defaultBatch }

    func validate() throws {
        try ArgumentBounds.check(batch, in: 1...TextToImagePipeline.maxBatch, flag: "--batch")
    }

    /// Whether any prompt was given.
    var isGiven: Bool { !prompt.isEmpty || prompts != nil }

    /// The --prompt prompts, then those of --prompts FILE.
    func entries() throws -> [PromptEntry] {
        var entries = prompt.map { PromptEntry(prompt: $0) }
        if let prompts {
            do { entries += try PromptFile.read(path: prompts) } catch { throw CommandFailure(error.description) }
        }
        return entries
    }
}

/// Where `sample` and `eval` take the tokenizer, text encoder and VAE from.
struct ComponentOptions: ParsableArguments {
    @Option(help: "Take the tokenizer, text encoder and VAE from this pipeline folder or original single file (default: each model's own: a bundle's, a pipeline folder's, a single file's with --tokenizer).")
    var pipeline: String?

    @Option(help: "The tokenizer for an original single file (a tokenizer or pipeline folder, or open_clip's bpe_simple_vocab_16e6.txt.gz).")
    var tokenizer: String?

    @Option(help: "Attention heads of an original single file's text encoder (default: width / 64, as OpenCLIP).")
    var heads: Int?

    @Option(help: "A diffusers AutoencoderKL config.json for an original single file's VAE (default: inferred, SD's).")
    var vaeConfig: String?

    func validate() throws {
        if let heads, heads < 1 { throw ValidationError("--heads must be at least 1") }
    }

    /// The flags given, by name (for commands that refuse them in some mode).
    var given: [(String, Bool)] {
        [("--pipeline", pipeline != nil), ("--tokenizer", tokenizer != nil), ("--heads", heads != nil), ("--vae-config", vaeConfig != nil)]
    }

    /// The files these options read.
    var inputs: [String] { [pipeline, tokenizer, vaeConfig].compactMap { $0 } }

    /// The loader of `model` with these components.
    func loader(_ model: String, predictionType: NoiseSchedule.PredictionType?, schedulerConfig: String?, loadOptions: LoadOptions) -> DrawingModelLoader {
        DrawingModelLoader(model: model, pipeline: pipeline, tokenizer: tokenizer, heads: heads, vaeConfig: vaeConfig,
                           predictionType: predictionType, schedulerConfig: schedulerConfig, loadOptions: loadOptions)
    }
}
