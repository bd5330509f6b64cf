import ArgumentParser
import Foundation
import SafeTensors
import StableDiffusion

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's UNet (with --pipeline: UNet, VAE and text encoder) in the diffusers or the original layout, in fp32, fp16 or bf16.",
        discussion: """
            diffusers layout: a folder with config.json and diffusion_pytorch_model.safetensors, which \
            diffusers' UNet2DConditionModel.from_pretrained loads. original layout: one .safetensors file \
            with the UNet under model.diffusion_model.* (the VAE and text encoder are not copied). \
            Streams one tensor at a time; the output appears only when complete.

            --pipeline converts a whole SD2.x pipeline (UNet, VAE, text encoder): an original single file \
            becomes a diffusers pipeline folder (unet/, vae/, text_encoder/, tokenizer/ copied from \
            --tokenizer, scheduler/ as SD2.1's with --prediction-type, model_index.json; no safety checker \
            or feature extractor), which StableDiffusionPipeline.from_pretrained loads; a pipeline folder \
            becomes an original single file holding all three. The original text encoder's last resblock \
            is dropped (SD2.x reads the penultimate layer) and written back as an all-zero resblock. Every \
            tensor of the source is written or on an allow-list (EMA copies, LDM schedule buffers, \
            text_projection, logit_scale); --json lists what was left out.
            """)

    @Argument(help: "The checkpoint to read (folder or .safetensors).")
    var input: String

    @Option(name: .shortAndLong, help: "Output folder (diffusers layout) or .safetensors file (original layout).")
    var output: String

    @Option(help: "Layout to write: diffusers or original (default: the other layout than the input's).")
    var layout: CheckpointLayout?

    @Option(help: "Storage dtype: fp32, fp16 or bf16 (default: keep each tensor's dtype).")
    var dtype: DType?

    @Flag(help: "Replace the output if it exists.")
    var force = false

    @Flag(help: "Print a JSON summary.")
    var json = false

    @Flag(help: "Convert the whole pipeline (UNet, VAE, text encoder): original single file <-> diffusers pipeline folder.")
    var pipeline = false

    @Option(help: "With --pipeline, to a pipeline folder: a diffusers tokenizer folder (vocab.json, merges.txt) to copy into tokenizer/.")
    var tokenizer: String?

    @Flag(help: "With --pipeline, to a pipeline folder: write it without a tokenizer (model_index.json lists none).")
    var noTokenizer = false

    @Option(help: "With --pipeline, to a pipeline folder: the scheduler's prediction type (epsilon or v_prediction; an original file does not record it).")
    var predictionType: NoiseSchedule.PredictionType?

    @Option(help: "With --pipeline: a transformers CLIPTextConfig config.json for the text encoder instead of the one found or inferred.")
    var textEncoderConfig: String?

    @Option(help: "With --pipeline: a diffusers AutoencoderKL config.json for the VAE instead of the one found or inferred.")
    var vaeConfig: String?

    @OptionGroup var model: ModelOptions

    func validate() throws {
        if !pipeline, tokenizer != nil || noTokenizer || predictionType != nil || textEncoderConfig != nil || vaeConfig != nil {
            throw ValidationError("--tokenizer, --no-tokenizer, --prediction-type, --text-encoder-config and --vae-config apply with --pipeline")
        }
        if tokenizer != nil && noTokenizer { throw ValidationError("--tokenizer and --no-tokenizer exclude each other") }
    }

    func run() throws {
        if pipeline { return try runPipeline() }
        let start = Date()
        let ckpt: UNetCheckpoint
        do { ckpt = try UNetCheckpoint(path: input, options: model.loadOptions) } catch { throw CommandFailure(error.description) }
        if !ckpt.report.unused.isEmpty {
            printError("warning: \(ckpt.report.unused.count) unused UNet tensors (allowed by --allow-unused): \(ckpt.report.unused.prefix(5).joined(separator: ", "))\(ckpt.report.unused.count > 5 ? ", ..." : "")")
        }
        let target = layout ?? (ckpt.source.layout == .diffusers ? .original : .diffusers)
        Interrupts.installCleanupHandler()
        let bar = ProgressBar(label: "convert")
        var summary: ConversionSummary
        do {
            summary = try ckpt.convert(
                to: output, layout: target, dtype: dtype, overwrite: force,
                progress: bar.map { b in { done, total in b.update(done, total) } })
        } catch {
            bar?.finish()
            throw CommandFailure(error.description)
        }
        bar?.finish()
        summary.seconds = Date().timeIntervalSince(start)
        if json {
            try writeJSON(summary)
        } else {
            print("wrote \(output) (\(target.rawValue) layout, \(dtype?.defaultValueDescription ?? "dtypes as stored")): \(summary.tensors) tensors, \(formatBytes(summary.bytes)) in \(String(format: "%.2f", summary.seconds)) s")
        }
    }
}

