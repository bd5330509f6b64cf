import ALTER
import Foundation
import TensorCore

extension TrainingData {
    /// A deterministic synthetic training set of any shape, for models without real data (random
    /// initialisations, benchmarks). It follows the recipe of the example data
    /// (`scripts/make_fixtures.py --example`), not its exact values: each sample's "prompt" is two
    /// different words out of a `vocabulary`; every word has a context vector and a smooth latent
    /// pattern (per channel a cosine of 0 to 2 cycles across the latent in y and x, with random phase
    /// and amplitude 0.5 to 1.5). A sample's latents are the sum of its two words' patterns, a smooth
    /// per-sample variation (a 4x4 Gaussian grid upsampled bilinearly, times 0.5) and Gaussian noise
    /// times 0.1, all standardised to mean 0 and variance 1 like SD's scaled VAE latents. Its context
    /// rows are [start, word 1, word 2, end, end, ...] with end = end token + 0.5 x the mean of the two
    /// word vectors, plus Gaussian noise times 0.05; `uncond` is [start, end token, ...] plus noise.
    /// Everything is drawn from a `SeededGenerator` seeded by `seed`.
    public static func synthetic(
        count: Int, latentChannels: Int = 4, height: Int, width: Int, contextLength: Int, contextDim: Int,
        vocabulary: Int = 12, seed: UInt64
    ) -> TrainingData {
        precondition(count >= 1 && latentChannels >= 1 && height >= 1 && width >= 1 && contextDim >= 1,
                     "TrainingData.synthetic: every size must be positive")
        precondition(contextLength >= 4, "TrainingData.synthetic: the context needs at least 4 tokens (start, two words, end)")
        precondition(vocabulary >= 2, "TrainingData.synthetic: the vocabulary needs at least two words")
        var rng = SeededGenerator(seed: seed)
        let (n, c, h, w, s, d) = (count, latentChannels, height, width, contextLength, contextDim)
        let start = rng.normals(d), end = rng.normals(d)
        let words = (0..<vocabulary).map { _ in rng.normals(d) }
        // Per word and channel: frequencies in y and x, phase, amplitude.
        struct Look { var fy: Double, fx: Double, phase: Double, amp: Double }
        let looks = (0..<vocabulary).map { _ in
            (0..<c).map { _ in
                Look(fy: Double(rng.index(3)), fx: Double(rng.index(3)), phase: 2 * Double.pi * rng.openUnit(), amp: 0.5 + rng.openUnit())
            }
        }
        let chosen = (0..<n).map { _ -> (Int, Int) in
            let a = rng.index(vocabulary)
            var b = rng.index(vocabulary - 1)
            if b >= a { b += 1 }
            return (a, b)
        }
        // Bilinear upsampling of a 4x4 grid (PyTorch's align_corners=False).
        let grid = 4
        func taps(_ out: Int) -> [(Int, Int, Double)] {
            (0..<out).map { i in
                let src = max(0, (Double(i) + 0.5) * Double(grid) / Double(out) - 0.5)
                let i0 = min(Int(src), grid - 1), i1 = min(i0 + 1, grid - 1)
                return (i0, i1, src - Double(i0))
            }
        }
        let ty = taps(h), tx = taps(w)
        var latents = [Double](repeating: 0, count: n * c * h * w)
        for i in 0..<n {
            for ch in 0..<c {
                let coarse = (0..<(grid * grid)).map { _ in rng.normal() }
                let la = looks[chosen[i].0][ch], lb = looks[chosen[i].1][ch]
                for y in 0..<h {
                    let (y0, y1, ly) = ty[y]
                    for x in 0..<w {
                        let (x0, x1, lx) = tx[x]
                        let v = (1 - ly) * ((1 - lx) * coarse[y0 * grid + x0] + lx * coarse[y0 * grid + x1])
                            + ly * ((1 - lx) * coarse[y1 * grid + x0] + lx * coarse[y1 * grid + x1])
                        let (yy, xx) = (Double(y) / Double(h), Double(x) / Double(w))
                        func pattern(_ l: Look) -> Double { l.amp * cos(2 * Double.pi * (l.fy * yy + l.fx * xx) + l.phase) }
                        latents[((i * c + ch) * h + y) * w + x] = pattern(la) + pattern(lb) + 0.5 * v + 0.1 * rng.normal()
                    }
                }
            }
        }
        let mean = latents.reduce(0, +) / Double(latents.count)
        let variance = latents.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(latents.count - 1, 1))
        let scale = 1 / max(variance.squareRoot(), 1e-12)
        var context = [Float](repeating: 0, count: n * s * d)
        for i in 0..<n {
            let (wa, wb) = (words[chosen[i].0], words[chosen[i].1])
            for k in 0..<s {
                for j in 0..<d {
                    let base: Float
                    switch k {
                    case 0: base = start[j]
                    case 1: base = wa[j]
                    case 2: base = wb[j]
                    default: base = end[j] + 0.25 * (wa[j] + wb[j])
                    }
                    context[(i * s + k) * d + j] = base + 0.05 * Float(rng.normal())
                }
            }
        }
        var uncond = [Float](repeating: 0, count: s * d)
        for k in 0..<s {
            let row = k == 0 ? start : end
            for j in 0..<d { uncond[k * d + j] = row[j] + 0.05 * Float(rng.normal()) }
        }
        let meta = [
            "format": formatName, "format_version": formatVersion,
            "source": "synthetic: TrainingData.synthetic(seed \(seed)); two-word prompts over a \(vocabulary)-word vocabulary, smooth latent patterns per word; not real VAE or text-encoder output",
        ]
        do {
            return try TrainingData(
                latents: Tensor(shape: [n, c, h, w], values: latents.map { Float(($0 - mean) * scale) }),
                context: Tensor(shape: [n, s, d], values: context), uncond: Tensor(shape: [s, d], values: uncond),
                metadata: meta, path: "(synthetic, seed \(seed))")
        } catch {
            preconditionFailure("TrainingData.synthetic: \(error)")  // shapes and finite values are guaranteed above
        }
    }
}
