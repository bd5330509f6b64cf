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
    /// The smoothness term of this draw (unweighted), if the router has one.
    func smoothness(on tape: Tape, _ routes: RelaxedRoutes) -> Var?
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
    public func smoothness(on tape: Tape, _ routes: RelaxedRoutes) -> Var? { nil }

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

    /// L_smooth = 1/2 * sum_t sum_i (P[t+1, i] - P[t, i])^2 with P = softmax(logits) (noise-free,
    /// temperature 1): about the number of places where the routing switches experts sharply (1
    /// per sharp switch), smaller for gradual switches.
    public func smoothness(on tape: Tape, _ routes: RelaxedRoutes) -> Var? {
        guard let logits = routes.logits, logits.shape[0] >= 2 else { return nil }
        let probs = tape.softmax(logits)
        let t = logits.shape[0]
        let d = tape.add(tape.selectRows(probs, Array(1..<t)), tape.scale(tape.selectRows(probs, Array(0..<(t - 1))), -1))
        return tape.scale(tape.sum(tape.multiply(d, d)), 0.5)
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

/// Routing by learned segment boundaries: expert e serves one contiguous timestep interval, the
/// e-th from t = 0 (as with fixed intervals), whose lengths are learned. The parameter
/// `router.widths` [E] (initially 0: equal intervals) gives the interval shares softmax(widths)
/// and the boundaries c_e = T * sum_{j <= e} share_j. The soft membership of timestep t in expert e is
///
///     p[t, e] = sigmoid((t + 0.5 - c_{e-1}) / s) - sigmoid((t + 0.5 - c_e) / s)
///
/// with the first lower term and the last upper term replaced by 1 and 0 (so each row sums to 1),
/// s = temperature * T / (2E) (for equal intervals, each about 5 s long). The route of t is the
/// interval that holds t + 0.5 (expert e for c_{e-1} <= t + 0.5 < c_e: contiguous by construction;
/// an interval shorter than one timestep may serve none), with straight-through gradients to p.
/// No random draws. Its loss is the balance loss, as for the learned router.
public final class SegmentRouter: Router {
    public let experts: Int
    public let trainSteps: Int
    /// Softness s of the boundaries, in timesteps.
    public let softness: Float
    /// Unnormalised interval shares [E].
    public let widths: Parameter

    /// A router over `trainSteps` timesteps with equal intervals to start with.
    public init(experts: Int, trainSteps: Int, temperature: Float) {
        self.experts = experts
        self.trainSteps = trainSteps
        softness = temperature * Float(trainSteps) / Float(2 * experts)
        widths = Parameter(name: "router.widths", value: Tensor(zeros: [experts]))
    }

    public var parameters: [Parameter] { [widths] }

    /// The interval boundaries c_0 ... c_{E-1} in timesteps (the last is T).
    public func boundaries() -> [Double] {
        let shares = Softmax.forward(widths.value.reshaped([1, experts]))
        var c = 0.0
        return (0..<experts).map { e in
            c += Double(shares.data[e])
            return e == experts - 1 ? Double(trainSteps) : c * Double(trainSteps)
        }
    }

    /// Soft memberships p: [T, E] (rows sum to 1).
    public func memberships(on tape: Tape) -> Var { segments(on: tape).memberships }

    /// The route of each timestep for the inner boundaries `c` = c_0 ... c_{E-2} (the interval holding t + 0.5).
    static func intervalRoutes(_ c: [Float], trainSteps: Int) -> [Int] {
        (0..<trainSteps).map { t in c.reduce(0) { $0 + (Float(t) + 0.5 >= $1 ? 1 : 0) } }
    }

    /// Soft memberships [T, E] and the boundaries c_0 ... c_{E-2} as computed on the tape.
    func segments(on tape: Tape) -> (memberships: Var, boundaries: [Float]) {
        let (n, t) = (experts, trainSteps)
        let shares = tape.softmax(tape.reshape(tape.parameter(widths), [1, n]))
        // c[0, e] = T * sum_{j <= e} share_j: shares x U with U[j, e] = 1 for j <= e.
        let upperOnes = Tensor(zeros: [n, n])
        for j in 0..<n { for e in j..<n { upperOnes.data[j * n + e] = 1 } }
        let c = tape.scale(tape.matmul(shares, tape.constant(upperOnes)), Float(t))
        // upper[t, e] = sigmoid((t + 0.5 - c_e) / s); the last column is not used.
        let ones = Tensor(repeating: 1, shape: [t, 1])
        let centres = Tensor(zeros: [t, n])
        for i in 0..<t { for e in 0..<n { centres.data[i * n + e] = (Float(i) + 0.5) / softness } }
        let upper = tape.sigmoid(tape.add(tape.constant(centres), tape.scale(tape.matmul(tape.constant(ones), c), -1 / softness)))
        // p[t, e] = upper[t, e - 1] (1 for e = 0) - upper[t, e] (0 for e = E - 1).
        let shift = Tensor(zeros: [n, n]), keepMask = Tensor(repeating: 1, shape: [t, n]), first = Tensor(zeros: [t, n])
        for e in 1..<max(n, 1) { shift.data[(e - 1) * n + e] = 1 }
        for i in 0..<t { keepMask.data[i * n + n - 1] = 0; first.data[i * n] = 1 }
        let lower = tape.add(tape.matmul(upper, tape.constant(shift)), tape.constant(first))
        let p = tape.add(lower, tape.scale(tape.multiply(upper, tape.constant(keepMask)), -1))
        return (p, Array(c.value.scalars.prefix(n - 1)))
    }

    public func hardRoutes() -> [Int] {
        Self.intervalRoutes(segments(on: Tape(recording: false)).boundaries, trainSteps: trainSteps)
    }

    public func relaxedRoutes(on tape: Tape, temperature: Float, rng: inout SeededGenerator) -> RelaxedRoutes {
        let (p, c) = segments(on: tape)
        let route = Self.intervalRoutes(c, trainSteps: trainSteps)
        return RelaxedRoutes(routes: tape.straightThrough(p, hard: Self.oneHot(route, experts)), route: route, logits: p)
    }

    /// L_balance = E * sum_i F_i * P_i: F_i the share of timesteps routed to expert i (no
    /// gradient), P_i the mean membership of expert i.
    public func loss(on tape: Tape, _ routes: RelaxedRoutes) -> Var? {
        guard let p = routes.logits else { return nil }
        let counts = routes.route.reduce(into: [Float](repeating: 0, count: experts)) { $0[$1] += 1 }
        let f = tape.constant(Tensor(shape: [experts], values: counts.map { $0 / Float(trainSteps) }))
        return tape.scale(tape.sum(tape.multiply(tape.meanRows(p), f)), Float(experts))
    }
}
