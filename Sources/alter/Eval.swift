import ArgumentParser
import ExpertBundle
import Foundation
import Images
import SafeTensors
import StableDiffusion
import TextToImage

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure how close a candidate model's images come to a reference's: PSNR and SSIM per prompt and seed, MACs and time.",
        discussion: """
            Both models draw every prompt with every seed as `alter sample --prompt` does (each image from its own \
            seed's noise, the same negative prompt, guidance and image size): the reference dense with \
            --reference-scheduler and --reference-steps (default DDIM, 50 steps), the candidate with --scheduler and \
            --steps (default: the reference's). Each pair of 8-bit images is compared: PSNR in dB over every R, G, B \
            value with MAX 255 (identical images: infinite, printed "inf", null in JSON and left out of the mean, \
            which counts them apart), and SSIM as skimage.metrics.structural_similarity(channel_axis=2, \
            data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False) (Wang et al. 2004; \
            images need at least 11 pixels a side). Each model's UNet MACs per image (summed over its calls) and \
            wall time per image (denoising, and encode + denoise + decode; a batch's time shared equally by its \
            images) are reported with the ratio \
            candidate / reference.

            CANDIDATE: a bundle (its routed experts), or a pipeline folder or single file (dense; for example the \
            reference itself with fewer steps or another scheduler). --reference: a pipeline folder or an original \
            single file (a bundle is refused: the reference is dense). The tokenizer, text encoder and VAE of both \
            models come from --pipeline DIR|FILE when given (the same components for both: only the denoising \
            differs), else each model's own (a bundle's, exported with --pipeline; a pipeline folder's; a single \
            file's with --tokenizer). --config and the other model options, --prediction-type and \
            --scheduler-config apply to every checkpoint (not to a bundle, which carries its own). A dense model \
            without a scheduler config samples with SD2.1's schedule and epsilon prediction, as `sample` does.

            --batch N pairs (default 8) are drawn together: each model denoises N images in one UNet call per \
            step; every image is the same as drawn alone up to rounding (within one level of 8 bits).

            Prints a table (a row per prompt and seed, then the mean, standard deviation and minimum) or, with \
            --json, formats/cli-json.md's report. --images DIR also writes both images of every pair as \
            DIR/reference-pI-sSEED.png and DIR/candidate-pI-sSEED.png, and --side-by-side FILE one PNG with a row \
            per prompt and a reference | candidate pair of columns per seed (--force to replace). A progress line \
            is drawn on a terminal.
            """)

    @Argument(help: "The model to measure: a bundle (NAME.alter), or a pipeline folder or single file (dense).")
    var candidate: String

    @Option(help: "The dense reference: a pipeline folder or an original single file.")
    var reference: String

    @Option(help: "Seed(s) of the initial noise, comma-separated: one pair of images per prompt and seed.")
    var seed = CommaList<UInt64>([0])

    @Option(help: "The candidate's sampler: ddim, pndm or euler (or METHOD:STEPS; default: the reference's).")
    var scheduler: SchedulerChoice?

    @Option(help: "The candidate's inference steps (default: the reference's).")
    var steps: Int?

    @Option(help: "The reference's sampler: ddim, pndm or euler (or METHOD:STEPS).")
    var referenceScheduler = SchedulerChoice(method: .ddim)

    @Option(help: "The reference's inference steps (default: 50, or the count of --reference-scheduler METHOD:STEPS).")
    var referenceSteps: Int?

    @Option(help: "Guidance scale of both models (1: conditional only).")
    var guidance: Float = 7.5

    @Option(help: "Image height in pixels (default: the reference's sample_size times the VAE's factor).")
    var height: Int?

    @Option(help: "Image width in pixels.")
    var width: Int?

    @Option(help: "Dense models only: the prediction type (default: the scheduler config's, else epsilon).")
    var predictionType: NoiseSchedule.PredictionType?

    @Option(help: "Dense models only: a diffusers scheduler_config.json to use.")
    var schedulerConfig: String?

    @Option(help: "Also write both images of every pair into this folder (reference-pI-sSEED.png, candidate-pI-sSEED.png).")
    var images: String?

    @Option(help: "Also write one PNG with every pair side by side: a row per prompt, a reference | candidate pair of columns per seed.")
    var sideBySide: String?

    @Flag(help: "Replace existing image files in --images and --side-by-side.")
    var force = false

    @Flag(help: "Print the report as JSON on stdout (formats/cli-json.md).")
    var json = false

    @OptionGroup var promptOptions: PromptOptions

    @OptionGroup var components: ComponentOptions

    @OptionGroup var modelOptions: ModelOptions

    func validate() throws {
        for (name, v) in [("--height", height), ("--width", width)] {
            try ArgumentBounds.check(v, in: 1...(Bounds.latentSide.upperBound * 8), flag: name)
        }
        for (flag, choice, given) in [("--scheduler", scheduler, steps), ("--reference-scheduler", referenceScheduler, referenceSteps)] {
            if let named = choice?.steps, let given, named != given {
                throw ValidationError("\(flag) \(choice?.defaultValueDescription ?? "") says \(named) steps and the steps option says \(given); give one")
            }
        }
        _ = try referenceKind()
        _ = try candidateKind()
    }

    func referenceKind() throws -> SchedulerKind { try referenceScheduler.kind(steps: referenceSteps ?? 50) }

    func candidateKind() throws -> SchedulerKind {
        let r = try referenceKind()
        guard let scheduler else { return try SchedulerChoice(method: r.method).kind(steps: steps ?? r.steps) }
        return try scheduler.kind(steps: steps ?? r.steps)
    }

    func loader(_ model: String) -> DrawingModelLoader {
        components.loader(model, predictionType: predictionType, schedulerConfig: schedulerConfig, loadOptions: modelOptions.loadOptions)
    }

    func run() throws {
        if (height == nil) != (width == nil) { throw ValidationError("give both --height and --width") }
        guard !ExpertBundle.isBundle(reference) else {
            throw ValidationError("--reference \(reference) is a bundle: the reference is drawn dense; give a pipeline folder or a single file")
        }
        let entries = try promptOptions.entries()
        guard !entries.isEmpty else { throw ValidationError("give --prompts FILE or --prompt") }
        let seeds = seed.values
        guard entries.count * seeds.count <= TextToImagePipeline.maxImages else {
            throw ValidationError("\(entries.count) prompts x \(seeds.count) seeds is more than \(TextToImagePipeline.maxImages) pairs")
        }
        let inputs = [candidate, reference, promptOptions.prompts, schedulerConfig, modelOptions.config].compactMap { $0 } + components.inputs
        var files: [(reference: String, candidate: String)] = []
        if let images {
            let r = Sample.imageFiles(images + "/reference.png", promptCount: entries.count, seeds: seeds, alwaysIndexed: true)
            let c = Sample.imageFiles(images + "/candidate.png", promptCount: entries.count, seeds: seeds, alwaysIndexed: true)
            files = Array(zip(r, c))
            for path in r + c {
                do { try OutputTarget(path: path, kind: .file, replace: force, inputs: inputs).prepare() } catch { throw CommandFailure(error.description) }
            }
        }
        if let sideBySide {
            guard !files.contains(where: { $0.reference == sideBySide || $0.candidate == sideBySide }) else {
                throw ValidationError("--side-by-side \(sideBySide) is also one of the --images files")
            }
            do { try OutputTarget(path: sideBySide, kind: .file, replace: force, inputs: inputs).prepare() } catch { throw CommandFailure(error.description) }
        }

        let start = Date()
        let referencePipe = try loader(reference).textToImagePipeline()
        let candidatePipe = try loader(candidate).textToImagePipeline()
        for n in referencePipe.notes { printError("note: reference: \(n)") }
        for n in candidatePipe.notes { printError("note: candidate: \(n)") }
        var referenceOptions = RoutedSampler.Options(scheduler: try referenceKind())
        referenceOptions.guidance = guidance
        if let height, let width {
            do { (referenceOptions.latentHeight, referenceOptions.latentWidth) = try referencePipe.latentSize(height: height, width: width) } catch {
                throw ValidationError("--height/--width: \(error)")
            }
        }
        let evaluation = FidelityEvaluation(reference: referencePipe, referenceOptions: referenceOptions,
                                            candidate: candidatePipe, candidateOptions: RoutedSampler.Options(scheduler: try candidateKind()))
        let loaded = Date()

        let line = isatty(STDERR_FILENO) == 1
        var drawn = false
        let total = entries.count * seeds.count
        let result: FidelityResult
        do {
            result = try evaluation.run(entries, negativePrompt: promptOptions.negativePrompt, seeds: seeds, keepImages: images != nil || sideBySide != nil,
                                     batch: promptOptions.batchSize) { pair, side, call, calls in
                guard line else { return }
                let expert = call.expert.map { "expert \($0)" } ?? "dense"
                FileHandle.standardError.write(Data(String(format: "\reval: pair %d/%d  %@  call %d/%d  t=%g  %@  %.0f s   ",
                                                           min(pair + promptOptions.batchSize, total), total, side.rawValue, call.index + 1, calls, call.timestep, expert,
                                                           Date().timeIntervalSince(loaded)).utf8))
                drawn = true
            }
        } catch {
            throw CommandFailure(ArgumentBounds.message("\(error)", flags: ["latent_height": "--height (divided by the VAE's factor)",
                                                                             "latent_width": "--width (divided by the VAE's factor)"]))
        }
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }

        Interrupts.installCleanupHandler()
        do {
            for (pair, names) in zip(result.images, files) {
                try pair.reference.writePNG(to: names.reference, force: force, inputs: inputs)
                try pair.candidate.writePNG(to: names.candidate, force: force, inputs: inputs)
            }
            if let sideBySide {
                let cells = result.images.flatMap { [$0.reference, $0.candidate] }
                try RGBImage.grid(cells, rows: entries.count, cols: 2 * seeds.count).writePNG(to: sideBySide, force: force, inputs: inputs)
            }
        } catch { throw CommandFailure("\(error)") }

        let report = FidelityReport(result: result, evaluation: evaluation, referenceModel: reference, candidateModel: candidate, seeds: seeds,
                                    batch: promptOptions.batchSize,
                                    files: files, images: images, sideBySide: sideBySide, loadSeconds: loaded.timeIntervalSince(start))
        if json { try writeJSON(report) } else { print(Self.table(report)) }
    }

    /// The report as a text table: a row per pair, then mean, standard deviation and minimum.
    static func table(_ r: FidelityReport) -> String {
        func psnr(_ v: Double?) -> String { v.map { String(format: "%.3f", $0) } ?? "inf" }
        func opt(_ v: Double?, _ f: String) -> String { v.map { String(format: f, $0) } ?? "-" }
        func gmacs(_ m: Int) -> String { String(format: "%.4g", Double(m) / 1e9) }
        let header = ["prompt", "seed", "psnr_db", "ssim", "ref_gmacs", "cand_gmacs", "ref_s", "cand_s"]
        var rows: [[String]] = r.pairs.map { p in
            [String(p.promptIndex), String(p.seed), psnr(p.psnr), String(format: "%.6f", p.ssim),
             gmacs(p.reference.macs), gmacs(p.candidate.macs),
             String(format: "%.2f", p.reference.totalSeconds), String(format: "%.2f", p.candidate.totalSeconds)]
        }
        let infinite = r.psnr.infiniteCount > 0 ? " (\(r.psnr.infiniteCount) inf left out)" : ""
        rows.append(["mean", "", opt(r.psnr.mean, "%.3f"), opt(r.ssim.mean, "%.6f"), gmacs(r.reference.perImage.macs),
                     gmacs(r.candidate.perImage.macs), String(format: "%.2f", r.reference.perImage.totalSeconds),
                     String(format: "%.2f", r.candidate.perImage.totalSeconds)])
        rows.append(["std", "", opt(r.psnr.std, "%.3f"), opt(r.ssim.std, "%.6f"), "", "", "", ""])
        rows.append(["min", "", opt(r.psnr.min, "%.3f"), opt(r.ssim.min, "%.6f"), "", "", "", ""])
        let widths = header.indices.map { c in ([header] + rows).map { $0[c].count }.max() ?? 0 }
        func format(_ row: [String]) -> String {
            row.enumerated().map { c, v in c < 2 ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                                               : String(repeating: " ", count: widths[c] - v.count) + v }.joined(separator: "  ")
                .replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        var lines = [format(header)]
        lines += rows.map(format)
        let ref = r.reference, cand = r.candidate
        lines.append("")
        lines.append("reference: \(ref.model) (\(ref.isBundle ? "bundle" : "dense"), \(ref.scheduler) \(ref.steps) steps)")
        lines.append("candidate: \(cand.model) (\(cand.isBundle ? "bundle" : "dense"), \(cand.scheduler) \(cand.steps) steps)")
        lines.append(String(format: "%d pairs %dx%d, guidance %g; PSNR mean over %d finite%@", r.pairs.count, r.size[1], r.size[0],
                            r.guidance, r.psnr.count, infinite))
        lines.append(String(format: "per image, candidate / reference: MACs %.4f, denoise time %.3f (%.2f s / %.2f s), total time %.3f",
                            r.ratio.macs, r.ratio.denoiseSeconds, cand.perImage.denoiseSeconds, ref.perImage.denoiseSeconds,
                            r.ratio.totalSeconds))
        return lines.joined(separator: "\n")
    }
}
