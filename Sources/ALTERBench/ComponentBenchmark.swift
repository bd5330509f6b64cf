import Foundation
import NN
import StableDiffusion
import TensorCore

/// The text encoder and the VAE timed part by part (`alter bench components`): by default SD2.1's
/// at full size and deterministic random init, the yardstick that
/// `scripts/bench_components_vs_torch.py` sets beside transformers' and diffusers' models.
public enum ComponentBenchmark {
    /// One timed computation.
    public enum Part: String, CaseIterable, Sendable {
        /// The text encoder on one prompt of `maxPositionEmbeddings` (77) tokens.
        case text
        /// VAE decode of a 64x64 latent (a 512x512 image for SD2.1).
        case decode64
        /// VAE decode of a 96x96 latent (a 768x768 image for SD2.1).
        case decode96
        /// VAE encode of a 512x512 image (the mean of the latent distribution).
        case encode512

        var usesVAE: Bool { self != .text }
    }

    public struct Row: Encodable, Sendable {
        public var part: String
        /// The input's shape ([1, tokens] for the text encoder).
        public var inputShape: [Int]
        public var outputShape: [Int]
        public var warmupSeconds: Double
        public var seconds: [Double]
        public var bestSeconds: Double
        public var medianSeconds: Double
        /// The process's peak resident memory after this part (it includes every earlier part).
        public var peakResidentMB: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case part, inputShape = "input_shape", outputShape = "output_shape", warmupSeconds = "warmup_seconds", seconds
            case bestSeconds = "best_seconds", medianSeconds = "median_seconds", peakResidentMB = "peak_resident_mb"
        }
    }

    public struct Report: Encodable, Sendable {
        public var threads: Int
        public var blasCore: String
        /// Parameters of the models built (0 for one not built).
        public var textEncoderParameters: Int
        public var vaeParameters: Int
        public var rows: [Row]
        public var peakResidentMB: Int

        enum CodingKeys: String, CodingKey, CaseIterable {
            case threads, blasCore = "blas_core", textEncoderParameters = "text_encoder_parameters", vaeParameters = "vae_parameters"
            case rows, peakResidentMB = "peak_resident_mb"
        }
    }

    /// Token ids of one deterministic prompt: BOS, a few word ids, EOS, then padding (id 0, as
    /// SD2.1's tokenizer pads) up to `length`.
    public static func promptIDs(length: Int, vocab: Int) -> [Int] {
        let words = [320, 8853, 539, 550, 18376, 6765, 320, 4558].map { $0 % vocab }
        let bos = 49406 % vocab, eos = 49407 % vocab
        return Array(([bos] + words + [eos] + Array(repeating: 0, count: length)).prefix(length))
    }

    /// Builds the models the parts need from `RandomParameters(seed:)`, then per part one warm-up
    /// and `runs` timed calls. Inputs are drawn from a `SeededGenerator` (latents normal, images
    /// uniform in [-1, 1]). `profile` is called once per part after its timed calls (for a kernel
    /// profile) with a closure that makes one more call. Throws when a model cannot be built or an
    /// input is refused.
    public static func run(parts: [Part], runs: Int, text: CLIPTextConfig = .sd21, vae vaeConfig: VAEConfig = .sd21,
                           seed: UInt64 = 21, profile: ((Part, () -> Void) -> Void)? = nil) throws -> Report {
        precondition(runs > 0, "ComponentBenchmark: runs must be positive")
        let parameters = RandomParameters(seed: seed)
        let encoder = parts.contains(.text) ? try CLIPTextEncoder(config: text, parameters: parameters) : nil
        let vae = parts.contains(where: \.usesVAE) ? try AutoencoderKL(config: vaeConfig, parameters: parameters) : nil
        var rng = SeededGenerator(seed: seed, stream: "component-inputs")
        var rows: [Row] = []
        for part in parts {
            let input: [Int]
            let call: () throws -> Tensor
            let f = vaeConfig.downsamplingFactor
            switch part {
            case .text:
                guard let encoder else { preconditionFailure("text encoder built for .text") }
                let ids = [promptIDs(length: text.maxPositionEmbeddings, vocab: text.vocabSize)]
                input = [1, ids[0].count]
                call = { try encoder.encode(ids) }
            case .decode64, .decode96:
                guard let vae else { preconditionFailure("VAE built for decoding") }
                let side = part == .decode64 ? 64 : 96
                input = [1, vaeConfig.latentChannels, side, side]
                let z = Tensor(shape: input, values: rng.normals(input.reduce(1, *)))
                call = { try vae.decode(z) }
            case .encode512:
                guard let vae else { preconditionFailure("VAE built for encoding") }
                let side = 512 / f * f
                input = [1, vaeConfig.inChannels, side, side]
                let image = Tensor(shape: input, values: (0..<input.reduce(1, *)).map { _ in Float(2 * rng.openUnit() - 1) })
                call = { try vae.encode(image).mean }
            }
            var t0 = Measurement.now()
            let out = try call()
            let warmup = Measurement.now() - t0
            var times: [Double] = []
            for _ in 0..<runs {
                t0 = Measurement.now()
                _ = try call()
                times.append(Measurement.now() - t0)
            }
            profile?(part) { _ = try? call() }
            rows.append(Row(part: part.rawValue, inputShape: input, outputShape: out.shape, warmupSeconds: warmup, seconds: times,
                            bestSeconds: times.min() ?? 0, medianSeconds: Measurement.median(times),
                            peakResidentMB: Measurement.peakResidentMB()))
        }
        func count(_ ps: [Parameter]?) -> Int { ps?.reduce(0) { $0 + $1.value.count } ?? 0 }
        return Report(threads: Parallel.workers, blasCore: BLASCoreSelection.current, textEncoderParameters: count(encoder?.parameters),
                      vaeParameters: count(vae?.parameters), rows: rows, peakResidentMB: Measurement.peakResidentMB())
    }
}
