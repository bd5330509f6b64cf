import ArgumentParser
import Foundation
import StableDiffusion
import TensorCore

struct EncodePrompt: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode-prompt",
        abstract: "Encode a prompt with the CLIP text encoder, as SD2.1's pipeline conditions its UNet.",
        discussion: """
            MODEL is a diffusers pipeline folder (its text_encoder/ and tokenizer/), a text encoder folder \
            (config.json + model.safetensors) or an original SD2.x single file (cond_stage_model.model.*, \
            config inferred from the tensors unless --config is given). Tokenizes the prompt to 77 tokens \
            (--tokenizer: a tokenizer folder, a pipeline or open_clip's BPE file; default MODEL) and writes \
            transformers' last_hidden_state as the F32 tensor `context` [1, 77, width] (what the UNet's \
            --inputs `context` takes).
            """)

    @Argument(help: "A pipeline folder, a text encoder folder or an original SD2.x .safetensors file.")
    var model: String

    @Option(help: "The text to encode.")
    var prompt: String

    @Option(help: "Tokenizer: a pipeline, a tokenizer folder or an open_clip BPE file (default: MODEL).")
    var tokenizer: String?

    @Option(help: "A transformers CLIPTextConfig config.json that overrides the one found or inferred.")
    var config: String?

    @Option(help: "Attention heads of an original checkpoint (default: width / 64, as OpenCLIP).")
    var heads: Int?

    @Option(help: "Weight variant of a diffusers folder (e.g. fp16).")
    var variant: String?

    @Option(name: .shortAndLong, help: "Output .safetensors file.")
    var output: String

    @Flag(help: "Replace an existing output file (never one of the inputs).")
    var force = false

    @Flag(help: "Print JSON (formats/cli-json.md).")
    var json = false

    func run() throws {
        if let heads, heads < 1 { throw ValidationError("--heads must be at least 1") }
        let tokenizerPath = tokenizer ?? model
        let lock = try prepareOutputFile(output, force: force, inputs: [model, tokenizer, config])
        defer { lock.release() }
        let start = Date()
        let t: CLIPTokenizer
        do { t = try CLIPTokenizer(path: tokenizerPath) } catch {
            throw CommandFailure(tokenizer == nil ? "\(error.description) (pass --tokenizer)" : error.description)
        }
        var options = CLIPTextLoadOptions()
        options.configPath = config
        options.heads = heads
        options.variant = variant
        let checkpoint: CLIPTextCheckpoint
        let encoder: CLIPTextEncoder
        do {
            checkpoint = try CLIPTextCheckpoint(path: model, options: options)
            encoder = try checkpoint.encoder()
        } catch { throw CommandFailure("\(error)".replacingOccurrences(of: "give the number of heads", with: "pass --heads")) }
        let tokens = t.tokenize(prompt)
        let loaded = Date()
        let context: Tensor
        do { context = try encoder.encode([tokens.inputIds]) } catch { throw CommandFailure(error.description) }
        let encoded = Date()
        Interrupts.installCleanupHandler()
        do {
            try PromptEncodingReport.writeContext(context, to: output, metadata: ["prompt": prompt, "model": model])
        } catch { throw CommandFailure(error.description) }
        let report = PromptEncodingReport(checkpoint: checkpoint, tokenizerSource: tokenizerPath, prompt: prompt, tokenization: tokens,
                                          output: output, shape: context.shape, loadSeconds: loaded.timeIntervalSince(start),
                                          encodeSeconds: encoded.timeIntervalSince(loaded))
        if json {
            try writeJSON(report)
            return
        }
        for a in checkpoint.assumptions { printError("assumed: \(a)") }
        print("\(report.tokenCount) of \(tokens.inputIds.count) tokens\(report.truncated ? " (truncated)" : ""); \(checkpoint.kind.rawValue), \(report.numHiddenLayers) layers, width \(report.hiddenSize), \(report.hiddenAct)")
        print(String(format: "load %.2f s, encode %.2f s; wrote context %@ to %@", report.loadSeconds, report.encodeSeconds,
                     "\(report.shape)", output))
    }
}
