import ALTER
import ArgumentParser
import Foundation
import SafeTensors
import StableDiffusion

struct Compress: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compress a UNet with ALTER: fine-tune it jointly with a hypernetwork that prunes units per temporal expert.",
        discussion: """
            One run fine-tunes the UNet (the student, initialised from MODEL) by output and feature \
            distillation from the frozen original (the teacher), while a hypernetwork learns which units each \
            of --experts temporal experts keeps and a router learns which expert serves each of the 1000 \
            training timesteps, so that on average --keep of the UNet's MACs remain. Each step: a UNet step \
            with the current hard mask table; during the first --hypernet-steps steps also a hypernetwork step \
            with the UNet frozen; after that the noise-free decisions are projected onto --keep (within 0.01, \
            re-choosing units by the ranking of their logits when needed), frozen, and only the UNet trains.

            --data is a safetensors file with `latents` [N,4,h,w] and `context` [N,S,D] (formats/training-data.md). \
            The run directory gets config.json, metrics.jsonl (one line per step), checkpoint/ (every \
            --checkpoint-every steps, on Ctrl-C and at the end) and, at the end, final/unet (a diffusers UNet \
            folder) and final/decisions.json (kept units per expert, expert per timestep, kept MACs). \
            --resume RUN continues a stopped run and gives the same result as an uninterrupted one.
            """)

    @Argument(help: "The model to compress (any layout `alter inspect` reads). Not needed with --resume.")
    var model: String?

    @Option(help: "Training data: safetensors with latents [N,4,h,w] and context [N,S,D].")
    var data: String?

    @Option(parsing: .unconditional, help: "Number of temporal experts.")
    var experts = ALTERSettings().experts

    @Option(parsing: .unconditional, help: "Target kept fraction of total UNet MACs, averaged over the 1000 training timesteps, in (0, 1]; the frozen decisions meet it within 0.01.")
    var keep = ALTERSettings().keep

    @Option(parsing: .unconditional, help: "Training steps (iterations).")
    var steps: Int?

    @Option(parsing: .unconditional, help: "Steps with a hypernetwork update (then the masks are frozen). Default: 30% of --steps, rounded (the paper's 2 of about 6.8 epochs).")
    var hypernetSteps: Int?

    @Option(parsing: .unconditional, help: "Samples per step.")
    var batch = 1

    @Option(parsing: .unconditional, help: "UNet learning rate (AdamW).")
    var lrUnet = ALTERSettings().learningRateUNet

    @Option(parsing: .unconditional, help: "Hypernetwork learning rate (AdamW).")
    var lrHypernet = ALTERSettings().learningRateHypernet

    @Option(parsing: .unconditional, help: "Linear learning-rate warm-up steps. Default: min(250, steps/10).")
    var warmup: Int?

    @Option(help: "Routing: learned (ALTER's router), intervals (equal fixed timestep intervals), static (one mask for all timesteps) or segments (one contiguous interval per expert with learned lengths; docs/method.md).")
    var routing: ALTERSettings.Routing = .learned

    @Option(parsing: .unconditional, help: "Loss weight of output distillation.")
    var outputKdWeight = ALTERSettings().outputKDWeight

    @Option(parsing: .unconditional, help: "Loss weight of feature distillation (block outputs).")
    var featureKdWeight = ALTERSettings().featureKDWeight

    @Option(parsing: .unconditional, help: "Loss weight of the denoising loss (paper: 1e-4; 0 drops it).")
    var denoiseWeight = ALTERSettings().denoiseWeight

    @Option(parsing: .unconditional, help: "Loss weight of the MAC ratio loss.")
    var ratioWeight = ALTERSettings().ratioWeight

    @Option(parsing: .unconditional, help: "Loss weight of the expert balance loss.")
    var balanceWeight = ALTERSettings().balanceWeight

    @Option(parsing: .unconditional, help: "Loss weight of guidance distillation: every sample also runs with the data's `uncond`, and the student's classifier-free-guided output at --guidance-kd-scale is distilled from the teacher's (docs/method.md; twice the compute per step). 0: off; needs `uncond` in --data.")
    var guidanceKdWeight = ALTERSettings().guidanceKDWeight

    @Option(parsing: .unconditional, help: "The guidance scale of --guidance-kd-weight's term (the scale the model will be sampled with).")
    var guidanceKdScale = ALTERSettings().guidanceKDScale

    @Option(parsing: .unconditional, help: "Loss weight of the routing smoothness term (learned routing): about the number of sharp expert switches along the timesteps, so that routing tables come out in fewer contiguous segments (docs/method.md). 0: off.")
    var smoothnessWeight = ALTERSettings().smoothnessWeight

    @Option(parsing: .unconditional, help: "Probability that a sample's caption is dropped: its context replaced by the data's `uncond` (the empty prompt) for the student and the teacher, so that the unconditional prediction classifier-free guidance uses is distilled too (docs/method.md). 0: never; needs `uncond` in --data.")
    var captionDropout = ALTERSettings().captionDropout

    @Option(help: "The model's prediction type, for the denoising loss and the bundle (SD2.1 768-v: v_prediction).")
    var predictionType: NoiseSchedule.PredictionType = .epsilon

    @Option(help: "Random seed (data order, timesteps, noise, hypernetwork initialisation).")
    var seed: UInt64 = 0

    @Option(parsing: .unconditional, help: "Also write a checkpoint every this many steps (0: off).")
    var checkpointEvery = 0

    @Option(parsing: .unconditional, help: "Write a checkpoint when this many minutes have passed since the last one (0: off; checkpoints are also written on Ctrl-C, SIGTERM and at the end).")
    var checkpointMinutes = CompressionConfig.defaultCheckpointMinutes

    @Option(name: .shortAndLong, help: "Run directory to create (must not exist or be empty).")
    var output: String?

    @Option(help: "Continue the run in this directory from its last checkpoint (with --steps, extend it).")
    var resume: String?

    @Option(help: "Also write what the run draws at random (batch indices, timesteps, noise, Gumbel noise) and each step's losses, gradient norms and decisions to this safetensors file (formats/record-draws.md), for another trainer to replay. New runs only.")
    var recordDraws: String?

    @Option(parsing: .unconditional, help: "With --record-draws: record the first N steps (default: all).")
    var recordSteps: Int?

    @OptionGroup var modelOptions: ModelOptions

    /// The flag of each configuration field (CompressionError.field) a user sets.
    static let flags = [
        "experts": "--experts", "keep": "--keep", "steps": "--steps", "hypernet_steps": "--hypernet-steps", "batch": "--batch",
        "lr_unet": "--lr-unet", "lr_hypernet": "--lr-hypernet", "warmup_steps": "--warmup", "checkpoint_every": "--checkpoint-every",
        "checkpoint_minutes": "--checkpoint-minutes", "output_kd_weight": "--output-kd-weight", "feature_kd_weight": "--feature-kd-weight",
        "denoise_weight": "--denoise-weight", "ratio_weight": "--ratio-weight", "balance_weight": "--balance-weight",
        "caption_dropout": "--caption-dropout", "smoothness_weight": "--smoothness-weight",
        "guidance_kd_weight": "--guidance-kd-weight", "guidance_kd_scale": "--guidance-kd-scale",
    ]

    /// A configuration error in terms of this command's flags (fields without a flag keep their
    /// `config.json` name).
    static func message(_ e: CompressionError) -> String {
        flags.reduce(e.description) { $0.replacingOccurrences(of: "`\($1.key)`", with: $1.value) }
    }

    /// The configuration of a new run from the options (paths made absolute, so --resume and export work from any directory).
    func newConfig() -> CompressionConfig? {
        guard let model, let data, let steps else { return nil }
        func absolute(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.path }
        var config = CompressionConfig(model: absolute(model), data: absolute(data), steps: steps, hypernetSteps: hypernetSteps, warmupSteps: warmup)
        config.settings.experts = experts
        config.settings.keep = keep
        config.settings.routing = routing
        config.settings.learningRateUNet = lrUnet
        config.settings.learningRateHypernet = lrHypernet
        config.settings.outputKDWeight = outputKdWeight
        config.settings.featureKDWeight = featureKdWeight
        config.settings.denoiseWeight = denoiseWeight
        config.settings.ratioWeight = ratioWeight
        config.settings.balanceWeight = balanceWeight
        config.settings.captionDropout = captionDropout
        config.settings.smoothnessWeight = smoothnessWeight
        config.settings.guidanceKDWeight = guidanceKdWeight
        config.settings.guidanceKDScale = guidanceKdScale
        config.batch = batch
        config.seed = seed
        config.checkpointEvery = checkpointEvery
        config.checkpointMinutes = checkpointMinutes
        config.predictionType = predictionType
        config.ema = modelOptions.ema
        config.variant = modelOptions.variant
        config.configPath = modelOptions.config.map(absolute)
        return config
    }

    func validate() throws {
        if resume == nil {
            do { try newConfig()?.validate() } catch { throw ValidationError(Self.message(error)) }
        } else if output != nil || model != nil {
            throw ValidationError("--resume RUN continues that run; MODEL and -o are taken from its config.json")
        }
        if recordDraws != nil, resume != nil { throw ValidationError("--record-draws records a run from its start; it cannot be used with --resume") }
        if recordSteps != nil, recordDraws == nil { throw ValidationError("--record-steps needs --record-draws FILE") }
        if let recordSteps, recordSteps < 0 { throw ValidationError("--record-steps must not be negative, got \(recordSteps)") }
    }

    /// Options a new run cannot do without. Checked in `run()`, after ArgumentParser has reported
    /// unknown options: a misspelt option is named as such, not as a missing one.
    func checkRequired() throws {
        guard resume == nil else { return }
        guard model != nil else { throw ValidationError("give the MODEL to compress (or --resume RUN)") }
        guard data != nil else { throw ValidationError("give the training data with --data FILE") }
        guard steps != nil else { throw ValidationError("give the number of training steps with --steps N") }
        guard output != nil else { throw ValidationError("give the run directory with -o RUN") }
    }

    /// The projection onto the budget (docs/method.md): distances before and after, and warnings
    /// when the hypernetwork phase hardly moved the decisions or the units are too coarse.
    static func printProjection(_ p: BudgetProjection) {
        printError(String(format: "budget: the learned decisions kept %.4f (distance %.4f from --keep %.3f); projected onto the budget: %.4f (distance %.4f), %d of %d unit decisions changed",
                          p.learnedKeptFraction, p.learnedDistance, p.target, p.keptFraction, p.distance, p.changedUnitDecisions, p.unitDecisions))
        if p.hardlyMoved {
            printError(String(format: "warning: the hypernetwork phase hardly moved the decisions: it went %.0f%% of the way from the untrained hypernetwork's %.4f to the target %.3f (%d of %d unit decisions changed), so the projection, ranking units by barely trained logits, chose most of the pruning; give it more --hypernet-steps or a larger --lr-hypernet",
                              p.hypernetProgress * 100, p.initialKeptFraction, p.target, p.hypernetChangedUnitDecisions, p.unitDecisions))
        }
        if !p.withinTolerance {
            printError(String(format: "warning: the units are too coarse to meet --keep %.3f within %.2f: the closest kept fraction the projection reaches is %.4f",
                              p.target, p.tolerance, p.keptFraction))
        }
    }

    func run() throws {
        try checkRequired()
        var config: CompressionConfig
        let dir: RunDirectory
        if let resume {
            dir = RunDirectory(path: resume)
            do { config = try dir.readConfig() } catch { throw CommandFailure("\(error)") }
            if let steps {
                guard steps >= config.steps else { throw CommandFailure("--steps \(steps) is below the run's \(config.steps)") }
                config.steps = steps
            }
        } else {
            guard let c = newConfig(), let output else { throw ValidationError("give MODEL, --data, --steps and -o") }
            config = c
            dir = RunDirectory(path: output)
        }
        do { try config.validate() } catch { throw CommandFailure(Self.message(error)) }

        var load = modelOptions.loadOptions
        load.ema = config.ema
        load.variant = config.variant
        load.configPath = config.configPath
        let trainer: ALTERTrainer
        var recordLock: PathLock?
        defer { recordLock?.release() }
        var recorder: DrawRecorder?
        if let recordDraws {
            recordLock = try prepareOutputFile(recordDraws, force: false, inputs: [config.model, config.data, output])
            recorder = DrawRecorder(steps: min(recordSteps ?? config.steps, config.steps))
        }
        do {
            let trainingData = try TrainingData(contentsOf: URL(fileURLWithPath: config.data))
            let checkpoint = try UNetCheckpoint(path: config.model, options: load)
            let teacher = try UNet(checkpoint: checkpoint)
            let student = try UNet(checkpoint: checkpoint)
            trainer = try ALTERTrainer(config: config, student: student, teacher: teacher, data: trainingData, recorder: recorder)
        } catch let e as CompressionError { throw CommandFailure(Self.message(e)) } catch { throw CommandFailure("\(error)") }

        let stop = StopRequest.install()
        var lock: PathLock?
        defer { lock?.release() }
        do {
            if resume != nil {
                lock = try dir.lock()
                let at: Int
                if dir.hasCheckpoint {
                    at = try dir.restoreCheckpoint(into: trainer)
                    printError("resuming \(dir.path) at step \(at) of \(config.steps)")
                } else {
                    at = 0
                    printError("\(dir.path) has no checkpoint yet (the run was stopped before its first one): starting it again from step 0")
                }
                try dir.truncateMetrics(after: at)
                try dir.writeJSON(config, to: dir.configPath)
            } else {
                try dir.create(config: config)
                lock = try dir.lock()
                printError(String(format: "compressing %@: %d experts, keep %.3f of %@ MACs per call (%dx%d latent, %d tokens), %d steps (%d with the hypernetwork) -> %@",
                                  config.model, trainer.hypernet.experts, config.settings.keep, grouped(trainer.budget.totalMACs),
                                  trainer.data.latentHeight, trainer.data.latentWidth, trainer.data.contextLength,
                                  config.steps, config.hypernetSteps, dir.path))
            }
            let bar = TrainingProgress(total: config.steps, initial: trainer.step)
            let outcome = try trainer.run(in: dir, progress: { m in bar.update(m) }, shouldStop: { stop.requested })
            bar.finish()
            switch outcome {
            case .interrupted(let step):
                printError("stopped after step \(step); checkpoint written. Continue with: alter compress --resume \(dir.path)")
                throw ExitCode(stop.exitCode)
            case .finished:
                if let recorder, let recordDraws {
                    recorder.recordFinal(trainer.finalDecisions)
                    do { try recorder.write(to: recordDraws) } catch { throw CommandFailure("\(recordDraws): \(error)") }
                    printError("recorded the first \(recorder.steps) steps' draws and values in \(recordDraws)")
                }
                let final = try dir.readDecisions()
                if let p = final.budgetProjection { Self.printProjection(p) }
                if let segments = final.expertRoutingSegments {
                    printError("routing: \(segments.reduce(0, +)) contiguous timestep segments (per expert \(segments.map(String.init).joined(separator: "/")))")
                }
                printError(String(format: "done: kept %.4f of the dense MACs (target %.3f); experts serve %@ timesteps; wrote %@/final",
                                  final.keptFraction, config.settings.keep,
                                  final.expertShares.map { String(Int(($0 * 1000).rounded())) }.joined(separator: "/"), dir.path))
            }
        } catch let e as CompressionError {
            if case .nonFinite = e, isatty(STDERR_FILENO) != 0 { printError("") }
            throw CommandFailure(Self.message(e))
        }
    }
}

