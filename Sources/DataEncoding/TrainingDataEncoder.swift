import ALTER
import Foundation
import Images
import SafeTensors
import StableDiffusion
import TensorCore
import TextToImage

/// Turns a folder of images and a captions file into a training-data file
/// (formats/training-data.md) with a pipeline's own tokenizer, text encoder and VAE:
/// `latents` [N, C, size/f, size/f] (the VAE latent times its `scaling_factor`), `context`
/// [N, S, D] (the text encoder's `last_hidden_state` of each caption, as `encode_prompt`),
/// `uncond` [S, D] (the empty prompt), `extra.input_ids` [N, S] I32, and the image names and
/// captions in the metadata.
///
/// Memory holds one batch: a first pass reads every image once to find the unreadable ones (the
/// header, written first, needs N), then the captions and the images are encoded a batch at a
/// time and written as they come, under a temporary name renamed into place at the end.
public struct TrainingDataEncoder {
    public let components: TextToImageComponents

    public init(components: TextToImageComponents) {
        self.components = components
    }

    /// The tensor holding each caption's token ids [N, S] (I32).
    public static let inputIdsName = "extra.input_ids"

    /// Encodes the images of `folder` with the captions of `captionsPath` into `output` (which the
    /// caller has cleared through the output policy). `progress` is called after each image or
    /// caption batch.
    public func encode(folder: String, captions captionsPath: String, output: String, options: DataEncodingOptions,
                       progress: (DataEncodingProgress) -> Void = { _ in }) throws(DataEncodingError) -> DataEncodingReport {
        try options.validate()
        let vae = components.vae.config
        let f = vae.downsamplingFactor
        guard options.size % f == 0 else {
            throw .bounds("size \(options.size): the VAE needs a multiple of its downsampling factor \(f)")
        }
        var pairs = try ImageCaptionPairs(folder: folder, captions: try CaptionFile.read(captionsPath))
        var skipped = pairs.problems
        guard skipped.isEmpty || options.skipBad else { throw .badEntries(skipped) }

        // Pass 1: every image decodes (nothing is kept).
        let start = DispatchTime.now().uptimeNanoseconds
        var unreadable: [DataEncodingSkip] = []
        for (i, entry) in pairs.entries.enumerated() {
            do { _ = try ImageFile.read(path: pairs.path(of: entry)) } catch {
                unreadable.append(DataEncodingSkip(file: entry.file, reason: error.message))
            }
            progress(DataEncodingProgress(phase: .checking, done: i + 1, total: pairs.entries.count))
        }
        guard unreadable.isEmpty || options.skipBad else { throw .badEntries(skipped + unreadable) }
        pairs.remove(Set(unreadable.map(\.file)))
        skipped += unreadable
        let entries = pairs.entries
        guard !entries.isEmpty else {
            throw .noSamples("\(folder): no image is left to encode (\(skipped.count) skipped)")
        }
        let checked = DispatchTime.now().uptimeNanoseconds

        let n = entries.count, s = components.tokenizer.maxLength, d = components.textEncoder.config.hiddenSize
        let side = options.size / f
        let specs = [
            TensorSpec(name: TrainingData.contextName, dtype: options.dtype, shape: [n, s, d]),
            TensorSpec(name: Self.inputIdsName, dtype: .i32, shape: [n, s]),
            TensorSpec(name: TrainingData.latentsName, dtype: options.dtype, shape: [n, vae.latentChannels, side, side]),
            TensorSpec(name: TrainingData.uncondName, dtype: options.dtype, shape: [s, d]),
        ]
        let metadata = try metadata(entries: entries, folder: folder, options: options)
        let writer: SafeTensorsWriter
        do { writer = try SafeTensorsWriter(path: output, tensors: specs, metadata: metadata) } catch { throw .output(error) }
        var finished = false
        defer { if !finished { writer.abort() } }

        // Pass 2: captions -> context, then their ids.
        var ids: [Int32] = []
        ids.reserveCapacity(n * s)
        var truncated = 0
        for first in stride(from: 0, to: n, by: options.batch) {
            let batch = entries[first..<min(first + options.batch, n)]
            let tokens = batch.map { components.tokenizer.tokenize($0.text) }
            truncated += tokens.filter(\.truncated).count
            ids += tokens.flatMap { $0.inputIds.map { Int32(truncatingIfNeeded: $0) } }
            try write(writer, TrainingData.contextName, try encodeText(tokens.map(\.inputIds)), dtype: options.dtype)
            progress(DataEncodingProgress(phase: .captions, done: first + batch.count, total: n))
        }
        let idBuffer = UnsafeMutableBufferPointer<Int32>.allocate(capacity: ids.count)
        defer { idBuffer.deallocate() }
        _ = idBuffer.initialize(from: ids)
        do { try writer.write(Self.inputIdsName, bytes: UnsafeRawBufferPointer(idBuffer)) } catch { throw .output(error) }
        let captioned = DispatchTime.now().uptimeNanoseconds

        // Pass 3: images -> latents.
        for first in stride(from: 0, to: n, by: options.batch) {
            let batch = entries[first..<min(first + options.batch, n)]
            var images: [RGBImage] = []
            for entry in batch {
                do { images.append(try ImageFile.read(path: pairs.path(of: entry))) } catch { throw .image(error) }
            }
            try write(writer, TrainingData.latentsName, try latents(of: images, firstIndex: first, options: options), dtype: options.dtype)
            progress(DataEncodingProgress(phase: .images, done: first + batch.count, total: n))
        }
        try write(writer, TrainingData.uncondName, try encodeText([components.tokenizer.tokenize("").inputIds]), dtype: options.dtype)
        do { try writer.finish() } catch { throw .output(error) }
        finished = true
        let done = DispatchTime.now().uptimeNanoseconds

        let bytes = (try? RegularFile.size(output)) ?? 0
        var seed: UInt64?
        if case .sample(let s) = options.latentMode { seed = s }
        func seconds(_ a: UInt64, _ b: UInt64) -> Double { Double(b - a) / 1e9 }
        return DataEncodingReport(
            output: output, imageFolder: folder, captionFile: captionsPath, sources: components.sources, sampleCount: n, skipped: skipped,
            size: options.size, resample: options.filter.rawValue, latentMode: options.latentMode.name, seed: seed,
            vaeScalingFactor: vae.scalingFactor, dtype: options.dtype.rawValue, latentsShape: specs[2].shape,
            contextShape: specs[0].shape, uncondShape: specs[3].shape, truncatedCaptionCount: truncated, bytes: bytes,
            checkSeconds: seconds(start, checked), captionSeconds: seconds(checked, captioned), imageSeconds: seconds(captioned, done))
    }

