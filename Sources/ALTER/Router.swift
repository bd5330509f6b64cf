import Foundation
import NN
import StableDiffusion
import TensorCore

/// How the training timesteps are assigned to experts (docs/method.md, section 4). The
/// hypernetwork draws relaxed routes from its router at every hypernetwork step and takes the
/// noise-free routes when the masks freeze; a router may add a loss of its own to the
/// hypernetwork objective.
public protocol Router: AnyObject {
    /// The number of experts it routes to.
    var experts: Int { get }
    /// The trainable parameters (none for fixed routings).
    var parameters: [Parameter] { get }
    /// Routes of every training timestep on `tape`: [T, experts], one-hot values; for a learned
    /// router they carry straight-through gradients of a Gumbel-softmax at `temperature` with noise
    /// from `rng` (a fixed router draws nothing). Also returns the hard route of each timestep.
    func relaxedRoutes(on tape: Tape, temperature: Float, rng: inout SeededGenerator) -> RelaxedRoutes
    /// The noise-free route of every training timestep.
    func hardRoutes() -> [Int]
    /// The router's own term of the hypernetwork objective for this draw (unweighted), if any.
    func loss(on tape: Tape, _ routes: RelaxedRoutes) -> Var?
}

/// One draw of relaxed routes.
public struct RelaxedRoutes {
    /// [T, experts], one-hot values.
    public var routes: Var
    /// The expert of each timestep.
    public var route: [Int]
    /// The router's logits [T, experts] behind the draw (learned routing only).
    public var logits: Var?
    /// The Gumbel noise added to the logits, [T, experts] (learned routing only).
    public var noise: Tensor? = nil
}

extension Router {
    /// One-hot rows [index.count, n].
    static func oneHot(_ index: [Int], _ n: Int) -> Tensor {
        let t = Tensor(zeros: [index.count, n])
        for (i, j) in index.enumerated() { t.data[i * n + j] = 1 }
        return t
    }

    /// The column of the largest value in each row of a [rows, cols] tensor (the first on ties).
    static func argmaxRows(_ x: Tensor) -> [Int] {
        let (r, c) = (x.shape[0], x.shape[1])
        return (0..<r).map { i in
            var best = 0
            for j in 1..<max(c, 1) where x.data[i * c + j] > x.data[i * c + best] { best = j }
            return best
        }
    }
}

/// A fixed routing: equal timestep intervals, one per expert (expert of t = t * E / T), or a
/// single expert for every timestep.
public final class FixedRouter: Router {
    public let experts: Int
    public let trainSteps: Int
    public var parameters: [Parameter] { [] }

    /// `experts` equal intervals of `trainSteps` timesteps (1 expert: static routing).
    public init(experts: Int, trainSteps: Int) {
        self.experts = experts
        self.trainSteps = trainSteps
    }

    public func hardRoutes() -> [Int] { (0..<trainSteps).map { $0 * experts / trainSteps } }

    public func relaxedRoutes(on tape: Tape, temperature: Float, rng: inout SeededGenerator) -> RelaxedRoutes {
        let route = hardRoutes()
        return RelaxedRoutes(routes: tape.constant(Self.oneHot(route, experts)), route: route, logits: nil)
    }

    public func loss(on tape: Tape, _ routes: RelaxedRoutes) -> Var? { nil }
}

/// ALTER's temporal router: an MLP on the UNet's own sinusoidal timestep embedding,
/// Linear(emb, hidden) -> LayerNorm -> ReLU -> Linear(hidden, E, no bias), routed by Gumbel-softmax
/// with straight-through hard decisions; its loss is the expert balance loss.
public final class LearnedRouter: Router {
    public let experts: Int
    /// The router's input: the timestep embedding of t = 0..<T, [T, emb].
    public let timeEmbedding: Tensor
    let linear1: LinearLayer, norm: LayerNormLayer, linear2: LinearLayer

    /// A router for the training timesteps embedded in `timeEmbedding` [T, emb] with parameters
    /// (`router.linear1`, `router.norm`, `router.linear2`) from `source`.
    public init(timeEmbedding: Tensor, hidden: Int, experts: Int, parameters source: some ParameterSource) throws {
        self.experts = experts
        self.timeEmbedding = timeEmbedding
        let emb = timeEmbedding.shape[1]
        linear1 = try LinearLayer(source, "router.linear1", in: emb, out: hidden)
        norm = try LayerNormLayer(source, "router.norm", channels: hidden, eps: 1e-5)
        linear2 = try LinearLayer(source, "router.linear2", in: hidden, out: experts, bias: false)
    }

    public var parameters: [Parameter] { linear1.parameters + norm.parameters + linear2.parameters }

    /// Router logits for every training timestep: [T, experts].
    public func logits(on tape: Tape) -> Var {
        let h = tape.relu(norm(linear1(tape.constant(timeEmbedding), on: tape), on: tape))
        return linear2(h, on: tape)
    }

    public func hardRoutes() -> [Int] { Self.argmaxRows(logits(on: Tape(recording: false)).value) }

    /// softmax((logits + g) / tau) with Gumbel noise g, made one-hot by its argmax (straight-through).
    public func relaxedRoutes(on tape: Tape, temperature tau: Float, rng: inout SeededGenerator) -> RelaxedRoutes {
        let l = logits(on: tape)
        let t = timeEmbedding.shape[0]
        let noise = Tensor(shape: [t, experts], values: rng.gumbels(t * experts))
        let probs = tape.softmax(tape.scale(tape.add(l, tape.constant(noise)), 1 / tau))
        let route = Self.argmaxRows(probs.value)
        return RelaxedRoutes(routes: tape.straightThrough(probs, hard: Self.oneHot(route, experts)), route: route, logits: l, noise: noise)
    }

    /// L_balance = E * sum_i F_i * P_i over all training timesteps: F_i the share of noise-free
    /// argmax assignments to expert i (no gradient), P_i its mean router probability softmax(logits).
    public func loss(on tape: Tape, _ routes: RelaxedRoutes) -> Var? {
        guard let logits = routes.logits else { return nil }
        let probs = tape.softmax(logits)
        let t = logits.shape[0]
        let counts = Self.argmaxRows(logits.value).reduce(into: [Float](repeating: 0, count: experts)) { $0[$1] += 1 }
        let f = tape.constant(Tensor(shape: [experts], values: counts.map { $0 / Float(t) }))
        return tape.scale(tape.sum(tape.multiply(tape.meanRows(probs), f)), Float(experts))
    }

    /// The mean margin between the top two noise-free logits over the training timesteps (how
    /// decided the router is); nil with one expert.
    public func margin() -> Double? {
        let x = logits(on: Tape(recording: false)).value
        guard x.shape[1] >= 2 else { return nil }
        let (rows, cols) = (x.shape[0], x.shape[1])
        let total = (0..<rows).reduce(0.0) { sum, r in
            let row = (0..<cols).map { Double(x.data[r * cols + $0]) }.sorted(by: >)
            return sum + row[0] - row[1]
        }
        return total / Double(rows)
    }
}
