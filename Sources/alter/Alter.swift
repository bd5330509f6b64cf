import ALTER
import ArgumentParser
import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore

@main
enum Main {
    /// Subcommands that do heavy matrix work (the rest never call OpenBLAS).
    static let computeCommands: Set<String> = ["forward", "bench", "compress", "sample", "eval", "encode-data"]

    static func main() {
        if CommandLine.arguments.count > 1, computeCommands.contains(CommandLine.arguments[1]) {
            BLASCoreSelection.reexecIfGeneric()
        }
        Alter.main()
    }
}

struct Alter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alter",
        abstract: "Compress Stable Diffusion 2.1 UNets with ALTER (layer pruning + temporal expert routing).",
        discussion: """
            Reads SD1.x/SD2.x UNets from a diffusers UNet folder, a diffusers pipeline folder (its unet/), \
            an original single-file checkpoint (model.diffusion_model.* beside VAE and text encoder), or a \
            bare diffusers-named safetensors file; F32, F16 and BF16.
            """,
        version: "alter 0.3.0 (bundle format \(BundleManifest.formatVersion), run directory format \(CompressionConfig.formatVersion))",
        subcommands: [Inspect.self, Convert.self, Tokenize.self, EncodePrompt.self, EncodeData.self, Forward.self, Compress.self, Export.self, Verify.self, Sample.self, Eval.self, Diff.self, Bench.self])
}

/// Options shared by commands that read a UNet.
struct ModelOptions: ParsableArguments {
    @Option(help: "A diffusers UNet config.json to use instead of the one found or inferred (needed when heads or norm groups differ from SD defaults).")
    var config: String?

    @Flag(help: "Load the EMA copies (model_ema.*) of an original checkpoint instead of the plain weights.")
    var ema = false

    @Flag(help: "Accept UNet tensors the model does not use (they are still listed).")
    var allowUnused = false

    @Option(help: "diffusers weight variant to read from a folder, e.g. fp16.")
    var variant: String?

    @Flag(inversion: .prefixedNo, help: "Override upcast_attention (not stored in original checkpoints; SD2.1 768-v uses it).")
    var upcastAttention: Bool?

    @Option(help: "Override the config's sample_size (latent size; 96 for SD2.1 768, 64 for 512 models).")
    var sampleSize: Int?

    var loadOptions: LoadOptions {
        var o = LoadOptions()
        o.configPath = config
        o.ema = ema
        o.allowUnused = allowUnused
        o.variant = variant
        o.upcastAttention = upcastAttention
        o.sampleSize = sampleSize
        return o
    }
}

/// Exit with a message on stderr, as ArgumentParser prints errors. Library messages name
/// configuration fields; they are put in terms of this tool's flags here.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = flagHints(d) }
}

/// Library wording -> the command line's.
let libraryToFlags = [
    ("(replacing it was not asked for)", "(pass --force to replace it)"),
    ("load option config_path", "--config"),
    ("load option upcast_attention", "--upcast-attention"),
    ("load option allow_unused loads anyway", "pass --allow-unused to load anyway"),
    ("load option ema", "--ema"),
    ("(give the prediction type)", "(pass --prediction-type)"),
    ("(give a diffusers tokenizer folder, or ask for none)", "(pass --tokenizer DIR, a diffusers tokenizer folder such as a pipeline's tokenizer/, or --no-tokenizer)"),
    ("is not a prunable unit of this UNet", "is not a prunable unit of this UNet (see `alter inspect MODEL --units`)"),
    ("(resume it, or choose another run directory)", "(continue it with --resume, or choose another -o)"),
    ("(fix them, or skip them with skip_bad)", "(fix them, or leave them out with --skip-bad)"),
    ("(give a tokenizer folder)", "(pass --tokenizer)"),
]

/// A library message in terms of the command line's flags.
func flagHints(_ message: String) -> String {
    libraryToFlags.reduce(message) { $0.replacingOccurrences(of: $1.0, with: $1.1) }
}

func printError(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// Prints a `--json` report: keys as each type's CodingKeys spell them (formats/cli-json.md).
func writeJSON<T: Encodable>(_ value: T) throws {
    let data = try JSONEncoder.alterOutput().encode(value)
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Formats a byte count as B/KB/MB/GB (decimal units).
func formatBytes(_ n: Int) -> String {
    let x = Double(n)
    if x >= 1e9 { return String(format: "%.2f GB", x / 1e9) }
    if x >= 1e6 { return String(format: "%.1f MB", x / 1e6) }
    if x >= 1e3 { return String(format: "%.1f KB", x / 1e3) }
    return "\(n) B"
}

/// Formats an integer with thousands separators.
func grouped(_ n: Int) -> String {
    let s = String(n.magnitude)
    var out = ""
    for (i, c) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return (n < 0 ? "-" : "") + out
}

/// Applies the output policy (`OutputTarget`) to a file this command writes and locks it against
/// other alter processes until the returned lock is released.
func prepareOutputFile(_ path: String, force: Bool, inputs: [String?]) throws -> PathLock {
    do {
        try OutputTarget(path: path, kind: .file, replace: force, inputs: inputs.compactMap { $0 }).prepare()
        return try PathLock(beside: path)
    } catch { throw CommandFailure(error.description) }
}
