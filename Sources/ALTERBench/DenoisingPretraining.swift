import ALTER
import Foundation
import NN
import StableDiffusion
import TensorCore

/// Plain diffusion training of a whole UNet (every unit computed): the denoising loss only, MSE to
/// the scheduler's target at uniform timesteps, AdamW. It turns a randomly initialised model into
/// a (small, weak) denoiser whose units matter differently at different timesteps, which ALTER's
/// routing comparisons need; a random UNet computes nearly the same function at every timestep.
public struct DenoisingPretraining {
    public var steps: Int
    public var batch = 8
    public var learningRate = 1e-3
    /// Linear learning-rate warm-up steps.
    public var warmupSteps = 50
    public var seed: UInt64 = 0
    public var predictionType = NoiseSchedule.PredictionType.epsilon

    public init(steps: Int) { self.steps = steps }

    /// Trains `unet` in place on `data` (samples and timesteps drawn uniformly from a generator
    /// seeded by `seed`); calls `progress` with the step number and its loss, and returns every
    /// step's loss.
    @discardableResult
    public func train(_ unet: UNet, on data: TrainingData, progress: (Int, Double) -> Void = { _, _ in }) -> [Double] {
        precondition(steps >= 0 && batch >= 1, "DenoisingPretraining: steps must be >= 0 and batch >= 1")
        let schedule = NoiseSchedule.scaledLinear()
        var adam = AdamW.Settings(learningRate: learningRate)
        adam.warmupSteps = warmupSteps
        for p in unet.parameters { p.trainable = true }
        let optimizer = AdamW(parameters: unet.parameters, settings: adam)
        var rng = SeededGenerator(seed: seed)
        var losses: [Double] = []
        for step in stride(from: 1, through: steps, by: 1) {
            let indices = (0..<batch).map { _ in rng.index(data.count) }
            let timesteps = (0..<batch).map { _ in rng.index(schedule.trainSteps) }
            let (x0, context) = data.batch(indices: indices)
            let noise = rng.normals(x0.count)
            let per = x0.count / batch
            let noisy = Tensor(uninitialized: x0.shape), target = Tensor(uninitialized: x0.shape)
            for i in 0..<batch {
                let (a, s) = schedule.coefficients(timesteps[i])
                for j in (i * per)..<((i + 1) * per) {
                    let x = x0.data[j], e = noise[j]
                    noisy.data[j] = a * x + s * e
                    target.data[j] = predictionType == .epsilon ? e : a * e - s * x
                }
            }
            let tape = Tape()
            let out = unet.forward(on: tape, sample: tape.constant(noisy), timesteps: timesteps.map(Float.init),
                                   context: tape.constant(context))
            let loss = tape.mseLoss(out.sample, tape.constant(target))
            tape.backward(loss)
            optimizer.update()
            let value = Double(loss.value.data[0])
            losses.append(value)
            progress(step, value)
        }
        return losses
    }
}

extension UNet {
    /// A separate model with the same configuration, the same absent units and a copy of every weight.
    public func copy() throws -> UNet {
        let weights = Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, Tensor(shape: $0.value.shape, values: $0.value.scalars)) })
        return try UNet(config: config, parameters: ParameterDictionary(weights), absentUnits: absentUnits)
    }
}
