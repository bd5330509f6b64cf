/// Element-wise arithmetic.
public enum Elementwise {
    /// f applied to every element, 8 at a time, spread over the cores.
    @inlinable
    public static func map(_ x: Tensor, _ f: (SIMD8<Float>) -> SIMD8<Float>) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        let xp = x.data, yp = y.data
        Parallel.forRanges(x.count, minChunk: 1 << 14) { r in
            VectorMath.map(xp + r.lowerBound, yp + r.lowerBound, r.count, f)
        }
        return y
    }

    /// a + b (same shape).
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        Profiler.shared.measure("elementwise") {
            precondition(a.shape == b.shape, "add \(a.shape) \(b.shape)")
            let y = Tensor(uninitialized: a.shape)
            let ap = a.data, bp = b.data, yp = y.data
            Parallel.forRanges(a.count, minChunk: 1 << 15) { r in
                for i in r { yp[i] = ap[i] + bp[i] }
            }
            return y
        }
    }

    /// x: [N, C, ...] plus a per-(sample, channel) value b: [N, C].
    public static func addPerChannel(_ x: Tensor, _ b: Tensor) -> Tensor {
        Profiler.shared.measure("elementwise") {
            let (n, c) = (x.shape[0], x.shape[1])
            precondition(b.shape == [n, c], "addPerChannel \(x.shape) \(b.shape)")
            let s = x.count / (n * c)
            let y = Tensor(uninitialized: x.shape)
            let xp = x.data, bp = b.data, yp = y.data
            Parallel.forRanges(n * c, minChunk: 4) { r in
                for nc in r {
                    let v = bp[nc]
                    VectorMath.map(xp + nc * s, yp + nc * s, s) { $0 + v }
                }
            }
            return y
        }
    }

    /// Per-sample blend (1 - m) * a + m * b, with m: [N] and a, b: [N, ...].
    public static func blend(_ a: Tensor, _ b: Tensor, mix m: [Float]) -> Tensor {
        precondition(a.shape == b.shape && m.count == a.shape[0], "blend \(a.shape) \(b.shape) \(m.count)")
        let per = a.count / max(a.shape[0], 1)
        let y = Tensor(uninitialized: a.shape)
        for i in 0..<m.count {
            let mi = m[i], ap = a.data + i * per, bp = b.data + i * per, yp = y.data + i * per
            for j in 0..<per { yp[j] = (1 - mi) * ap[j] + mi * bp[j] }
        }
        return y
    }

    /// x + s.
    public static func addScalar(_ x: Tensor, _ s: Float) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        VectorMath.map(x.data, y.data, x.count) { $0 + s }
        return y
    }

    /// x * s.
    public static func scale(_ x: Tensor, _ s: Float) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        VectorMath.map(x.data, y.data, x.count) { $0 * s }
        return y
    }
}

/// diffusers' sinusoidal timestep embedding (`get_timestep_embedding`), computed in Double.
public enum TimestepEmbedding {
    /// timesteps: [N] -> [N, dim].
    public static func sinusoidal(_ timesteps: [Float], dim: Int, flipSinToCos: Bool, freqShift: Float, maxPeriod: Double = 10000) -> Tensor {
        let half = dim / 2
        let y = Tensor(zeros: [timesteps.count, dim])
        for (i, t) in timesteps.enumerated() {
            let row = y.data + i * dim
            for j in 0..<half {
                let exponent = -Foundation_log(maxPeriod) * Double(j) / (Double(half) - Double(freqShift))
                let arg = Double(t) * Foundation_exp(exponent)
                let s = Float(Foundation_sin(arg)), c = Float(Foundation_cos(arg))
                if flipSinToCos {
                    row[j] = c
                    row[half + j] = s
                } else {
                    row[j] = s
                    row[half + j] = c
                }
            }
        }
        return y
    }
}
