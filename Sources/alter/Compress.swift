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
            with the UNet frozen; after that the noise-free decisions are frozen and only the UNet trains.

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

    @Option(help: "Number of temporal experts.")
    var experts = 10

    @Option(help: "Target kept fraction of total UNet MACs, averaged over the 1000 training timesteps, in (0, 1].")
    var keep = 0.65

    @Option(help: "Training steps (iterations).")
    var steps: Int?

    @Option(help: "Steps with a hypernetwork update (then the masks are frozen). Default: 30% of --steps, as the paper's schedule.")
    var hypernetSteps: Int?

    @Option(help: "Samples per step.")
    var batch = 1

    @Option(help: "UNet learning rate (AdamW).")
    var lrUnet = 1e-5

    @Option(help: "Hypernetwork learning rate (AdamW).")
    var lrHypernet = 7e-5

    @Option(help: "Linear learning-rate warm-up steps. Default: min(250, steps/10).")
    var warmup: Int?

    @Option(help: "Routing: learned (ALTER), intervals (equal fixed timestep intervals) or static (one mask for all timesteps).")
    var routing: ALTERSettings.Routing = .learned

    @Option(help: "Loss weight of output distillation.")
    var outputKdWeight = 1.0

    @Option(help: "Loss weight of feature distillation (block outputs).")
    var featureKdWeight = 1.0

    @Option(help: "Loss weight of the denoising loss (paper: 1e-4; 0 drops it).")
    var denoiseWeight = 1e-4

    @Option(help: "Loss weight of the MAC ratio loss.")
    var ratioWeight = 5.0

    @Option(help: "Loss weight of the expert balance loss.")
    var balanceWeight = 1.0

    @Option(help: "The model's prediction type, for the denoising loss.")
    var predictionType: PredictionType = .epsilon

    @Option(help: "Random seed (data order, timesteps, noise, hypernetwork initialisation).")
    var seed: UInt64 = 0

    @Option(help: "Write a checkpoint every this many steps (0: only on Ctrl-C and at the end).")
    var checkpointEvery = 0

    @Option(name: .shortAndLong, help: "Run directory to create (must not exist or be empty).")
    var output: String?

    @Option(help: "Continue the run in this directory from its last checkpoint (with --steps, extend it).")
    var resume: String?

    @OptionGroup var modelOptions: ModelOptions

    func validate() throws {
        if resume == nil {
            guard model != nil else { throw ValidationError("give the MODEL to compress (or --resume RUN)") }
            guard data != nil else { throw ValidationError("give the training data with --data FILE") }
            guard steps != nil else { throw ValidationError("give the number of training steps with --steps N") }
            guard output != nil else { throw ValidationError("give the run directory with -o RUN") }
        } else if output != nil || model != nil {
            throw ValidationError("--resume RUN continues that run; MODEL and -o are taken from its config.json")
        }
    }

    func run() throws {
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
            // Paths are stored absolute, so --resume and export work from any directory.
            func absolute(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.path }
            config = CompressionConfig(model: absolute(model!), data: absolute(data!), steps: steps!,
                                       hypernetSteps: hypernetSteps ?? Int((Double(steps!) * 0.3).rounded()))
            var s = ALTERSettings()
            s.experts = experts
            s.keep = keep
            s.routing = routing
            s.learningRateUNet = lrUnet
            s.learningRateHypernet = lrHypernet
            s.warmupSteps = warmup ?? min(250, steps! / 10)
            s.outputKDWeight = outputKdWeight
            s.featureKDWeight = featureKdWeight
            s.denoiseWeight = denoiseWeight
            s.ratioWeight = ratioWeight
            s.balanceWeight = balanceWeight
            config.settings = s
            config.batch = batch
            config.seed = seed
            config.checkpointEvery = checkpointEvery
            config.predictionType = predictionType == .epsilon ? .epsilon : .vPrediction
            config.ema = modelOptions.ema
            config.variant = modelOptions.variant
            config.configPath = modelOptions.config.map(absolute)
            dir = RunDirectory(path: output!)
        }
        do { try config.validate() } catch { throw CommandFailure("\(error)") }

        var load = modelOptions.loadOptions
        load.ema = config.ema
        load.variant = config.variant
        load.configPath = config.configPath
        let trainer: ALTERTrainer
        do {
            let trainingData = try TrainingData(contentsOf: URL(fileURLWithPath: config.data))
            let checkpoint = try UNetCheckpoint(path: config.model, options: load)
            let teacher = try UNet(checkpoint: checkpoint)
            let student = try UNet(checkpoint: checkpoint)
            trainer = try ALTERTrainer(config: config, student: student, teacher: teacher, data: trainingData)
        } catch { throw CommandFailure("\(error)") }

        let stop = StopRequest.install()
        do {
            if resume != nil {
                let at = try dir.restoreCheckpoint(into: trainer)
                try dir.truncateMetrics(after: at)
                try dir.writeJSON(config, to: dir.configPath)
                printError("resuming \(dir.path) at step \(at) of \(config.steps)")
            } else {
                try dir.create(config: config)
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
                throw ExitCode(130)
            case .finished:
                let final = try dir.readDecisions()
                printError(String(format: "done: kept %.4f of the dense MACs (target %.3f); experts serve %@ timesteps; wrote %@/final",
                                  final.keptFraction, config.settings.keep,
                                  final.expertShares.map { String(Int(($0 * 1000).rounded())) }.joined(separator: "/"), dir.path))
            }
        } catch let e as CompressionError { throw CommandFailure(e.description) }
    }
}

extension ALTERSettings.Routing: ExpressibleByArgument {}

