import ALTER
import ALTERBench
import Experts
import StableDiffusion
import XCTest

/// Synthetic data and decisions for benchmarks.
final class SyntheticDataTests: XCTestCase {
    /// Synthetic data: the asked-for shapes, standardised latents, deterministic per seed, usable for
    /// a model of matching widths.
    func testSyntheticDataIsDeterministicAndShaped() throws {
        let a = TrainingData.synthetic(count: 6, height: 8, width: 16, contextLength: 5, contextDim: 24, seed: 11)
        let b = TrainingData.synthetic(count: 6, height: 8, width: 16, contextLength: 5, contextDim: 24, seed: 11)
        let c = TrainingData.synthetic(count: 6, height: 8, width: 16, contextLength: 5, contextDim: 24, seed: 12)
        XCTAssertEqual(a.latentShape, [6, 4, 8, 16])
        XCTAssertEqual(a.contextShape, [6, 5, 24])
        XCTAssertEqual(a.uncond?.shape, [5, 24])
        XCTAssertEqual(a.latents.scalars, b.latents.scalars)
        XCTAssertEqual(a.context.scalars, b.context.scalars)
        XCTAssertNotEqual(a.latents.scalars, c.latents.scalars)
        let x = a.latents.scalars.map(Double.init)
        let mean = x.reduce(0, +) / Double(x.count)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(x.count - 1)
        XCTAssertEqual(mean, 0, accuracy: 1e-5)
        XCTAssertEqual(variance, 1, accuracy: 1e-4)
        // Samples differ (their prompts and variations do), and the start token row is shared.
        XCTAssertNotEqual(a.batch(indices: [0]).latents.scalars, a.batch(indices: [1]).latents.scalars)
        let ctx = a.context.scalars
        for j in 0..<24 { XCTAssertEqual(ctx[j], ctx[5 * 24 + j], accuracy: 0.5) }
        XCTAssertEqual(a.metadata["format"], TrainingData.formatName)
        var cfg = UNetConfig()
        cfg.blockOutChannels = [8, 8, 8, 8]
        cfg.normNumGroups = 4
        cfg.attentionHeads = [1, 1, 1, 1]
        cfg.crossAttentionDim = 24
        XCTAssertNoThrow(try a.validate(for: cfg))
    }

    func testSyntheticDecisionsHitTheirTargets() throws {
        let cost = try CostModel(config: .sd21, latentHeight: 64, latentWidth: 64, contextLength: 77)
        let d = ExpertDecisions.synthetic(cost: cost, experts: 4, keep: 0.65)
        XCTAssertEqual(d.units, UNetConfig.sd21.units().map(\.name))
        XCTAssertEqual(d.route.count, 1000)
        XCTAssertEqual(d.expertShares, [0.25, 0.25, 0.25, 0.25])
        let budget = UnitBudget(cost: cost)
        for (e, target) in [0.55, 0.6167, 0.6833, 0.75].enumerated() {
            XCTAssertEqual(budget.keptFraction(expert: d.kept[e]), target, accuracy: 0.02, "expert \(e)")
        }
        XCTAssertEqual(budget.keptFraction(d), 0.65, accuracy: 0.01)
    }
}