extension Convert {
    private func runPipeline() throws {
        let start = Date()
        var load = PipelineLoadOptions()
        load.unet = model.loadOptions
        load.textEncoder.configPath = textEncoderConfig
        load.textEncoder.variant = model.variant
        load.vae.configPath = vaeConfig
        load.vae.variant = model.variant
        let checkpoint: PipelineCheckpoint
        do { checkpoint = try PipelineCheckpoint(path: input, options: load) } catch { throw CommandFailure(error.description) }
        let target: CheckpointLayout = checkpoint.layout == .original ? .diffusers : .original
        if let layout, layout != target {
            throw ValidationError("--pipeline converts \(input) (\(checkpoint.layout.rawValue) layout) to the \(target.rawValue) layout, not \(layout.rawValue)")
        }
        if target == .original, tokenizer != nil || noTokenizer || predictionType != nil {
            throw ValidationError("--tokenizer, --no-tokenizer and --prediction-type apply when writing a pipeline folder; an original file stores neither")
        }
        if !checkpoint.unused.isEmpty {
            printError("warning: \(checkpoint.unused.count) tensors no model reads (allowed by --allow-unused, not written): \(checkpoint.unused.prefix(5).joined(separator: ", "))\(checkpoint.unused.count > 5 ? ", ..." : "")")
        }
        var options = PipelineConversionOptions()
        options.dtype = dtype
        options.overwrite = force
        options.tokenizer = tokenizer
        options.withoutTokenizer = noTokenizer
        options.predictionType = predictionType
        Interrupts.installCleanupHandler()
        let bar = ProgressBar(label: "convert")
        var summary: PipelineConversionSummary
        do {
            summary = try checkpoint.convert(to: output, options: options, progress: bar.map { b in { done, total in b.update(done, total) } })
        } catch {
            bar?.finish()
            throw CommandFailure(error.description)
        }
        bar?.finish()
        summary.seconds = Date().timeIntervalSince(start)
        if json { return try writeJSON(summary) }
        print("wrote \(output) (\(target == .original ? "original single file" : "diffusers pipeline folder"), \(dtype?.defaultValueDescription ?? "dtypes as stored")): \(summary.tensors) tensors, \(formatBytes(summary.bytes)) in \(String(format: "%.2f", summary.seconds)) s")
        for p in summary.components {
            print("  \(p.component): \(p.tensors) tensors, \(formatBytes(p.bytes)) (config \(p.configOrigin))")
            for a in p.assumptions { print("    assumed \(a)") }
        }
        if let t = summary.tokenizer { print("  tokenizer: copied from \(t)") }
        if let p = summary.predictionType { print("  prediction type: \(p)\(target == .original ? " (not stored in the original layout)" : "")") }
        for d in summary.dropped { print("  left out: \(d.tensors.count) tensors: \(d.reason)") }
        for a in summary.added where !a.tensors.isEmpty { print("  added: \(a.tensors.count) tensors: \(a.reason)") }
    }
}