    /// The VAE's input for `image`: resized (shorter side to `size`) and centre-cropped to
    /// `size` x `size`, [1, 3, size, size] in [-1, 1].
    public static func preprocess(_ image: RGBImage, options: DataEncodingOptions) throws(ImageError) -> Tensor {
        try ImageResize.resizeAndCenterCrop(image, to: options.size, filter: options.filter).tensor()
    }

    /// latents [B, C, size/f, size/f] of `images` (samples `firstIndex`... of the file): the
    /// mean or a seeded sample of the latent distribution, times the VAE's scaling factor.
    public func latents(of images: [RGBImage], firstIndex: Int, options: DataEncodingOptions) throws(DataEncodingError) -> Tensor {
        precondition(!images.isEmpty, "TrainingDataEncoder.latents: no images")
        let size = options.size
        let batch = Tensor(uninitialized: [images.count, 3, size, size])
        let per = 3 * size * size
        for (k, image) in images.enumerated() {
            let x: Tensor
            do { x = try Self.preprocess(image, options: options) } catch { throw .image(error) }
            (batch.data + k * per).update(from: x.data, count: per)
        }
        let distribution: LatentDistribution
        do { distribution = try components.vae.encode(batch) } catch { throw .components(.vae(error)) }
        let z = Tensor(uninitialized: distribution.mean.shape)
        let scale = Float(components.vae.config.scalingFactor)
        switch options.latentMode {
        case .mean:
            for i in 0..<z.count { z.data[i] = distribution.mean.data[i] * scale }
        case .sample(let seed):
            let std = distribution.std
            let perLatent = z.count / images.count
            for k in 0..<images.count {
                var generator = SeededGenerator(seed: seed, stream: "encode-data latent \(firstIndex + k)")
                let eps = generator.normals(perLatent)
                for j in 0..<perLatent {
                    let i = k * perLatent + j
                    z.data[i] = (distribution.mean.data[i] + std.data[i] * eps[j]) * scale
                }
            }
        }
        return z
    }

    /// The text encoder's `last_hidden_state` [B, S, D] of token ids (as `encode_prompt`).
    public func encodeText(_ ids: [[Int]]) throws(DataEncodingError) -> Tensor {
        do { return try components.textEncoder.encode(ids) } catch { throw .components(.textEncoder(error)) }
    }

    func write(_ writer: SafeTensorsWriter, _ name: String, _ t: Tensor, dtype: DType) throws(DataEncodingError) {
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: t.count * dtype.byteSize, alignment: 16)
        defer { out.deallocate() }
        DTypeConversion.convert(UnsafeRawBufferPointer(start: t.data, count: t.count * 4), from: .f32, to: dtype, into: out)
        do { try writer.write(name, part: UnsafeRawBufferPointer(out)) } catch { throw .output(error) }
    }

    /// formats/training-data.md's metadata, with the image names and captions as JSON arrays.
    func metadata(entries: [CaptionEntry], folder: String, options: DataEncodingOptions) throws(DataEncodingError) -> [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let names: String, texts: String
        do {
            names = String(decoding: try encoder.encode(entries.map(\.file)), as: UTF8.self)
            texts = String(decoding: try encoder.encode(entries.map(\.text)), as: UTF8.self)
        } catch { throw .bounds("the image names and captions cannot be written as JSON (\(error))") }
        let vae = components.vae.config, text = components.textEncoder.config
        var meta = [
            "format": TrainingData.formatName,
            "format_version": TrainingData.formatVersion,
            "vae_scaling_factor": "\(vae.scalingFactor)",
            "source": options.source ?? "\(entries.count) images and captions from \(folder) at \(options.size) px (alter encode-data)",
            "vae": components.sources["vae"] ?? "given",
            "text_encoder": "\(components.sources["text_encoder"] ?? "given"): last_hidden_state of \(text.numHiddenLayers) layers (as StableDiffusionPipeline.encode_prompt)",
            "latent_mode": options.latentMode.name,
            "size": "\(options.size)",
            "resample": options.filter.rawValue,
            "images": names,
            "captions": texts,
        ]
        if case .sample(let seed) = options.latentMode { meta["seed"] = "\(seed)" }
        let bytes = meta.reduce(0) { $0 + jsonQuote($1.key).utf8.count + jsonQuote($1.value).utf8.count + 2 }
        guard bytes <= DataEncodingBounds.metadataBytes else {
            throw .bounds("the image names and captions take \(bytes) bytes of metadata; a safetensors header holds at most \(DataEncodingBounds.metadataBytes) (split the data set)")
        }
        return meta
    }
}
