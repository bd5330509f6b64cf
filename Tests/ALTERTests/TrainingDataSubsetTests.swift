import ALTER
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// Subsets and held-out splits of training data, and the synthetic data generator.
final class TrainingDataSubsetTests: XCTestCase {
    /// A subset holds exactly the chosen samples, in order, with the file's uncond and metadata.
    func testSubsetHoldsTheChosenSamples() throws {
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        let sub = try data.subset([5, 2, 2, 31])
        XCTAssertEqual(sub.count, 4)
        XCTAssertEqual(sub.latentShape, [4] + data.latentShape.dropFirst())
        XCTAssertEqual(sub.contextShape, [4] + data.contextShape.dropFirst())
        let (l, c) = data.batch(indices: [5, 2, 2, 31])
        XCTAssertEqual(sub.latents.scalars, l.scalars)
        XCTAssertEqual(sub.context.scalars, c.scalars)
        XCTAssertEqual(sub.batch(indices: [3]).latents.scalars, data.batch(indices: [31]).latents.scalars)
        XCTAssertEqual(sub.uncond?.scalars, data.uncond?.scalars)
        XCTAssertEqual(sub.metadata, data.metadata)
        XCTAssertTrue(sub.path.hasPrefix(data.path))
        XCTAssertEqual(try data.subset(3..<7).path, data.path + "[3..<7]")
        XCTAssertThrowsError(try data.subset([Int]())) { e in
            XCTAssertTrue("\(e)".contains("at least one sample"), "\(e)")
        }
    }

    /// A held-out split: the first count-K samples train, the last K are held out, nothing shared.
    func testSplitHoldsOutTheLastSamples() throws {
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        let (train, heldOut) = try data.split(heldOut: 8)
        XCTAssertEqual(train.count, 24)
        XCTAssertEqual(heldOut.count, 8)
        XCTAssertEqual(train.latents.scalars, data.batch(indices: Array(0..<24)).latents.scalars)
        XCTAssertEqual(heldOut.latents.scalars, data.batch(indices: Array(24..<32)).latents.scalars)
        XCTAssertEqual(heldOut.context.scalars, data.batch(indices: Array(24..<32)).context.scalars)
        let ckpt = try Example.checkpoint()
        XCTAssertNoThrow(try heldOut.validate(for: ckpt.config))
    }

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
}
