import ALTER
import ArgumentParser
import Foundation
import NN
import StableDiffusion
import TensorCore

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time ALTER training steps and report peak resident memory.",
        discussion: """
            Without --model, a full-size SD2.1 UNet (865,910,724 parameters) at deterministic random init is \
            the student, and a second copy the frozen teacher. Each step is a full ALTER iteration: teacher \
            forward, UNet step (forward with block checkpointing, backward, AdamW) and, with --hypernet, a \
            hypernetwork step through the frozen UNet. Data are random latents and contexts.
            """)

    @Option(help: "A checkpoint to train instead of random SD2.1 weights.")
    var model: String?

    @Option(help: "Latent size (height = width).")
    var latent = 64

    @Option(help: "Context tokens.")
    var context = 77

    @Option(help: "Samples per step.")
    var batch = 1

    @Option(help: "Timed steps.")
    var steps = 2

    @Option(help: "Number of experts.")
    var experts = 10

    @Flag(inversion: .prefixedNo, help: "Include the hypernetwork step (the first phase of ALTER).")
    var hypernet = true

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var modelOptions: ModelOptions

    struct Report: Encodable {
        var latent: Int
        var context: Int
        var batch: Int
        var hypernetStep: Bool
        var threads: Int
        var blasCore: String
        var parameters: Int
        var stepSeconds: [Double]
        var peakResidentMB: Int
    }

    func run() throws {
        let student: UNet, teacher: UNet
        do {
            if let model {
                let ckpt = try UNetCheckpoint(path: model, options: modelOptions.loadOptions)
                student = try UNet(checkpoint: ckpt)
                teacher = try UNet(checkpoint: ckpt)
            } else {
                student = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
                teacher = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
            }
        } catch { throw CommandFailure("\(error)") }
        let cfg = student.config
        var rng = SeededGenerator(seed: 5)
        let n = max(batch, 2)
        let latents = Tensor(shape: [n, cfg.inChannels, latent, latent], values: rng.normals(n * cfg.inChannels * latent * latent))
        let ctx = Tensor(shape: [n, context, cfg.crossAttentionDim], values: rng.normals(n * context * cfg.crossAttentionDim))
        var config = CompressionConfig(model: model ?? "random SD2.1", data: "random", steps: steps, hypernetSteps: hypernet ? steps : 0)
        config.settings.experts = experts
        config.batch = batch
        let trainer: ALTERTrainer
        do {
            trainer = try ALTERTrainer(config: config, student: student, teacher: teacher,
                                       data: try TrainingData(latents: latents, context: ctx))
        } catch { throw CommandFailure("\(error)") }
        var seconds: [Double] = []
        for i in 0..<steps {
            let m = trainer.trainStep()
            seconds.append(m.seconds)
            if !json { printError(String(format: "step %d: %.2f s (loss %.4g, kept %.3f)", i + 1, m.seconds, m.loss, m.keptFraction)) }
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let report = Report(latent: latent, context: context, batch: batch, hypernetStep: hypernet, threads: Parallel.workers,
                            blasCore: BLASCoreSelection.current,
                            parameters: student.parameters.reduce(0) { $0 + $1.value.count }, stepSeconds: seconds,
                            peakResidentMB: Int(usage.ru_maxrss) / 1024)
        if json { try writeJSON(report) } else {
            print(String(format: "%@ parameters, %dx%d latent, %d tokens, batch %d, hypernetwork step %@: %@ s per step; peak resident %@ MB",
                         grouped(report.parameters), latent, latent, context, batch, hypernet ? "on" : "off",
                         seconds.map { String(format: "%.2f", $0) }.joined(separator: ", "), grouped(report.peakResidentMB)))
        }
    }
}
