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
    /// The router's draw (for its loss).
    public var routerDraw: RelaxedRoutes
    /// The same decisions as hard, discrete values.
    public var hard: ExpertDecisions
    /// The Gumbel noise added to the unit logits, [E, L].
    public var unitNoise: Tensor
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

        let draw = router.relaxedRoutes(on: tape, temperature: tau, rng: &rng)
        let kept = (0..<experts).map { e in Array(keptHard[(e * l)..<((e + 1) * l)]) }
        return RelaxedDecisions(maskTable: tape.matmul(draw.routes, masks), expertMasks: masks, routes: draw.routes,
                                routerDraw: draw, hard: ExpertDecisions(units: units, kept: kept, route: draw.route),
                                unitNoise: unitNoise)
    }

    /// The noise-free decisions that are exported: unit l of expert e kept iff logit + b >= 0;
    /// timestep t served by the argmax of its router logits.
    public func finalDecisions(settings: ALTERSettings) -> ExpertDecisions {
        let kept = keepLogits(settings: settings).map { $0.map { $0 >= 0 } }
        return ExpertDecisions(units: units, kept: kept, route: router.hardRoutes())
    }

    /// The noise-free keep logits logit + b of every (expert, unit), [expert][unit]: what
    /// `finalDecisions` thresholds at 0 and the projection onto the budget ranks by.
    public func keepLogits(settings: ALTERSettings) -> [[Float]] {
        let l = units.count
        let logits = unitLogits(on: Tape(recording: false)).value.scalars
        return (0..<experts).map { e in (0..<l).map { logits[e * l + $0] + Float(settings.offset) } }
    }
}
