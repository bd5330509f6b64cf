import ALTER
import ALTERBench
import ArgumentParser
import Foundation
import NN
import StableDiffusion

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
    var experts = ALTERSettings().experts

    @Flag(inversion: .prefixedNo, help: "Include the hypernetwork step (the first phase of ALTER).")
    var hypernet = true

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var modelOptions: ModelOptions

    func validate() throws {
        guard latent > 0, context > 0, batch > 0, steps > 0, experts > 0 else {
            throw ValidationError("--latent, --context, --batch, --steps and --experts must be positive")
        }
        try ArgumentBounds.latent(latent, flag: "--latent")
        try ArgumentBounds.context(context, flag: "--context")
    }

    func run() throws {
        let report: TrainingBenchmark.Report
        do {
            let student: UNet, teacher: UNet
            if let model {
                let ckpt = try UNetCheckpoint(path: model, options: modelOptions.loadOptions)
                student = try UNet(checkpoint: ckpt)
                teacher = try UNet(checkpoint: ckpt)
            } else {
                student = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
                teacher = try UNet(config: .sd21, parameters: RandomParameters(seed: 21))
            }
            report = try TrainingBenchmark.run(student: student, teacher: teacher, model: model ?? "random SD2.1", latent: latent, context: context,
                                               batch: batch, steps: steps, experts: experts, hypernet: hypernet) { m in
                if !json { printError(String(format: "step %d: %.2f s (loss %.4g, kept %.3f)", m.step, m.seconds, m.loss, m.keptFraction)) }
            }
        } catch { throw CommandFailure("\(error)") }
        if json { return try writeJSON(report) }
        print(String(format: "%@ parameters, %dx%d latent, %d tokens, batch %d, hypernetwork step %@: %@ s per step; peak resident %@ MB",
                     grouped(report.parameters), latent, latent, context, batch, hypernet ? "on" : "off",
                     report.stepSeconds.map { String(format: "%.2f", $0) }.joined(separator: ", "), grouped(report.peakResidentMB)))
    }
}
