import Foundation
import TensorCore

/// AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW` update), for one parameter
/// group, with a linear warm-up of the learning rate and global gradient-norm clipping.
public final class AdamW: Optimizer {
    public struct Settings: Codable, Sendable, Equatable {
        public var learningRate: Double
        public var beta1 = 0.9
        public var beta2 = 0.999
        public var eps = 1e-8
        public var weightDecay = 1e-2
        /// Steps of linear warm-up from lr/warmup to lr (0: none).
        public var warmupSteps = 0
        /// Clip the global gradient norm to this (0: no clipping).
        public var clipNorm = 1.0
        public init(learningRate: Double) { self.learningRate = learningRate }
    }

    public let settings: Settings
    public let parameters: [Parameter]
    /// First and second moments, one pair per parameter.
    public private(set) var m: [Tensor]
    public private(set) var v: [Tensor]
    /// Updates applied so far.
    public private(set) var step = 0

    public init(parameters: [Parameter], settings: Settings) {
        self.parameters = parameters
        self.settings = settings
        m = parameters.map { Tensor(zeros: $0.shape) }
        v = parameters.map { Tensor(zeros: $0.shape) }
    }

    /// The learning rate of update number `step + 1`.
    public var currentLearningRate: Double {
        let w = settings.warmupSteps
        guard w > 0, step < w else { return settings.learningRate }
        return settings.learningRate * Double(step + 1) / Double(w)
    }

    /// The global L2 norm of the gradients (parameters without a gradient count as zero).
    public func gradientNorm() -> Double {
        var total = 0.0
        for p in parameters {
            guard let g = p.grad else { continue }
            total += Self.sumOfSquares(g)
        }
        return total.squareRoot()
    }

    /// Applies one update from the accumulated gradients, clears them, and returns the gradient
    /// norm before clipping.
    @discardableResult
    public func update() -> Double {
        let norm = gradientNorm()
        apply(norm: norm)
        return norm
    }

    /// Like `update`, but when the gradient norm is not finite nothing is changed (gradients are
    /// cleared, the parameters, moments and step count stay) and nil is returned.
    public func updateIfFinite() -> Double? {
        let norm = gradientNorm()
        guard norm.isFinite else {
            for p in parameters { p.zeroGrad() }
            return nil
        }
        apply(norm: norm)
        return norm
    }

    private func apply(norm: Double) {
        let clip = settings.clipNorm > 0 && norm > settings.clipNorm ? Float(settings.clipNorm / (norm + 1e-6)) : 1
        let lr = currentLearningRate
        step += 1
        // (1 - beta) is formed in Double, as PyTorch does with its Python-float arguments.
        let b1 = Float(settings.beta1), b2 = Float(settings.beta2)
        let c1 = Float(1 - settings.beta1), c2 = Float(1 - settings.beta2)
        let bc1 = 1 - pow(settings.beta1, Double(step)), bc2 = 1 - pow(settings.beta2, Double(step))
        let stepSize = Float(lr / bc1)
        let bc2Root = Float(bc2.squareRoot())
        let decay = Float(1 - lr * settings.weightDecay)
        let eps = Float(settings.eps)
        for (i, p) in parameters.enumerated() {
            guard let g = p.grad else { continue }
            let n = p.value.count
            let wp = p.value.data, gp = g.data, mp = m[i].data, vp = v[i].data
            Parallel.forRanges(n, minChunk: 1 << 15) { r in
                for j in r {
                    let gj = gp[j] * clip
                    wp[j] *= decay
                    mp[j] = b1 * mp[j] + c1 * gj
                    vp[j] = b2 * vp[j] + c2 * gj * gj
                    wp[j] -= stepSize * mp[j] / (vp[j].squareRoot() / bc2Root + eps)
                }
            }
            p.markUpdated()
            p.zeroGrad()
        }
    }

    /// The first moments (`m.` + parameter name), then the second moments (`v.` + name).
    public var stateTensors: [(name: String, tensor: Tensor)] {
        parameters.indices.map { ("m." + parameters[$0].name, m[$0]) } + parameters.indices.map { ("v." + parameters[$0].name, v[$0]) }
    }

    /// Restores the step count and the moments, first then second, as `stateTensors` lists them.
    public func restore(step: Int, state: [Tensor]) {
        precondition(state.count == 2 * parameters.count, "AdamW.restore: \(state.count) state tensors for \(parameters.count) parameters")
        restore(step: step, m: Array(state.prefix(parameters.count)), v: Array(state.suffix(parameters.count)))
    }

    /// Restores moments and the step count (from a run checkpoint).
    public func restore(step: Int, m: [Tensor], v: [Tensor]) {
        precondition(m.count == parameters.count && v.count == parameters.count, "AdamW.restore: state count")
        for i in parameters.indices {
            precondition(m[i].count == parameters[i].value.count && v[i].count == parameters[i].value.count, "AdamW.restore: shape")
        }
        self.step = step
        self.m = m.enumerated().map { $1.reshaped(parameters[$0].shape) }
        self.v = v.enumerated().map { $1.reshaped(parameters[$0].shape) }
    }

    static func sumOfSquares(_ t: Tensor) -> Double {
        let n = t.count, p = t.data
        let chunks = Parallel.chunks(n, minChunk: 1 << 16)
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { out in
            let o = out.baseAddress!
            Parallel.forChunks(n, minChunk: 1 << 16) { c, r in
                var s = 0.0
                for j in r { s += Double(p[j]) * Double(p[j]) }
                o[c] = s
            }
        }
        return partial.reduce(0, +)
    }
}
