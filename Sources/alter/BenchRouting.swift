import ALTER
import ALTERBench
import ArgumentParser
import Foundation
import NN
import StableDiffusion
import TensorCore

struct BenchRouting: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "routing",
        abstract: "Compare learned, interval and static routing: held-out output-KD loss at the same MAC target and step budget.",
        discussion: """
            For each routing mode and each seed, a fresh student and teacher are loaded and trained in memory \
            with identical settings (same steps, hypernetwork steps, learning rates, loss weights, batches and \
            timesteps), on all samples but the last --holdout. The report gives, per run, the kept fraction of \
            total UNet MACs of the final decisions (over the 1000 training timesteps) and the output-KD loss \
            (mean squared error of the routed, pruned student against the dense teacher) on --eval-samples \
            draws from the held-out samples, with timesteps evenly spread over 0..999 and the same evaluation \
            seed for every run.

            Default model and data: the example (examples/sd21-tiny.safetensors with \
            examples/sd21-tiny.config.json, examples/sd21-tiny-data.safetensors; run from the package root).

            --random-channels C0,C1,C2,C3 instead trains an SD2.1-structured UNet at deterministic random init \
            (seed --model-seed) with those block channels, 8 norm groups, attention heads of size 8 and \
            cross-attention width --context-dim, on synthetic data generated in memory: --samples samples of \
            [4, --latent, --latent] latents and [--context-tokens, --context-dim] contexts from \
            TrainingData.synthetic (seed --data-seed): each sample's "prompt" is two words of a 12-word \
            vocabulary, each word has a context vector and a smooth latent pattern; the latents are the sum of \
            the two patterns, a smooth per-sample variation and a little noise, standardised.

            --pretrain N first trains the model (all units, denoising loss only, --pretrain-lr, --pretrain-batch, \
            seed 0) for N steps on the training samples, never the held-out ones. A randomly initialised model \
            computes nearly the same function at every timestep, so which units matter does not depend on the \
            timestep and routing has nothing to learn; a model trained as a denoiser does depend on it.
            """)

    @Option(help: "The model (default: examples/sd21-tiny.safetensors, with --config examples/sd21-tiny.config.json).")
    var model: String?

    @Option(help: "Training data (default: examples/sd21-tiny-data.safetensors).")
    var data: String?

    @Option(help: "Random-init model with these block channels (e.g. 32,64,64,64) and synthetic data, instead of --model and --data.")
    var randomChannels: CommaList<Int>?

    @Option(help: "Seed of the random-init model.")
    var modelSeed: UInt64 = 21

    @Option(help: "Synthetic data: samples.")
    var samples = 64

    @Option(help: "Synthetic data: latent height and width.")
    var latent = 16

    @Option(help: "Synthetic data: context tokens.")
    var contextTokens = 5

    @Option(help: "Random model and synthetic data: context width (cross-attention dim).")
    var contextDim = 32

    @Option(help: "Seed of the synthetic data.")
    var dataSeed: UInt64 = 3103

    @Option(help: "First train the model as a plain denoiser (all units, denoising loss only) for this many steps on the training samples; the result is the teacher and the student initialisation of every run (0: off).")
    var pretrain = 0

    @Option(help: "Pre-training learning rate (AdamW).")
    var pretrainLr = 1e-3

    @Option(help: "Pre-training samples per step.")
    var pretrainBatch = 8

    @Option(help: "The last K samples are held out of training and used only for evaluation. Default: a quarter.")
    var holdout: Int?

    @Option(help: "Comma-separated routing modes to compare.")
    var routings = CommaList<ALTERSettings.Routing>([.learned, .intervals, .static])

    @Option(help: "Number of temporal experts (static routing always has one).")
    var experts = 4

    @Option(help: "Target kept fraction of total UNet MACs.")
    var keep = 0.65

    @Option(help: "Training steps per run.")
    var steps = 300

    @Option(help: "Steps with a hypernetwork update. Default: 30% of --steps, rounded.")
    var hypernetSteps: Int?

    @Option(help: "Samples per step.")
    var batch = 2

    @Option(help: "UNet learning rate (AdamW).")
    var lrUnet = 1e-4

    @Option(help: "Hypernetwork learning rate (AdamW).")
    var lrHypernet = 1e-2

    @Option(help: "Linear learning-rate warm-up steps. Default: min(250, steps/10).")
    var warmup: Int?

    @Option(help: "Loss weight of the MAC ratio loss.")
    var ratioWeight = 5.0

    @Option(help: "Loss weight of the expert balance loss.")
    var balanceWeight = 1.0

    @Option(help: "Loss weight of feature distillation.")
    var featureKdWeight = 1.0

    @Option(help: "Loss weight of the denoising loss.")
    var denoiseWeight = 1e-4

    @Option(help: "Comma-separated training seeds; every routing mode runs once per seed.")
    var seeds = CommaList<UInt64>([1, 2, 3])

    @Option(help: "Held-out evaluation draws (sample, noise; timesteps evenly spread over 0..999).")
    var evalSamples = 64

    @Option(help: "Seed of the held-out evaluation draws (the same for every run).")
    var evalSeed: UInt64 = 99

    @Flag(help: "Before the runs, print how much skipping each unit alone changes the (pre-trained) model's output at timesteps 50, 350, 650 and 950, on the held-out samples.")
    var sensitivity = false

    @Option(help: "Print the step metrics every this many steps to stderr (0: off).")
    var trace = 0

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var modelOptions: ModelOptions

    /// The study's settings from the options.
    var settings: RoutingStudy.Settings {
        var s = RoutingStudy.Settings()
        s.routings = routings.values
        s.seeds = seeds.values
        s.experts = experts
        s.keep = keep
        s.steps = steps
        s.hypernetSteps = hypernetSteps
        s.batch = batch
        s.learningRateUNet = lrUnet
        s.learningRateHypernet = lrHypernet
        s.warmupSteps = warmup
        s.ratioWeight = ratioWeight
        s.balanceWeight = balanceWeight
        s.featureKDWeight = featureKdWeight
        s.denoiseWeight = denoiseWeight
        s.holdout = holdout
        s.evalSamples = evalSamples
        s.evalSeed = evalSeed
        s.pretrainSteps = pretrain
        s.pretrainLearningRate = pretrainLr
        s.pretrainBatch = pretrainBatch
        return s
    }

    /// One progress line: the step's metrics, the current noise-free decisions and, with a learned
    /// router, the mean margin between its top two (noise-free) logits over the training timesteps.
    func traceLine(_ trainer: ALTERTrainer, _ m: StepMetrics) -> String {
        func shares(_ x: [Double]) -> String { x.map { String(format: "%.2f", $0) }.joined(separator: "/") }
        let now = trainer.finalDecisions
        var line = String(format: "  %@ seed %llu step %d: loss %.4g, output KD %.4g, kept %.4f (noise-free %.4f, shares %@)",
                          trainer.config.settings.routing.rawValue, trainer.config.seed, m.step, m.loss, m.outputKD, m.keptFraction,
                          trainer.budget.keptFraction(now), shares(now.expertShares))
        if let router = trainer.hypernet.router as? LearnedRouter, let margin = router.margin() { line += String(format: ", router margin %.3f", margin) }
        if let ratio = m.ratio { line += String(format: "; ratio loss %.3g, sampled shares %@", ratio, shares(m.expertShares)) }
        return line
    }

    /// The sensitivity table (stderr with --json, else stdout).
    func printSensitivity(_ s: UnitSensitivity) {
        var lines = ["skip-one-unit output MSE against the dense model (mean square of the dense output: "
            + zip(s.timesteps, s.outputMeanSquare).map { String(format: "%.3g at t=%d", $1, $0) }.joined(separator: ", ") + ")",
            "| unit | " + s.timesteps.map { "t=\($0)" }.joined(separator: " | ") + " | first/last |",
            "|---|" + String(repeating: "---:|", count: s.timesteps.count + 1)]
        for (l, name) in s.units.enumerated() {
            let row = s.mse.map { $0[l] }
            lines.append("| \(name) | " + row.map { String(format: "%.3g", $0) }.joined(separator: " | ")
                         + String(format: " | %.3g |", row[0] / max(row[row.count - 1], 1e-30)))
        }
        let last = s.timesteps.count - 1
        lines.append(String(format: "rank correlation of the units' MSEs between t=%d and t=%d: %.3f", s.timesteps[0], s.timesteps[last],
                            s.rankCorrelation(0, last)))
        for line in lines { if json { printError(line) } else { print(line) } }
    }

    func run() throws {
        var study: RoutingStudy
        do {
            if let randomChannels {
                guard model == nil, data == nil else { throw ValidationError("--random-channels replaces --model and --data") }
                guard samples >= 2, contextTokens >= 4 else { throw ValidationError("synthetic data needs --samples >= 2 and --context-tokens >= 4") }
                let cfg = try UNetConfig.sd21Structured(channels: randomChannels.values, contextDim: contextDim, sampleSize: latent)
                let seed = modelSeed
                let all = TrainingData.synthetic(count: samples, height: latent, width: latent, contextLength: contextTokens,
                                                 contextDim: contextDim, seed: dataSeed)
                study = try RoutingStudy(settings: settings, makeModel: { try UNet(config: cfg, parameters: RandomParameters(seed: seed)) },
                                         modelLabel: "random init (seed \(seed)), block channels \(randomChannels.values)", data: all,
                                         dataLabel: "synthetic (seed \(dataSeed)): \(samples) samples, latents [4, \(latent), \(latent)], context [\(contextTokens), \(contextDim)]")
            } else {
                var load = modelOptions.loadOptions
                let path = model ?? ExampleFiles.model
                if model == nil {
                    load.configPath = load.configPath ?? ExampleFiles.config
                    load.allowUnused = true
                }
                let checkpoint = try UNetCheckpoint(path: path, options: load)
                let dataPath = data ?? ExampleFiles.data
                study = try RoutingStudy(settings: settings, makeModel: { try UNet(checkpoint: checkpoint) }, modelLabel: path,
                                         data: try TrainingData(contentsOf: URL(fileURLWithPath: dataPath)), dataLabel: dataPath)
            }
        } catch let e as ValidationError { throw e } catch let e as RoutingStudyError { throw ValidationError(e.description) } catch {
            throw CommandFailure("\(error)")
        }
        do {
            if pretrain > 0, !json { printError("pre-training as a denoiser: \(pretrain) steps, batch \(pretrainBatch), learning rate \(pretrainLr)") }
            let losses = try study.pretrain { event in
                if case .pretraining(let step, let loss, let window) = event, !json {
                    printError(String(format: "  pre-training step %d: mean denoising loss of the last %d steps %.4f", step, window, loss))
                }
            }
            if sensitivity { printSensitivity(try study.sensitivity()) }
            if !json {
                printError("model: \(study.modelLabel); data: \(study.dataLabel): \(study.training.count) training, \(study.heldOut.count) held-out samples")
                printError("\(experts) experts, keep \(keep), \(steps) steps (\(study.hypernetSteps) with the hypernetwork), batch \(batch), seeds \(seeds.values)")
            }
            let report = try study.run(pretrainLosses: losses) { event in
                switch event {
                case .step(let trainer, let m):
                    if trace > 0, m.step % trace == 0 { printError(traceLine(trainer, m)) }
                case .finished(let r):
                    if !json {
                        printError(String(format: "%-9@ seed %llu: kept MACs %.4f, held-out output KD %.6g (%.0f s; expert shares %@)",
                                          r.routing, r.seed, r.keptMACFraction, r.heldOutOutputKD, r.seconds,
                                          r.expertShares.map { String(format: "%.2f", $0) }.joined(separator: "/")))
                    }
                case .pretraining: break
                }
            }
            if json { return try writeJSON(report) }
            print("| routing | seed | kept-MAC fraction | held-out output KD |")
            print("|---|---:|---:|---:|")
            for r in report.runs {
                print(String(format: "| %@ | %llu | %.4f | %.6g |", r.routing, r.seed, r.keptMACFraction, r.heldOutOutputKD))
            }
            for s in report.summary {
                print(String(format: "| %@ | mean | %.4f | %.6g (sd %.2g) |", s.routing, s.meanKeptMACFraction, s.meanHeldOutOutputKD, s.sdHeldOutOutputKD))
            }
            let off = RoutingStudy.offTarget(report).map { "\($0.routing) seed \($0.seed)" }
            if !off.isEmpty { printError("note: the kept-MAC fraction of \(off.joined(separator: ", ")) misses the target \(keep) by more than 0.03") }
        } catch let e as CommandFailure { throw e } catch { throw CommandFailure("\(error)") }
    }
}
