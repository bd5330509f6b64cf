import Experts
import TensorCore

/// One draw of the hypernetwork's relaxed decisions on a tape.
public struct RelaxedDecisions {
    /// m[t, l] = sum_e route[t, e] * expertMask[e, l]: [T, L] (hard values, straight-through gradients).
    public var maskTable: Var
    /// Unit decisions per expert, [E, L].
    public var expertMasks: Var
    /// Routing per timestep, [T, E] (one-hot values).
    public var routes: Var
    /// Router logits [T, E] (learned routing only).
    public var routerLogits: Var?
    /// The same decisions as hard, discrete values.
    public var hard: ExpertDecisions
}

extension Hypernetwork {
    /// Draws decisions with Gumbel noise from `rng`: unit decisions by Gumbel-sigmoid
    /// sigmoid((logit + g + b) / tau), routing by Gumbel-softmax softmax((logit + g) / tau), both made
    /// hard (y >= 0.5, one-hot argmax) with straight-through gradients.
    public func sample(on tape: Tape, settings: ALTERSettings, rng: inout SeededGenerator) -> RelaxedDecisions {
        let tau = Float(settings.temperature), b = Float(settings.offset)
        let l = units.count
        let logits = unitLogits(on: tape)
        let unitNoise = Tensor(shape: [experts, l], values: rng.gumbels(experts * l))
        let soft = tape.sigmoid(tape.scale(tape.addScalar(tape.add(logits, tape.constant(unitNoise)), b), 1 / tau))
        let keptHard = soft.value.scalars.map { $0 >= 0.5 }
        let masks = tape.straightThrough(soft, hard: Tensor(shape: [experts, l], values: keptHard.map { $0 ? 1 : 0 }))

        let routes: Var, route: [Int], rLogits = routerLogits(on: tape)
        if let rLogits {
            let noise = Tensor(shape: [trainSteps, experts], values: rng.gumbels(trainSteps * experts))
            let probs = tape.softmax(tape.scale(tape.add(rLogits, tape.constant(noise)), 1 / tau))
            route = Hypernetwork.argmaxRows(probs.value)
            routes = tape.straightThrough(probs, hard: Hypernetwork.oneHot(route, experts))
        } else {
            route = (0..<trainSteps).map(fixedRoute)
            routes = tape.constant(Hypernetwork.oneHot(route, experts))
        }
        let kept = (0..<experts).map { e in Array(keptHard[(e * l)..<((e + 1) * l)]) }
        return RelaxedDecisions(maskTable: tape.matmul(routes, masks), expertMasks: masks, routes: routes,
                                routerLogits: rLogits, hard: ExpertDecisions(units: units, kept: kept, route: route))
    }

    /// The noise-free decisions that are exported: unit l of expert e kept iff logit + b >= 0;
    /// timestep t served by the argmax of its router logits.
    public func finalDecisions(settings: ALTERSettings) -> ExpertDecisions {
        let tape = Tape(recording: false)
        let l = units.count
        let logits = unitLogits(on: tape).value.scalars
        let kept = (0..<experts).map { e in (0..<l).map { logits[e * l + $0] + Float(settings.offset) >= 0 } }
        let route = routerLogits(on: tape).map { Hypernetwork.argmaxRows($0.value) } ?? (0..<trainSteps).map(fixedRoute)
        return ExpertDecisions(units: units, kept: kept, route: route)
    }

    static func argmaxRows(_ x: Tensor) -> [Int] {
        let (r, c) = (x.shape[0], x.shape[1])
        return (0..<r).map { i in
            var best = 0
            for j in 1..<max(c, 1) where x.data[i * c + j] > x.data[i * c + best] { best = j }
            return best
        }
    }

    static func oneHot(_ index: [Int], _ n: Int) -> Tensor {
        let t = Tensor(zeros: [index.count, n])
        for (i, j) in index.enumerated() { t.data[i * n + j] = 1 }
        return t
    }
}
