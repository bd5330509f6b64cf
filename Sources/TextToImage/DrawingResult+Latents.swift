import ExpertBundle
import Foundation
import SafeTensors
import StableDiffusion
import TensorCore

extension DrawingResult {
    /// Writes the final latents of every image as `latents` [N, C, h, w] F32 (image order: prompts
    /// outermost, then seeds) to `path`, atomically, with metadata: `format` alter.latents, the
    /// model, scheduler, steps, guidance, prediction type, latent size, `seeds` and `prompts` (JSON
    /// arrays, one entry per image) and the noise rule.
    public func writeLatents(to path: String, model: String, options: RoutedSampler.Options, predictionType: String) throws(SafeTensorsError) {
        guard let first = images.first else { return }
        let c = first.latents.shape[1], h = latentSize.height, w = latentSize.width
        let shape = [images.count, c, h, w]
        func json(_ v: Any) -> String {
            (try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .withoutEscapingSlashes])).flatMap { String(data: $0, encoding: .utf8) } ?? "[]"
        }
        let metadata: [String: String] = [
            "format": "alter.latents",
            "model": model,
            "scheduler": options.scheduler.method.rawValue,
            "steps": String(options.scheduler.steps),
            "guidance": String(options.guidance),
            "prediction_type": predictionType,
            "latent": "\(h)x\(w)",
            "seeds": json(images.map { String($0.seed) }),
            "prompts": json(images.map(\.prompt)),
            "noise": "per image: SplitMix64 Box-Muller standard normal [1, \(c), \(h), \(w)] from the image's seed",
        ]
        let writer = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "latents", dtype: .f32, shape: shape)], metadata: metadata)
        do throws(SafeTensorsError) {
            let all = Tensor(uninitialized: shape)
            var offset = 0
            for image in images {
                (all.data + offset).update(from: image.latents.data, count: image.latents.count)
                offset += image.latents.count
            }
            try writer.write("latents", bytes: UnsafeRawBufferPointer(start: all.data, count: all.count * 4))
            try writer.finish()
        } catch {
            writer.abort()
            throw error
        }
    }
}
