import ALTER
import ArgumentParser
import ExpertBundle
import Foundation
import SafeTensors

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the multi-expert bundle of a finished compress run.",
        discussion: """
            The bundle (formats/bundle.md) holds the run's fine-tuned UNet once (units that every expert skips \
            are left out), one manifest per expert (kept and skipped units, MACs, timesteps served, the tensors \
            it needs with SHA-256), and bundle.json (architecture, prediction type, scheduler config, digest of \
            the source checkpoint, the 1000-entry timestep-to-expert table, MAC totals). It is written beside \
            its final place and renamed into place: an interrupted export leaves the previous bundle or none.
            """)

    @Argument(help: "A compress run directory with final/ (alter compress ... -o RUN).")
    var runDirectory: String

    @Option(name: .shortAndLong, help: "The bundle directory to write (NAME.alter).")
    var output: String

    @Option(help: "Storage dtype of the weights: fp32, fp16 or bf16.")
    var dtype = "fp32"

    @Option(help: "Latent size (height = width) at which MACs are stated. Default: the run's training data.")
    var latent: Int?

    @Option(help: "Context length at which MACs are stated. Default: the run's training data.")
    var context: Int?

    @Flag(help: "Replace an existing bundle.")
    var force = false

    @Flag(help: "Print bundle.json's summary as JSON.")
    var json = false

    func run() throws {
        var options = BundleExporter.Options()
        switch dtype.lowercased() {
        case "fp32", "f32": options.dtype = .f32
        case "fp16", "f16": options.dtype = .f16
        case "bf16": options.dtype = .bf16
        default: throw ValidationError("--dtype must be fp32, fp16 or bf16")
        }
        options.force = force
        let dir = RunDirectory(path: runDirectory)
        if latent != nil || context != nil {
            let final: FinalDecisions
            do { final = try dir.readDecisions() } catch { throw CommandFailure(error.description) }
            options.macSize = (latent ?? final.latentHeight, latent ?? final.latentWidth, context ?? final.contextLength)
        }
        Interrupts.installCleanupHandler()
        let start = Date()
        let manifest: BundleManifest
        do {
            manifest = try BundleExporter.export(run: dir, to: output, options: options) { printError($0) }
        } catch { throw CommandFailure(error.description) }
        if json {
            try writeJSON(BundleSummary(ExpertBundle.Summary(manifest)))
        } else {
            let bytes = manifest.files.reduce(0) { $0 + $1.bytes }
            printError(String(format: "wrote %@ in %.1f s: %d experts, %@ of weights, routed mean %.4f of the dense MACs at %dx%d",
                              output, Date().timeIntervalSince(start), manifest.experts.count, formatBytes(bytes),
                              manifest.macs.keptFraction, manifest.macs.latentHeight, manifest.macs.latentWidth))
        }
    }
}

/// The JSON summary printed by export.
struct BundleSummary: Encodable {
    var summary: ExpertBundle.Summary
    init(_ s: ExpertBundle.Summary) { summary = s }
}
