import ArgumentParser
import ExpertBundle
import Foundation
import Images
import SafeTensors
import StableDiffusion
import TextToImage

extension Sample {
    /// `alter sample --prompt/--prompts`: prompts to PNG images.
    func drawImages() throws {
        guard output.lowercased().hasSuffix(".png") else {
            throw ValidationError("-o \(output): drawing from prompts writes PNG images: give a .png name (and --latents FILE for the latents)")
        }
        let entries = try promptOptions.entries()
        let seeds = seed.values
        let kind = try scheduler.kind(steps: steps ?? 20)
        guard entries.count * seeds.count <= TextToImagePipeline.maxImages else {
            throw ValidationError("\(entries.count) prompts x \(seeds.count) seeds is more than \(TextToImagePipeline.maxImages) images")
        }
        let files = grid ? [output] : Self.imageFiles(output, promptCount: entries.count, seeds: seeds)
        let inputs = [model, promptOptions.prompts, schedulerConfig, modelOptions.config].compactMap { $0 } + components.inputs
        // Every output is checked before the work starts; each is written atomically at the end.
        var outputs = files
        if let latents { outputs.append(latents) }
        guard Set(outputs).count == outputs.count else { throw ValidationError("the outputs \(outputs.joined(separator: ", ")) are not all different") }
        for path in outputs {
            do { try OutputTarget(path: path, kind: .file, replace: force, inputs: inputs).prepare() } catch { throw CommandFailure(error.description) }
        }

        let start = Date()
        let pipe = try loader.textToImagePipeline()
        for n in pipe.notes { printError("note: \(n)") }

        var options = RoutedSampler.Options(scheduler: kind)
        options.guidance = guidance
        if let latent { (options.latentHeight, options.latentWidth) = (latent, latent) }
        if let height, let width {
            do { (options.latentHeight, options.latentWidth) = try pipe.latentSize(height: height, width: width) } catch {
                throw ValidationError("--height/--width: \(error)")
            }
        }
        let loaded = Date()
        let line = isatty(STDERR_FILENO) == 1
        var drawn = false
        let total = entries.count * seeds.count
        let result: DrawingResult
        do {
            result = try pipe.draw(entries, negativePrompt: promptOptions.negativePrompt, seeds: seeds, options: options,
                                   batch: promptOptions.batchSize) { image, call, calls in
                guard line else { return }
                let inBatch = min(promptOptions.batchSize, total - image)
                let done = Double(image * calls + (call.index + 1) * inBatch), all = Double(total * calls)
                let elapsed = Date().timeIntervalSince(loaded)
                let expert = call.expert.map { "expert \($0)" } ?? "dense"
                FileHandle.standardError.write(Data(String(format: "\rsample: image %d/%d  call %d/%d  t=%g  %@  ETA %.0f s   ",
                                                           image + inBatch, total, call.index + 1, calls, call.timestep, expert,
                                                           elapsed / done * (all - done)).utf8))
                drawn = true
            }
        } catch {
            let flags = latent != nil ? ["latent_height": "--latent", "latent_width": "--latent"]
                                      : ["latent_height": "--height (divided by the VAE's factor)", "latent_width": "--width (divided by the VAE's factor)"]
            throw CommandFailure(ArgumentBounds.message("\(error)", flags: flags))
        }
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }

        let writing = Date()
        Interrupts.installCleanupHandler()
        do {
            if grid {
                try result.grid(seedCount: seeds.count).writePNG(to: output, force: force, inputs: inputs)
            } else {
                for (image, file) in zip(result.images, files) { try image.image.writePNG(to: file, force: force, inputs: inputs) }
            }
            if let latents {
                try result.writeLatents(to: latents, model: model, options: options, predictionType: pipe.sampler.schedulerConfig.predictionType.rawValue)
            }
        } catch { throw CommandFailure("\(error)") }
        let written = Date()

        let report = DrawingReport(result: result, pipeline: pipe, model: model, options: options, seeds: seeds, batch: promptOptions.batchSize,
                                   files: grid ? [] : files, grid: grid ? output : nil, latents: latents,
                                   loadSeconds: loaded.timeIntervalSince(start), writeSeconds: written.timeIntervalSince(writing))
        if json {
            try writeJSON(report)
        } else {
            let usage = report.expertCallCounts.keys.sorted { (Int($0) ?? -1) < (Int($1) ?? -1) }
                .map { "\($0 == "dense" ? "dense" : "expert " + $0) x\(report.expertCallCounts[$0] ?? 0)" }
            let where_ = grid ? output : (files.count == 1 ? output : "\(files.count) files \(files[0]) ...")
            printError(String(format: "wrote %@: %d image%@ %dx%d, %@, guidance %g; load %.1f s, encode %.1f s, denoise %.1f s, decode %.1f s; %@; MACs %.3f of dense",
                              where_, result.images.count, result.images.count == 1 ? "" : "s", report.size[1], report.size[0], kind.description,
                              guidance, report.loadSeconds, report.seconds.encode, report.seconds.denoise, report.seconds.decode,
                              usage.joined(separator: ", "), report.keptMACFraction))
        }
    }

    /// One PNG per prompt and seed: `out.png` alone for one image, else `out-pI-sSEED.png`
    /// (I zero-padded to the width of the last prompt index); `alwaysIndexed`: the indexed names
    /// for one image too.
    static func imageFiles(_ output: String, promptCount: Int, seeds: [UInt64], alwaysIndexed: Bool = false) -> [String] {
        if promptCount == 1 && seeds.count == 1 && !alwaysIndexed { return [output] }
        let ext = (output as NSString).pathExtension
        let stem = (output as NSString).deletingPathExtension
        let width = String(max(promptCount - 1, 0)).count
        var files: [String] = []
        for p in 0..<promptCount {
            let index = String(repeating: "0", count: width - String(p).count) + String(p)
            for s in seeds { files.append("\(stem)-p\(index)-s\(s).\(ext)") }
        }
        return files
    }
}
