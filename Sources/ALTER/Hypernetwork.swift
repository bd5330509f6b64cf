import Experts
import Foundation
import NN
import StableDiffusion
import TensorCore

/// ALTER's hypernetwork (ALTER.md section 4): an expert generator that turns a frozen,
/// orthonormal input into per-(expert, unit) keep logits, and a temporal router that maps each
/// training timestep's sinusoidal embedding to expert logits. Trained, then dropped at export.
public final class Hypernetwork {
    public let experts: Int
    public let units: [String]
    public let routing: ALTERSettings.Routing
    /// Assigns the training timesteps to experts.
    public let router: any Router
    public let trainSteps: Int
    /// Z: [experts * units, width], rows orthonormal when flattened per expert (frozen).
    public let generatorInput: Tensor

    let genNorm1: LayerNormLayer, genLinear1: LinearLayer, genNorm2: LayerNormLayer, genLinear2: LinearLayer

    /// A freshly initialised hypernetwork (PyTorch's default Linear/LayerNorm initialisation,
    /// orthogonal Z) from `seed`. With `.static` routing there is one expert.
    public init(config: UNetConfig, settings: ALTERSettings, trainSteps: Int = 1000, seed: UInt64) throws {
        routing = settings.routing
        experts = settings.routing == .static ? 1 : settings.experts
        units = config.units().map(\.name)
        self.trainSteps = trainSteps
        let width = settings.embeddingWidth, hidden = settings.generatorHidden
        var rng = SeededGenerator(seed: seed)
        generatorInput = Hypernetwork.orthonormalRows(experts, units.count * width, rng: &rng)
            .reshaped([experts * units.count, width])
        let embDim = config.blockOutChannels[0]
        let source = DefaultInitialisation(seed: rng.next(), biasFanIn: [
            "generator.linear1.bias": width, "router.linear1.bias": embDim,
        ])
        genNorm1 = try LayerNormLayer(source, "generator.norm1", channels: width, eps: 1e-5)
        genLinear1 = try LinearLayer(source, "generator.linear1", in: width, out: hidden)
        genNorm2 = try LayerNormLayer(source, "generator.norm2", channels: hidden, eps: 1e-5)
        genLinear2 = try LinearLayer(source, "generator.linear2", in: hidden, out: 1, bias: false)
        switch routing {
        case .learned:
            let embedding = TimestepEmbedding.sinusoidal((0..<trainSteps).map(Float.init), dim: embDim,
                                                         flipSinToCos: config.flipSinToCos, freqShift: Float(config.freqShift))
            router = try LearnedRouter(timeEmbedding: embedding, hidden: settings.routerHidden, experts: experts, parameters: source)
        case .intervals, .static:
            router = FixedRouter(experts: experts, trainSteps: trainSteps)
        case .segments:
            router = SegmentRouter(experts: experts, trainSteps: trainSteps, temperature: Float(settings.temperature))
        }
    }

    /// The trainable parameters (generator, then router).
    public var parameters: [Parameter] {
        genNorm1.parameters + genLinear1.parameters + genNorm2.parameters + genLinear2.parameters + router.parameters
    }

    /// Keep logits of every (expert, unit): [experts, units] (before the offset b).
    public func unitLogits(on tape: Tape) -> Var {
        var h = genNorm1(tape.constant(generatorInput), on: tape)
        h = tape.relu(genNorm2(genLinear1(h, on: tape), on: tape))
        return tape.reshape(genLinear2(h, on: tape), [experts, units.count])
    }

    /// `rows` x `cols` with orthonormal rows (Gram-Schmidt on Gaussian rows, in Double).
    static func orthonormalRows(_ rows: Int, _ cols: Int, rng: inout SeededGenerator) -> Tensor {
        precondition(rows <= cols, "orthonormalRows: \(rows) rows of \(cols)")
        var basis: [[Double]] = []
        while basis.count < rows {
            var v = (0..<cols).map { _ in rng.normal() }
            for _ in 0..<2 {
                for b in basis {
                    let d = zip(v, b).reduce(0) { $0 + $1.0 * $1.1 }
                    for i in 0..<cols { v[i] -= d * b[i] }
                }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 1e-6 { basis.append(v.map { $0 / norm }) }
        }
        return Tensor(shape: [rows, cols], values: basis.flatMap { $0.map(Float.init) })
    }
}

/// PyTorch's default initialisation: Linear weight and bias uniform in ±1/sqrt(fan-in)
/// (`kaiming_uniform_(a=sqrt 5)`), LayerNorm weight 1 and bias 0.
struct DefaultInitialisation: ParameterSource {
    let seed: UInt64
    /// Fan-in of each bias's layer.
    let biasFanIn: [String: Int]

    func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        var rng = SeededGenerator(seed: seed, stream: name)
        let isNorm = name.contains(".norm")
        if isNorm { return Tensor(repeating: name.hasSuffix(".weight") ? 1 : 0, shape: shape) }
        let fanIn = name.hasSuffix(".bias") ? biasFanIn[name] ?? 1 : shape.dropFirst().reduce(1, *)
        let bound = 1 / Float(fanIn).squareRoot()
        return Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float(2 * rng.openUnit() - 1) * bound })
    }
}
