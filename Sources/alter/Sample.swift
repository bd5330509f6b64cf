import ArgumentParser
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw images from prompts, or sample latents from a context file: a bundle's experts per timestep, or a model dense.",
        discussion: """
            From prompts (--prompt, repeatable, or --prompts FILE): the prompts are tokenized and encoded as diffusers' \
            StableDiffusionPipeline does (the negative prompt, default "", when --guidance is above 1), the latents \
            denoised as below, decoded by the VAE and written as PNG: -o out.png for one image, else one file per \
            prompt and seed named out-pI-sSEED.png (I: the prompt's position), or one grid with --grid (a row per \
            prompt, a column per seed). Each image starts from noise drawn from its own seed alone ([1,4,h,w]), so an \
            image depends only on its prompt, negative prompt and seed. The tokenizer, text encoder and VAE come from \
            --pipeline when given, else from the bundle (alter export --pipeline), else from MODEL (a pipeline folder, \
            or an original SD2.x single file with --tokenizer). --height and --width are pixels (multiples of the \
            VAE's factor, 8 for SD). --latents FILE also writes the final latents. --batch N images (default 8) are denoised together, one UNet \
            call per step on all of them (their noise still drawn from each image's own seed): the same images \
            up to rounding (within one level of 8 bits), more images per second. --prompts FILE: one prompt per line, \
            or JSON lines {"prompt": ..., "negative_prompt": ...} when the name ends in .jsonl.

            From a context file (--context): the latents are written to -o (.safetensors) and not decoded.

            From seeded Gaussian noise [B,4,h,w], each scheduler timestep makes one UNet call on 2B samples \
            (the unconditional context for the first B, the prompt context for the last B), combines \
            guided = uncond + g * (cond - uncond) and steps the scheduler (--guidance 1: no unconditional half, \
            B samples per call). With a bundle, the expert routed for the timestep runs and its skipped units \
            are not computed (both halves share it); its scheduler config and prediction type are the bundle's. \
            With a model every call is dense; the scheduler config is --scheduler-config, else the pipeline's \
            scheduler_config.json when MODEL is a pipeline folder, else SD2.1's (scaled_linear 0.00085..0.012, \
            1000 timesteps, steps_offset 1, each sampler's diffusers default spacing), with --prediction-type \
            overriding its prediction type (default: the config's, else epsilon, as for compress; SD2.1 768-v \
            needs v_prediction). pndm makes steps + 1 UNet calls.

            --context holds `context` [B,S,D] or [S,D] (D: the model's cross_attention_dim); a training-data \
            file (formats/training-data.md) works as it is (its `context` and `uncond`). The unconditional \
            context is `uncond` [S,D] (or [B,S,D]) from --uncond, else the context file's `uncond` if it has \
            one, else zeros of shape [S,D] (diffusers uses the encoded empty prompt: pass it for real models).

            The noise comes from --seed (SplitMix64 and Box-Muller: the same on every machine, not torch.randn; \
            with --context one seed for the whole [B,4,h,w] batch). --height/--width are pixels here too (the latent \
            size is a eighth of them; --latent gives it directly). The output holds `latents` [B,4,h,w] F32 (undecoded: multiply by 1/vae_scaling_factor and run the \
            VAE decoder to get images), with metadata: scheduler, steps, guidance, seed, prediction type, \
            latent size, the timestep and expert of each UNet call. A progress line is drawn on a terminal.
            """)

    @Argument(help: "A bundle (NAME.alter) or a checkpoint (folder or .safetensors).")
    var model: String

    @Flag(help: "Write one grid image (a row per prompt, a column per seed) instead of one file per image.")
    var grid = false

    @Option(help: "Also write the final latents of every image to this .safetensors file.")
    var latents: String?

    @Option(help: "Safetensors file with `context` [B,S,D] or [S,D] (and optionally `uncond`): sample latents instead of images.")
    var context: String?

    @Option(help: "Safetensors file with `uncond` [S,D]. Default: the context file's `uncond`, else zeros.")
    var uncond: String?

    @Option(help: "Comma-separated rows of a [N,S,D] context to sample (default: all).")
    var rows: CommaList<Int>?

    @Option(help: "Sampler: ddim, pndm or euler (or METHOD:STEPS).")
    var scheduler = SchedulerChoice(method: .pndm)

    @Option(help: "Inference steps (default: 20, or the count of --scheduler METHOD:STEPS).")
    var steps: Int?

    @Option(help: "Guidance scale (1: conditional only).")
    var guidance: Float = 7.5

    @Option(help: "Seed(s) of the initial noise, comma-separated: one image per prompt and seed (--context: one seed).")
    var seed = CommaList<UInt64>([0])

    @Option(help: "Latent height and width (default: the bundle's MAC latent size, or the model's sample_size).")
    var latent: Int?

    @Option(help: "Image height in pixels (instead of --latent; the latent is a eighth, or the VAE's factor, of it).")
    var height: Int?

    @Option(help: "Image width in pixels (instead of --latent).")
    var width: Int?

    @Option(help: "Models only: the prediction type (default: the scheduler config's, else epsilon).")
    var predictionType: NoiseSchedule.PredictionType?

    @Option(help: "Models only: a diffusers scheduler_config.json to use.")
    var schedulerConfig: String?

    @Option(name: .shortAndLong, help: "Output: a .png image (prompts), or a .safetensors latents file (--context).")
    var output: String

    @Flag(help: "Replace an existing output file (never one of the inputs).")
    var force = false

    @Flag(help: "Print the run as JSON on stdout (prompts: every image, stage seconds and MACs; --context: every UNet call).")
    var json = false

    @OptionGroup var promptOptions: PromptOptions

    @OptionGroup var components: ComponentOptions

    @OptionGroup var modelOptions: ModelOptions

    func validate() throws {
        try ArgumentBounds.latent(latent, flag: "--latent")
        for (name, v) in [("--height", height), ("--width", width)] {
            try ArgumentBounds.check(v, in: 1...(Bounds.latentSide.upperBound * 8), flag: name)
        }
        if let given = scheduler.steps, let steps, given != steps {
            throw ValidationError("--scheduler \(scheduler.defaultValueDescription) says \(given) steps and --steps says \(steps); give one")
        }
        _ = try scheduler.kind(steps: steps ?? 20)
    }

    func run() throws {
        // Checked here, after unknown options are reported: a misspelt --width is not "missing".
        if latent != nil && (height != nil || width != nil) { throw ValidationError("give --latent or --height/--width, not both") }
        if (height == nil) != (width == nil) { throw ValidationError("give both --height and --width") }
        let drawing = promptOptions.isGiven
        if drawing {
            guard context == nil, uncond == nil, rows == nil else {
                throw ValidationError("--context, --uncond and --rows sample latents; --prompt/--prompts draw images: give one kind")
            }
            try drawImages()
            return
        }
        guard let context else { throw ValidationError("give --prompt, --prompts FILE or --context FILE") }
        for (flag, given) in [("--negative-prompt", promptOptions.negativePrompt != nil), ("--batch", promptOptions.batch != nil)] + components.given
            + [("--grid", grid), ("--latents", latents != nil)] where given {
            throw ValidationError("\(flag) applies to drawing from prompts (--prompt/--prompts), not to --context")
        }
        guard seed.values.count == 1 else { throw ValidationError("--context samples one batch: give one --seed") }
        if let h = height, let w = width, h % 8 != 0 || w % 8 != 0 {
            throw ValidationError("--height \(h) --width \(w): with --context they must be multiples of 8 (SD's VAE factor; or give --latent)")
        }
        let kind = try scheduler.kind(steps: steps ?? 20)
        let lock = try prepareOutputFile(output, force: force, inputs: [model, context, uncond, schedulerConfig, modelOptions.config])
        defer { lock.release() }
        let start = Date()
        let sampler = try makeSampler()
        for n in sampler.notes { printError("note: \(n)") }
        let inputs: SamplingInputs
        do { inputs = try SamplingInputs.read(context: context, uncond: uncond, rows: rows?.values, config: sampler.unet.config) } catch {
            throw CommandFailure("\(error)")
        }
        var options = RoutedSampler.Options(scheduler: kind)
        options.guidance = guidance
        options.seed = seed.values[0]
        options.latentHeight = height.map { $0 / 8 } ?? latent
        options.latentWidth = width.map { $0 / 8 } ?? latent
        let loaded = Date()

        let line = isatty(STDERR_FILENO) == 1
        var drawn = false
        let result: Sampler.Result
        do {
            result = try sampler.sample(context: inputs.context, uncond: inputs.uncond, options: options) { call, total in
                guard line else { return }
                let elapsed = Date().timeIntervalSince(loaded)
                let eta = elapsed / Double(call.index + 1) * Double(total - call.index - 1)
                let expert = call.expert.map { "expert \($0)" } ?? "dense"
                FileHandle.standardError.write(Data(String(format: "\rsample: call %d/%d  t=%g  %@  %.2f s  ETA %.0f s   ",
                                                           call.index + 1, total, call.timestep, expert, call.seconds, eta).utf8))
                drawn = true
            }
        } catch {
            let flag = latent != nil ? "--latent" : nil
            throw CommandFailure(ArgumentBounds.message("\(error)", flags: ["latent_height": flag ?? "--height / 8", "latent_width": flag ?? "--width / 8"]))
        }
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
        let sampled = Date()

        let uncondLabel = inputs.uncondFile ?? "zeros"
        Interrupts.installCleanupHandler()
        do { try sampler.writeLatents(result, model: model, options: options, uncond: uncondLabel, to: output) } catch {
            throw CommandFailure("\(error)")
        }

        let report = SamplingReport(result: result, sampler: sampler, model: model, options: options, uncond: uncondLabel, output: output,
                                    loadSeconds: loaded.timeIntervalSince(start), sampleSeconds: sampled.timeIntervalSince(loaded))
        if json {
            try writeJSON(report)
        } else {
            var counts: [String: Int] = [:]
            for e in result.calls.map({ $0.expert.map(String.init) ?? "dense" }) { counts[e, default: 0] += 1 }
            let usage = counts.keys.sorted { (Int($0) ?? -1) < (Int($1) ?? -1) }.map { "\($0 == "dense" ? "dense" : "expert " + $0) x\(counts[$0] ?? 0)" }
            printError(String(format: "wrote %@: %d latents %dx%d, %@ (%d UNet calls at batch %d, guidance %g, uncond %@), load %.1f s, sampling %.1f s; %@; MACs %.3f of dense",
                              output, report.batch, report.latent[0], report.latent[1], kind.description, result.calls.count,
                              result.calls.first?.batch ?? 0, guidance, uncondLabel, report.loadSeconds, report.sampleSeconds,
                              usage.joined(separator: ", "), report.keptMACFraction))
        }
    }

    /// How MODEL and its components load (shared with `eval`).
    var loader: DrawingModelLoader {
        components.loader(model, predictionType: predictionType, schedulerConfig: schedulerConfig, loadOptions: modelOptions.loadOptions)
    }

    /// The denoiser of MODEL (`DrawingModelLoader.sampler`).
    func makeSampler() throws -> RoutedSampler { try loader.sampler() }
}
