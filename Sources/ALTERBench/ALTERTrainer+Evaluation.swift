import ALTER
import Experts
import StableDiffusion
import TensorCore

extension ALTERTrainer {
    /// Output distillation loss of the routed, pruned student against the dense teacher on
    /// `count` samples drawn from `data` with a generator seeded by `seed` (independent of the
    /// training stream): each sample's timestep picks its expert by `decisions`, whose skipped units
    /// are not computed. Returns the mean squared error over all output elements.
    public func evaluate(on data: TrainingData, decisions: ExpertDecisions, count: Int, seed: UInt64) -> Double {
        var rng = SeededGenerator(seed: seed)
        var total = 0.0, elements = 0
        for i in 0..<count {
            let index = rng.index(data.count), t = (i * schedule.trainSteps + schedule.trainSteps / 2) / count
            let (x0, context) = data.batch(indices: [index])
            let noise = rng.normals(x0.count)
            let (a, s) = schedule.coefficients(t)
            let noisy = Tensor(shape: x0.shape, values: (0..<x0.count).map { a * x0.data[$0] + s * noise[$0] })
            let expert = decisions.route[t]
            var options = UNetForwardOptions()
            options.skip = Set(decisions.skippedUnits(expert: expert))
            let y = student.forward(sample: noisy, timesteps: [Float(t)], context: context, options: options).sample
            let ref = teacher.forward(sample: noisy, timesteps: [Float(t)], context: context).sample
            for j in 0..<y.count { let d = Double(y.data[j] - ref.data[j]); total += d * d }
            elements += y.count
        }
        return total / Double(max(elements, 1))
    }
}
