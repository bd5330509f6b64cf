import ArgumentParser
import Foundation
import SafeTensors
import StableDiffusion

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's UNet in the diffusers or the original layout, in fp32, fp16 or bf16.",
        discussion: """
            diffusers layout: a folder with config.json and diffusion_pytorch_model.safetensors, which \
            diffusers' UNet2DConditionModel.from_pretrained loads. original layout: one .safetensors file \
            with the UNet under model.diffusion_model.* (the VAE and text encoder are not copied). \
            Streams one tensor at a time; the output appears only when complete.
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

    @OptionGroup var model: ModelOptions

    func run() throws {
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
