import Foundation
import SafeTensors

/// What a whole-pipeline conversion is asked to do besides the layout (which is always the other
/// one).
public struct PipelineConversionOptions: Sendable {
    /// Storage dtype of every tensor written; nil keeps each tensor's stored dtype.
    public var dtype: DType?
    /// Replace an existing output of the same kind.
    public var overwrite = false
    /// Original -> pipeline: a diffusers `tokenizer/` folder (`vocab.json`, `merges.txt`, ...),
    /// copied into the pipeline. Required unless `withoutTokenizer`.
    public var tokenizer: String?
    /// Original -> pipeline: write the folder without a tokenizer (`model_index.json` lists it as
    /// `[null, null]`; diffusers then needs `prompt_embeds` or a tokenizer passed in).
    public var withoutTokenizer = false
    /// Original -> pipeline: the scheduler's `prediction_type` (an original file does not record
    /// it: SD2.x 768-v models predict v, the 512 base model epsilon). Required.
    public var predictionType: NoiseSchedule.PredictionType?
    public init() {}
}

/// What a whole-pipeline conversion wrote (`alter convert --pipeline --json`, formats/cli-json.md).
public struct PipelineConversionSummary: Sendable, Encodable {
    /// One model written.
    public struct Part: Sendable, Encodable {
        /// `unet`, `vae` or `text_encoder`.
        public var component: String
        /// Its weights file (the output itself for the original layout).
        public var weightsPath: String
        /// The config.json written (nil for the original layout).
        public var configPath: String?
        /// Where the architecture came from: a config.json, or "inferred from tensors".
        public var configOrigin: String
        /// What inference assumed (empty when a config.json was read).
        public var assumptions: [String]
        public var tensors: Int
        public var bytes: Int

        enum CodingKeys: String, CodingKey {
            case component, weightsPath = "weights_path", configPath = "config_path", configOrigin = "config_origin"
            case assumptions, tensors = "tensor_count", bytes
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(component, forKey: .component)
            try c.encode(weightsPath, forKey: .weightsPath)
            try c.encode(configPath, forKey: .configPath)
            try c.encode(configOrigin, forKey: .configOrigin)
            try c.encode(assumptions, forKey: .assumptions)
            try c.encode(tensors, forKey: .tensors)
            try c.encode(bytes, forKey: .bytes)
        }
    }

    /// The checkpoint read.
    public var input: String
    /// The folder or file written.
    public var output: String
    /// The layout written.
    public var layout: CheckpointLayout
    /// The storage dtype written, or "as stored".
    public var dtype: String
    /// Tensors written, all models together.
    public var tensors: Int
    /// Bytes of tensor data written.
    public var bytes: Int
    public var components: [Part]
    /// The tokenizer folder copied into the pipeline (nil: none written).
    public var tokenizer: String?
    /// The scheduler's prediction type: written (original -> pipeline), or the pipeline's, which
    /// the original layout does not store (pipeline -> original; nil when it has no scheduler).
    public var predictionType: String?
    /// Tensors of the source left out, by reason (formats/cli-json.md lists the reasons).
    public var dropped: [PipelineCheckpoint.DroppedTensors]
    /// Tensors written that the source does not have, by reason (the placeholder last resblock).
    public var added: [PipelineCheckpoint.DroppedTensors]
    /// Tensors of the source that no model reads and no allow-list names (allowed by the UNet's
    /// `allowUnused`; not written).
    public var unusedTensors: [String]
    /// Wall time of the conversion, filled in by the caller.
    public var seconds = 0.0

    enum CodingKeys: String, CodingKey, CaseIterable {
        case input, output, layout, dtype, tensors = "tensor_count", bytes, components, tokenizer
        case predictionType = "prediction_type", dropped, added, unusedTensors = "unused_tensors", seconds
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(input, forKey: .input)
        try c.encode(output, forKey: .output)
        try c.encode(layout, forKey: .layout)
        try c.encode(dtype, forKey: .dtype)
        try c.encode(tensors, forKey: .tensors)
        try c.encode(bytes, forKey: .bytes)
        try c.encode(components, forKey: .components)
        try c.encode(tokenizer, forKey: .tokenizer)
        try c.encode(predictionType, forKey: .predictionType)
        try c.encode(dropped, forKey: .dropped)
        try c.encode(added, forKey: .added)
        try c.encode(unusedTensors, forKey: .unusedTensors)
        try c.encode(seconds, forKey: .seconds)
    }
}

