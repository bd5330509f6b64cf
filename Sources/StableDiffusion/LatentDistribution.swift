import Foundation
import TensorCore

/// diffusers' `DiagonalGaussianDistribution`: the encoder's latent distribution, a per-element
/// normal with `mean` and `logvar` (clamped to [-30, 20] as diffusers does).
public struct LatentDistribution {
    /// [N, L, h, w].
    public let mean: Tensor
    /// [N, L, h, w], each in [-30, 20].
    public let logvar: Tensor

    /// Splits the moments [N, 2L, h, w] (quant_conv's output: mean channels, then log-variance
    /// channels) and clamps the log-variance.
    init(moments m: Tensor) {
        let (n, c2, h, w) = (m.shape[0], m.shape[1], m.shape[2], m.shape[3])
        precondition(m.rank == 4 && c2 % 2 == 0, "LatentDistribution: moments \(m.shape)")
        let l = c2 / 2, plane = l * h * w
        mean = Tensor(uninitialized: [n, l, h, w])
        logvar = Tensor(uninitialized: [n, l, h, w])
        for b in 0..<n {
            let src = m.data + b * 2 * plane
            (mean.data + b * plane).update(from: src, count: plane)
            let dst = logvar.data + b * plane
            for i in 0..<plane { dst[i] = min(max(src[plane + i], -30), 20) }
        }
    }

    /// exp(logvar / 2), [N, L, h, w].
    public var std: Tensor {
        let s = Tensor(uninitialized: logvar.shape)
        for i in 0..<s.count { s.data[i] = Foundation.exp(0.5 * logvar.data[i]) }
        return s
    }

    /// mean + std * eps, with eps standard normal from `generator` (in element order).
    public func sample(using generator: inout SeededGenerator) -> Tensor {
        let eps = generator.normals(mean.count)
        let std = std
        let z = Tensor(uninitialized: mean.shape)
        for i in 0..<z.count { z.data[i] = mean.data[i] + std.data[i] * eps[i] }
        return z
    }
}
