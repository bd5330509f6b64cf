import Foundation
import SafeTensors
import StableDiffusion

/// What one `alter sample` run did (`--json`, formats/cli-json.md).
public struct SamplingReport: Encodable, Sendable {
    public var model: String
    public var isBundle: Bool
    public var scheduler: String
    public var steps: Int
    public var guidance: Float
    public var seed: UInt64
    public var predictionType: String
    /// Latent height and width.
    public var latent: [Int]
    /// Latents sampled (the UNet batch is twice this with guidance).
    public var batch: Int
    /// Where the unconditional context came from: a file, or "zeros".
    public var uncond: String
    public var output: String
    public var loadSeconds: Double
    public var sampleSeconds: Double
    /// MACs of every UNet call (the whole UNet batch).
    public var macs: Int
    /// MACs of the same calls made dense.
    public var denseMACs: Int
    public var keptMACFraction: Double
    public var calls: [Sampler.Call]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, isBundle = "is_bundle", scheduler, steps, guidance, seed, predictionType = "prediction_type", latent, batch, uncond
        case output, loadSeconds = "load_seconds", sampleSeconds = "sample_seconds", macs, denseMACs = "dense_macs"
        case keptMACFraction = "kept_mac_fraction", calls
    }

    /// The report of `result`, sampled from `model` with `options`.
    public init(result: Sampler.Result, sampler: RoutedSampler, model: String, options: RoutedSampler.Options, uncond: String,
                output: String, loadSeconds: Double, sampleSeconds: Double) {
        let shape = result.latents.shape
        let dense = result.calls.reduce(0) { $0 + result.denseMACsPerSample * $1.batch }
        self.model = model
        if case .bundle = sampler.experts { isBundle = true } else { isBundle = false }
        scheduler = options.scheduler.method.rawValue
        steps = options.scheduler.steps
        guidance = options.guidance
        seed = options.seed
        predictionType = sampler.schedulerConfig.predictionType.rawValue
        latent = [shape[2], shape[3]]
        batch = shape[0]
        self.uncond = uncond
        self.output = output
        self.loadSeconds = loadSeconds
        self.sampleSeconds = sampleSeconds
        macs = result.macs
        denseMACs = dense
        keptMACFraction = Double(result.macs) / Double(max(dense, 1))
        calls = result.calls
    }
}

extension RoutedSampler {
    /// Writes `result.latents` as `latents` [B, C, h, w] F32 to `path` (atomically), with metadata:
    /// the model, scheduler, steps, guidance, seed, prediction type, latent size, unconditional
    /// context, noise, and the timestep and expert of every UNet call.
    public func writeLatents(_ result: Sampler.Result, model: String, options: Options, uncond: String, to path: String) throws(SafeTensorsError) {
        let shape = result.latents.shape
        let metadata: [String: String] = [
            "format": "alter.latents",
            "model": model,
            "scheduler": options.scheduler.method.rawValue,
            "steps": String(options.scheduler.steps),
            "guidance": String(options.guidance),
            "seed": String(options.seed),
            "prediction_type": schedulerConfig.predictionType.rawValue,
            "latent": "\(shape[2])x\(shape[3])",
            "uncond": uncond,
            "noise": "SplitMix64 Box-Muller standard normal, seed \(options.seed)",
            "timesteps": result.calls.map { String($0.timestep) }.joined(separator: ","),
            "experts": result.calls.map { $0.expert.map(String.init) ?? "dense" }.joined(separator: ","),
        ]
        let writer = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "latents", dtype: .f32, shape: shape)], metadata: metadata)
        do {
            try writer.write("latents", bytes: UnsafeRawBufferPointer(start: result.latents.data, count: result.latents.count * 4))
            try writer.finish()
        } catch {
            writer.abort()
            throw error
        }
    }
}
