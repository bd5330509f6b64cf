import Foundation
import SafeTensors

/// Options for reading a whole pipeline: each model's own.
public struct PipelineLoadOptions: Sendable {
    /// The UNet's (`ema`, `allowUnused` also decide which other tensors of an original file may be
    /// left out: see `PipelineCheckpoint.dropped`).
    public var unet = LoadOptions()
    public var textEncoder = CLIPTextLoadOptions()
    public var vae = VAELoadOptions()
    public init() {}
}

/// The three models of an SD2.x pipeline read from one source, a diffusers pipeline folder
/// (`unet/`, `text_encoder/`, `vae/`) or an original single file (`model.diffusion_model.*`,
/// `cond_stage_model.model.*`, `first_stage_model.*`), each matched strictly by its own key table;
/// and every other tensor of the source accounted for: left out for a documented reason
/// (`dropped`), or unused (an error unless the UNet's `allowUnused`).
public final class PipelineCheckpoint: @unchecked Sendable {
    /// Tensors left out of a conversion for one reason.
    public struct DroppedTensors: Sendable, Encodable, Equatable {
        public var reason: String
        public var tensors: [String]

        enum CodingKeys: String, CodingKey { case reason, tensors, tensorCount = "tensor_count" }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(reason, forKey: .reason)
            try c.encode(tensors.count, forKey: .tensorCount)
            try c.encode(tensors, forKey: .tensors)
        }
    }

    /// The path given.
    public let path: String
    /// `.original` for a single file, `.diffusers` for a pipeline folder.
    public let layout: CheckpointLayout
    public let unet: UNetCheckpoint
    public let textEncoder: CLIPTextCheckpoint
    public let vae: VAECheckpoint
    /// A pipeline folder's `scheduler/scheduler_config.json`, when it has one.
    public let scheduler: SchedulerConfig?
    /// Tensors of the source that no model reads, grouped by the allow-list entry that names them.
    public let dropped: [DroppedTensors]
    /// Tensors of the source that no model reads and no allow-list names (only with the UNet's
    /// `allowUnused`; an error otherwise).
    public let unused: [String]
    /// Whether the UNet is the EMA copy.
    public let ema: Bool

    /// Reads the pipeline at `path` strictly.
    public init(path: String, options: PipelineLoadOptions = PipelineLoadOptions()) throws(PipelineError) {
        self.path = path
        let source: CheckpointSource
        do { source = try CheckpointSource.locate(path, variant: options.unet.variant) } catch { throw .unet(error) }
        switch source.kind {
        case .originalSingleFile, .diffusersPipeline: break
        case .diffusersUNet, .diffusersWeightsFile:
            throw .notAPipeline(file: path, "a \(source.kind.rawValue) holds only a UNet; a whole pipeline is read from a diffusers pipeline folder (unet/, vae/, text_encoder/) or an original single file")
        }
        layout = source.layout
        ema = options.unet.ema
        do { unet = try UNetCheckpoint(source: source, options: options.unet) } catch { throw .unet(error) }
        do { textEncoder = try CLIPTextCheckpoint(path: path, options: options.textEncoder) } catch { throw .textEncoder(error) }
        do { vae = try VAECheckpoint(path: path, options: options.vae) } catch { throw .vae(error) }
        if let p = source.schedulerConfigPath {
            do { scheduler = try SchedulerConfig(contentsOfFile: p) } catch { throw .scheduler(error) }
        } else {
            scheduler = nil
        }

        var reasons: [String: [String]] = [:]
        var order: [String] = []
        var unused: [String] = []
        func account(_ store: TensorStore, used: Set<String>, reason: (String) -> String?) {
            for name in store.names where !used.contains(name) {
                if let r = reason(name) {
                    if reasons[r] == nil { order.append(r) }
                    reasons[r, default: []].append(name)
                } else {
                    unused.append(name)
                }
            }
        }
        let unetUsed = Set(unet.keyMap.entries.map(\.stored))
        let textUsed = Set(textEncoder.keyMap.entries.map(\.stored))
        let vaeUsed = Set(vae.keyMap.entries.map(\.stored))
        let layers = textEncoder.config.numHiddenLayers
        let ema = options.unet.ema
        switch layout {
        case .original:
            // One file: every tensor is the UNet's, the text encoder's, the VAE's or on an allow-list.
            account(unet.store, used: unetUsed.union(textUsed).union(vaeUsed)) { name in
                OriginalUNetKeys.droppedReason(name, ema: ema) ?? OriginalCLIPTextKeys.allowedUnusedReason(name, layers: layers)
            }
        case .diffusers:
            account(unet.store, used: unetUsed) { _ in nil }
            account(textEncoder.store, used: textUsed) { CLIPTextKeys.allowedUnusedReason($0) }
            account(vae.store, used: vaeUsed) { _ in nil }
        }
        dropped = order.map { DroppedTensors(reason: $0, tensors: reasons[$0] ?? []) }
        self.unused = unused
        if !unused.isEmpty && !options.unet.allowUnused { throw .unusedTensors(file: path, unused) }
    }

    /// Every file the pipeline was read from (weights and configs), for the output policy.
    var inputPaths: [String] {
        var paths = [path] + unet.source.weightPaths + [unet.configFile, textEncoder.configFile, vae.configFile].compactMap { $0 }
        paths += textEncoder.store.files.map(\.path) + vae.store.files.map(\.path)
        return paths
    }
}