extension PipelineCheckpoint {
    /// The reason given for the placeholder resblock an original file gets (`CLIPTextKeyMap.placeholderLayer`).
    public static let placeholderReason = "an all-zero last resblock (the identity): SD2.x readers skip the last resblock, so the real layers come before it"

    /// Writes the pipeline in the other layout: an original single file becomes a diffusers
    /// pipeline folder (`PipelineFolder`), a pipeline folder an original single file holding the
    /// UNet, the VAE and the text encoder. Every tensor goes through the models' key tables (one
    /// per layout and model): OpenCLIP's fused `in_proj` is split into q/k/v or fused back, the
    /// VAE's 1x1-convolution attention projections become matrices or convolutions again. The
    /// original file's text encoder gets one more resblock than the pipeline's, all zeros
    /// (`CLIPTextKeyMap.placeholderLayer`), so that every SD2.x reader takes the same layers.
    ///
    /// Streams one tensor at a time; the output appears only when complete (`AtomicDirectory`,
    /// `SafeTensorsWriter`), follows `OutputTarget`'s policy and is locked against other alter
    /// processes. `progress` gets (bytes done, bytes total).
    public func convert(to output: String, options: PipelineConversionOptions,
                        progress: ((Int, Int) -> Void)? = nil) throws(PipelineError) -> PipelineConversionSummary {
        if let dtype = options.dtype, !dtype.isFloatConvertible {
            throw .request("\(output): target dtype must be F32, F16 or BF16, not \(dtype.rawValue)")
        }
        let target: CheckpointLayout = layout == .original ? .diffusers : .original
        var tokenizerDir: String?
        if target == .diffusers {
            guard options.predictionType != nil else {
                throw .request("\(path): an original file does not record the prediction type: epsilon for SD2.x 512 base models, v_prediction for 768-v models (give the prediction type)")
            }
            if let t = options.tokenizer {
                tokenizerDir = try Self.checkTokenizer(t)
            } else if !options.withoutTokenizer {
                throw .request("\(output): a diffusers pipeline needs a tokenizer (give a diffusers tokenizer folder, or ask for none)")
            }
        }
        let kind: OutputTarget.Kind = target == .original ? .file : .pipelineFolder
        let lock: PathLock
        do {
            try OutputTarget(path: output, kind: kind, replace: options.overwrite, inputs: inputPaths + [options.tokenizer].compactMap { $0 }).prepare()
            lock = try PathLock(beside: output)
        } catch { throw .output(.safetensors(error)) }
        defer { lock.release() }

        let plans = try plan(target: target, dtype: options.dtype)
        let total = plans.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.spec.byteCount } }
        var done = 0
        let report: (Int) -> Void = { n in
            done += n
            progress?(done, total)
        }
        var parts: [PipelineConversionSummary.Part] = []
        var summary = PipelineConversionSummary(
            input: path, output: output, layout: target, dtype: options.dtype?.rawValue ?? "as stored", tensors: 0, bytes: 0, components: [],
            tokenizer: nil, predictionType: nil, dropped: dropped, added: [], unusedTensors: unused)
        switch target {
        case .original:
            let all = plans.flatMap(\.tensors)
            let bytes: Int
            do { bytes = try ConvertedTensor.write(all, to: output, progress: report) } catch { throw .output(.safetensors(error)) }
            for p in plans {
                parts.append(.init(component: p.component, weightsPath: output, configPath: nil, configOrigin: p.configOrigin,
                                   assumptions: p.assumptions, tensors: p.tensors.count, bytes: p.tensors.reduce(0) { $0 + $1.spec.byteCount }))
            }
            summary.bytes = bytes
            summary.predictionType = scheduler?.predictionType.rawValue
            let placeholder = Set(CLIPTextKeyMap.placeholderLayer(after: textEncoder.config).map(\.stored))
            summary.added = [.init(reason: Self.placeholderReason, tensors: all.map(\.name).filter { placeholder.contains($0) }.sorted())]
        case .diffusers:
            let folder: AtomicDirectory
            do { folder = try AtomicDirectory(destination: output) } catch { throw .output(.safetensors(error)) }
            func write(_ data: Data, _ relative: String) throws(PipelineError) {
                do { try data.write(to: URL(fileURLWithPath: folder.path + "/" + relative)) } catch {
                    throw .output(.io(file: output + "/" + relative, "cannot write: \(error.localizedDescription)"))
                }
            }
            for p in plans {
                do { try folder.createSubdirectory(p.folder) } catch { throw .output(.safetensors(error)) }
                let weights = p.folder + "/" + p.weightsName + ".safetensors"
                let bytes: Int
                do { bytes = try ConvertedTensor.write(p.tensors, to: folder.path + "/" + weights, progress: report) } catch {
                    throw .output(.safetensors(error))
                }
                let config = p.folder + "/config.json"
                try write(p.configJSON, config)
                parts.append(.init(component: p.component, weightsPath: output + "/" + weights, configPath: output + "/" + config,
                                   configOrigin: p.configOrigin, assumptions: p.assumptions, tensors: p.tensors.count, bytes: bytes))
                summary.bytes += bytes
            }
            var scheduler = SchedulerConfig.sd21
            scheduler.predictionType = options.predictionType ?? scheduler.predictionType
            do { try folder.createSubdirectory(PipelineFolder.scheduler) } catch { throw .output(.safetensors(error)) }
            try write(scheduler.diffusersJSON(className: PipelineFolder.schedulerClass), PipelineFolder.schedulerConfig)
            summary.predictionType = scheduler.predictionType.rawValue
            if let tokenizerDir {
                do { try folder.createSubdirectory(PipelineFolder.tokenizer) } catch { throw .output(.safetensors(error)) }
                for name in PipelineFolder.tokenizerFiles {
                    let src = tokenizerDir + "/" + name
                    guard ((try? RegularFile.status(src)) ?? nil) != nil else { continue }
                    let data: Data
                    do { data = try RegularFile.read(src, limit: CLIPTokenizer.fileLimit) } catch {
                        throw .tokenizer(CLIPTokenizerError(file: src, error.reason))
                    }
                    try write(data, PipelineFolder.tokenizer + "/" + name)
                }
                summary.tokenizer = tokenizerDir
            }
            try write(PipelineFolder.modelIndexJSON(tokenizer: tokenizerDir != nil), PipelineFolder.modelIndex)
            do { try folder.commit(replacing: options.overwrite) } catch { throw .output(.safetensors(error)) }
        }
        summary.components = parts
        summary.tensors = parts.reduce(0) { $0 + $1.tensors }
        return summary
    }

    /// One model's tensors in the target layout, and where it goes in a pipeline folder.
    struct Plan {
        var component: String
        var folder: String
        var weightsName: String
        var configJSON: Data
        var configOrigin: String
        var assumptions: [String]
        var tensors: [ConvertedTensor]
    }

    /// The tensors of the three models in `target`, driven by their key tables.
    func plan(target: CheckpointLayout, dtype: DType?) throws(PipelineError) -> [Plan] {
        func missing(_ file: String, _ canonical: String) -> SafeTensorsError { SafeTensorsError(file: file, tensor: canonical, .noSuchTensor) }
        // UNet: renames only.
        var unetTensors: [ConvertedTensor] = []
        for e in UNetKeyMap(config: unet.config, layout: target).entries {
            guard let loc = unet.location(e.canonical) else { throw .unet(.safetensors(missing(unet.source.path, e.canonical))) }
            unetTensors.append(ConvertedTensor(name: e.stored, dtype: dtype ?? loc.info.dtype, shape: e.shape, pieces: [.whole(loc)]))
        }
        do { try unet.config.validate(source: unet.configOrigin) } catch { throw .unet(error) }
        // VAE: renames, and [C, C] <-> [C, C, 1, 1] attention projections (the same bytes).
        var vaeTensors: [ConvertedTensor] = []
        for e in VAEKeyMap(config: vae.config, layout: target).entries {
            guard let (loc, _) = vae.stored(e.canonical) else { throw .vae(.checkpoint(.safetensors(missing(vae.path, e.canonical)))) }
            vaeTensors.append(ConvertedTensor(name: e.stored, dtype: dtype ?? loc.info.dtype, shape: e.storedShape, pieces: [.whole(loc)]))
        }
        // Text encoder: renames; q/k/v rows of OpenCLIP's fused in_proj split off or fused back.
        var textTensors: [ConvertedTensor] = []
        var fused: [String: Int] = [:]
        for e in CLIPTextKeyMap(config: textEncoder.config, layout: target).entries {
            guard let (loc, source) = textEncoder.stored(e.canonical) else {
                throw .textEncoder(.checkpoint(.safetensors(missing(textEncoder.path, e.canonical))))
            }
            let count = e.shape.reduce(1, *)
            let piece = ConvertedTensor.Piece.stored(loc, offset: (source.part ?? 0) * count, count: count)
            if let part = e.part {
                // Entries of one fused tensor come in q, k, v order (CLIPTextKeys.parameters).
                if let i = fused[e.stored] {
                    precondition(textTensors[i].pieces.count == part, "CLIPTextKeyMap: fused parts of \(e.stored) out of order")
                    textTensors[i].pieces.append(piece)
                } else {
                    precondition(part == 0, "CLIPTextKeyMap: fused parts of \(e.stored) out of order")
                    fused[e.stored] = textTensors.count
                    textTensors.append(ConvertedTensor(name: e.stored, dtype: dtype ?? loc.info.dtype, shape: e.storedShape, pieces: [piece]))
                }
            } else {
                textTensors.append(ConvertedTensor(name: e.stored, dtype: dtype ?? loc.info.dtype, shape: e.storedShape, pieces: [piece]))
            }
        }
        if target == .original {
            let zerosDType = dtype ?? textTensors.first?.dtype ?? .f32
            for e in CLIPTextKeyMap.placeholderLayer(after: textEncoder.config) {
                textTensors.append(ConvertedTensor(name: e.stored, dtype: zerosDType, shape: e.storedShape,
                                                   pieces: [.zeros(count: e.storedShape.reduce(1, *))]))
            }
        }
        func origin(_ file: String?) -> String { file ?? "inferred from tensors" }
        return [
            Plan(component: "unet", folder: PipelineFolder.unet, weightsName: CheckpointSource.weightsName, configJSON: unet.config.diffusersJSON(),
                 configOrigin: unet.configOrigin, assumptions: unet.assumptions, tensors: unetTensors),
            Plan(component: "vae", folder: PipelineFolder.vae, weightsName: VAECheckpoint.weightsName, configJSON: vae.config.diffusersJSON(),
                 configOrigin: origin(vae.configFile), assumptions: vae.assumptions, tensors: vaeTensors),
            Plan(component: "text_encoder", folder: PipelineFolder.textEncoder, weightsName: CLIPTextCheckpoint.weightsName,
                 configJSON: textEncoder.config.transformersJSON(), configOrigin: origin(textEncoder.configFile),
                 assumptions: textEncoder.assumptions, tensors: textTensors),
        ]
    }

    /// `path` if it is a diffusers tokenizer folder that loads (a pipeline folder: its `tokenizer/`).
    static func checkTokenizer(_ path: String) throws(PipelineError) -> String {
        var dir = path
        if ((try? RegularFile.status(path + "/" + PipelineFolder.tokenizer + "/vocab.json")) ?? nil) != nil {
            dir = path + "/" + PipelineFolder.tokenizer
        }
        for name in PipelineFolder.tokenizerFiles.prefix(PipelineFolder.requiredTokenizerFiles) {
            guard ((try? RegularFile.status(dir + "/" + name)) ?? nil)?.kind == .regular else {
                throw .tokenizer(CLIPTokenizerError(file: path, "not a diffusers tokenizer folder: no \(name) (a pipeline's tokenizer/ holds vocab.json and merges.txt)"))
            }
        }
        do { _ = try CLIPTokenizer(folder: dir) } catch { throw .tokenizer(error) }
        return dir
    }
}
