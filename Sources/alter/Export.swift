import ALTER
import ArgumentParser
import ExpertBundle
import Foundation
import RunExport
import SafeTensors

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the multi-expert bundle of a finished compress run.",
        discussion: """
            The bundle (formats/bundle.md) holds the run's fine-tuned UNet once (units that every expert skips \
            are left out), one manifest per expert (kept and skipped units, MACs, timesteps served, the tensors \
            it needs with SHA-256), and bundle.json (architecture, prediction type, scheduler config, digest of \
            the source checkpoint, the 1000-entry timestep-to-expert table, MAC totals). It is written beside \
            its final place and renamed into place: an interrupted export leaves the previous bundle or none. \
            With --pipeline, it also carries the pipeline's tokenizer, text encoder and VAE (tokenizer/, text_encoder/, \
            vae/, bundle format version 3), checked to load strictly and to fit the UNet (text encoder hidden_size = \
            cross_attention_dim, VAE latent_channels = in_channels, tokenizer vocabulary = text encoder vocab_size).
            """)

    @Argument(help: "A compress run directory with final/ (alter compress ... -o RUN).")
    var runDirectory: String

    @Option(name: .shortAndLong, help: "The bundle directory to write (NAME.alter).")
    var output: String

    @Option(help: "Storage dtype of the weights: fp32, fp16 or bf16.")
    var dtype: DType = .f32

    @Option(help: "Latent size (height = width) at which MACs are stated. Default: the run's training data.")
    var latent: Int?

    @Option(help: "Context length at which MACs are stated. Default: the run's training data.")
    var context: Int?

    @Option(help: ArgumentHelp("A diffusers pipeline folder (tokenizer/, text_encoder/, vae/) or an original SD2.x single file whose tokenizer, text encoder and VAE the bundle carries, so that sampling from a prompt needs only the bundle (stored in --dtype).", valueName: "DIR"))
    var pipeline: String?

    @Option(help: ArgumentHelp("The tokenizer folder (vocab.json, merges.txt) to carry with --pipeline: needed for a single file, replaces a pipeline's own.", valueName: "TOKDIR"))
    var tokenizer: String?

    @Option(help: "With --pipeline FILE: attention heads of the original text encoder (default: width / 64, as OpenCLIP).")
    var heads: Int?

    @Option(help: ArgumentHelp("With --pipeline: a diffusers AutoencoderKL config.json replacing the pipeline's, or the one inferred from a single file.", valueName: "FILE"))
    var vaeConfig: String?

    @Flag(help: "Replace an existing bundle.")
    var force = false

    @Flag(help: "Print the bundle's summary as JSON.")
    var json = false

    /// The flag of each size field a library error may name.
    static let flags = ["latent_height": "--latent", "latent_width": "--latent", "context_length": "--context"]

    func validate() throws {
        try ArgumentBounds.latent(latent, flag: "--latent")
        try ArgumentBounds.context(context, flag: "--context")
        if let heads, heads < 1 { throw ValidationError("--heads must be at least 1") }
        if pipeline == nil && (tokenizer != nil || heads != nil || vaeConfig != nil) {
            throw ValidationError("--tokenizer, --heads and --vae-config are used by --pipeline")
        }
    }

    func run() throws {
        var options = RunExporter.Options()
        options.bundle.dtype = dtype
        options.bundle.replace = force
        options.pipeline = pipeline
        options.tokenizer = tokenizer
        options.heads = heads
        options.vaeConfig = vaeConfig
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
            manifest = try RunExporter.export(run: dir, to: output, options: options) { printError($0) }
        } catch {
            throw CommandFailure(ArgumentBounds.message(error.description, flags: Self.flags).replacingOccurrences(of: "give the number of heads", with: "pass --heads"))
        }
        let summary: ExpertBundle.Summary
        do { summary = try ExpertBundle.Summary(manifest) } catch { throw CommandFailure("\(output)/bundle.json: \(error)") }
        if json {
            try writeJSON(summary)
        } else {
            printError(String(format: "wrote %@ in %.1f s: %d experts, %@ of weights, routed mean %.4f of the dense MACs at %dx%d",
                              output, Date().timeIntervalSince(start), summary.experts, formatBytes(summary.weightBytes),
                              summary.keptFraction, manifest.macs.latentHeight, manifest.macs.latentWidth))
        }
    }
}
