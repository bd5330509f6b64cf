import ArgumentParser
import DataEncoding
import Foundation
import Images
import SafeTensors
import StableDiffusion
import TextToImage

extension ImageResize.Filter: ExpressibleByArgument {}

struct EncodeData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode-data",
        abstract: "Encode a folder of images and their captions into a training-data file for `alter compress`.",
        discussion: """
            PIPELINE is a diffusers pipeline folder (tokenizer/, text_encoder/, vae/), an original SD2.x \
            single file with --tokenizer, or a bundle exported with --pipeline. --captions is JSON lines \
            (.jsonl: {"file": "cat.png", "text": "a cat"} per line) or CSV (.csv: a file,text header, RFC 4180 \
            quoting); file is relative to --images. Each image is read (PNG, JPEG), its shorter side resized \
            to --size and its centre cropped (torchvision Resize + CenterCrop, --resample bilinear as \
            diffusers' train_text_to_image.py), VAE-encoded (the latent distribution's mean, or with --sample \
            a draw seeded by --seed and the sample's row) and multiplied by the VAE's scaling_factor. Each \
            caption is tokenized (77 tokens) and encoded as encode_prompt does (last_hidden_state). The file \
            (formats/training-data.md) holds latents [N,4,size/8,size/8], context [N,77,D], uncond [77,D] \
            (the empty prompt) in --dtype, extra.input_ids [N,77] I32, and the image names and captions in \
            its metadata. An image without a caption, a caption without an image and an unreadable image \
            are errors, unless --skip-bad leaves them out (listed at the end). Memory holds one batch; \
            every image is read twice (checked first, encoded after).
            """)

    @Argument(help: "A diffusers pipeline folder, an original SD2.x .safetensors file (with --tokenizer) or a bundle with components.")
    var pipeline: String

    @Option(help: "The folder of images (subfolders included).")
    var images: String

    @Option(help: "Captions: a .jsonl or .csv file.")
    var captions: String

    @Option(name: .shortAndLong, help: "Output .safetensors file.")
    var output: String

    @Option(help: "Tokenizer of an original single file: a tokenizer folder, a pipeline or open_clip's BPE file.")
    var tokenizer: String?

    @Option(help: "Attention heads of an original file's text encoder (default: width / 64, as OpenCLIP).")
    var heads: Int?

    @Option(help: "A diffusers VAE config.json for an original file (default: inferred from the tensors).")
    var vaeConfig: String?

    @Option(help: "Side of the square images in pixels (\(DataEncodingBounds.sizes.lowerBound)-\(DataEncodingBounds.sizes.upperBound), a multiple of the VAE's factor).")
    var size = 512

    @Option(help: "Images encoded at once (\(DataEncodingBounds.batches.lowerBound)-\(DataEncodingBounds.batches.upperBound)).")
    var batch = 4

    @Option(help: "Storage dtype of latents, context and uncond: fp32, fp16 or bf16.")
    var dtype: DType = .f16

    @Option(help: "Resize filter: bilinear, bicubic or lanczos.")
    var resample: ImageResize.Filter = .bilinear

    @Flag(help: "Store a seeded sample of each latent distribution instead of its mean.")
    var sample = false

    @Option(help: "Seed of --sample (default 0).")
    var seed: UInt64?

    @Flag(help: "Leave out images without a caption, captions without an image and unreadable images (listed).")
    var skipBad = false

    @Flag(help: "Replace an existing output file (never one of the inputs).")
    var force = false

    @Flag(help: "Print JSON (formats/cli-json.md).")
    var json = false

    func run() throws {
        if seed != nil && !sample { throw ValidationError("--seed applies only with --sample") }
        if let heads, heads < 1 { throw ValidationError("--heads must be at least 1") }
        var options = DataEncodingOptions()
        options.size = size
        options.batch = batch
        options.dtype = dtype
        options.filter = resample
        options.skipBad = skipBad
        options.latentMode = sample ? .sample(seed: seed ?? 0) : .mean
        do { try options.validate() } catch { throw ValidationError(flagHints(error.description)) }
        let lock = try prepareOutputFile(output, force: force, inputs: [pipeline, tokenizer, vaeConfig, captions, images])
        defer { lock.release() }
        let components: TextToImageComponents
        var textOptions = CLIPTextLoadOptions()
        textOptions.heads = heads
        var vaeOptions = VAELoadOptions()
        vaeOptions.configPath = vaeConfig
        do { components = try TextToImageComponents(model: pipeline, tokenizer: tokenizer, textEncoder: textOptions, vae: vaeOptions) } catch {
            throw CommandFailure(error.description.replacingOccurrences(of: "give the number of heads", with: "pass --heads"))
        }
        Interrupts.installCleanupHandler()
        var bar: ProgressBar?
        var phase: DataEncodingProgress.Phase?
        let report: DataEncodingReport
        do {
            report = try TrainingDataEncoder(components: components).encode(
                folder: images, captions: captions, output: output, options: options
            ) { p in
                if p.phase != phase {
                    bar?.finish()
                    bar = json ? nil : ProgressBar(label: p.phase.rawValue, counting: true)
                    phase = p.phase
                }
                bar?.update(p.done, p.total)
            }
        } catch {
            bar?.finish()
            throw CommandFailure(error.description)
        }
        bar?.finish()
        if json {
            try writeJSON(report)
            return
        }
        for s in report.skipped { printError("skipped \(s.file): \(s.reason)") }
        print("\(report.sampleCount) samples\(report.skipped.isEmpty ? "" : " (\(report.skipped.count) skipped)"); latents \(report.latentsShape), context \(report.contextShape), uncond \(report.uncondShape), \(report.dtype), latents: \(report.latentMode)")
        if report.truncatedCaptionCount > 0 { print("\(report.truncatedCaptionCount) captions cut to \(report.contextShape[1]) tokens") }
        print(String(format: "check %.2f s, captions %.2f s, images %.2f s; wrote %@ (%@)", report.checkSeconds, report.captionSeconds,
                     report.imageSeconds, output, formatBytes(report.bytes)))
    }
}
