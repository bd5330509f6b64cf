import ALTER
import ExampleSupport
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
}
