import Experts
import ExpertBundle
import Foundation
import Images
import StableDiffusion
import TensorCore
import TextToImage
import XCTest

/// `TextToImagePipeline.draw` with several images denoised together: every image equals the same
/// image drawn alone within `latentTolerance` (final latents, absolute) and one level of its 8-bit
/// image, whatever the batch size and the position in the batch, dense and with routed experts;
/// each image's calls and MACs are its own share of the batch's. Not bit for bit: OpenBLAS's
/// products of another size (a batch's columns) may sum in another order; measured worst latent
/// difference 4.1e-6 (DDIM, batch 4).
final class DrawingBatchTests: XCTestCase {
    static var folder: String { TextToImagePipelineTests.folder }

    let entries = [PromptEntry(prompt: "a red cube"), PromptEntry(prompt: "two blue balls", negativePrompt: "blurry"),
                   PromptEntry(prompt: "a green tree on a hill")]
    let seeds: [UInt64] = [3, 11]
    /// Largest |batched - alone| of a final latent (values of order 1).
    static let latentTolerance: Float = 1e-4

    func options(_ method: SchedulerKind.Method = .ddim, _ steps: Int = 3, guidance: Float = 5) throws -> RoutedSampler.Options {
        var o = RoutedSampler.Options(scheduler: try SchedulerKind(method, steps: steps))
        o.guidance = guidance
        return o
    }

    /// Largest |a - b| over the final latents of two runs (same image order).
    func worstLatentDifference(_ a: DrawingResult, _ b: DrawingResult) -> Float {
        zip(a.images, b.images).map { x, y in zip(x.latents.scalars, y.latents.scalars).map { abs($0 - $1) }.max() ?? 0 }.max() ?? 0
    }

    func assertSameImages(_ alone: DrawingResult, _ batched: DrawingResult, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(alone.images.count, batched.images.count, label, file: file, line: line)
        let worst = worstLatentDifference(alone, batched)
        XCTAssertLessThanOrEqual(worst, Self.latentTolerance, "\(label): worst latent difference \(worst)", file: file, line: line)
        print("\(label): worst latent difference \(worst)")
        for (i, (a, b)) in zip(alone.images, batched.images).enumerated() {
            XCTAssertEqual(a.promptIndex, b.promptIndex, label, file: file, line: line)
            XCTAssertEqual(a.seed, b.seed, label, file: file, line: line)
            XCTAssertEqual(a.negativePrompt, b.negativePrompt, label, file: file, line: line)
            XCTAssertEqual(a.latents.shape, b.latents.shape, label, file: file, line: line)
            let levels = zip(a.image.pixels, b.image.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
            XCTAssertLessThanOrEqual(levels, 1, "\(label): image \(i) differs by \(levels) levels", file: file, line: line)
            XCTAssertEqual(a.macs, b.macs, "\(label): image \(i) MACs", file: file, line: line)
            XCTAssertEqual(a.denseMACs, b.denseMACs, label, file: file, line: line)
            XCTAssertEqual(a.calls.map(\.batch), b.calls.map(\.batch), label, file: file, line: line)
            XCTAssertEqual(a.calls.map(\.expert), b.calls.map(\.expert), label, file: file, line: line)
            XCTAssertEqual(a.calls.map(\.timestep), b.calls.map(\.timestep), label, file: file, line: line)
        }
    }

    func testBatchedImagesEqualImagesDrawnAlone() throws {
        let pipe = try TextToImagePipeline(pipeline: Self.folder)
        for (method, steps, guidance) in [(SchedulerKind.Method.ddim, 3, Float(5)), (.pndm, 2, 5), (.euler, 2, 1)] {
            let o = try options(method, steps, guidance: guidance)
            let alone = try pipe.draw(entries, negativePrompt: "dark", seeds: seeds, options: o, batch: 1)
            XCTAssertEqual(alone.images.map(\.seed), [3, 11, 3, 11, 3, 11])
            XCTAssertEqual(alone.images[2].negativePrompt, guidance > 1 ? "blurry" : nil)
            XCTAssertEqual(alone.images[0].negativePrompt, guidance > 1 ? "dark" : nil)
            XCTAssertTrue(alone.images[0].calls.allSatisfy { $0.batch == (guidance > 1 ? 2 : 1) })
            // 4: a full batch and a short one; 6: one batch; 8: more than there are images.
            for batch in [4, 6, 8] {
                var firsts: Set<Int> = []
                let batched = try pipe.draw(entries, negativePrompt: "dark", seeds: seeds, options: o, batch: batch) { first, _, _ in firsts.insert(first) }
                assertSameImages(alone, batched, "\(method):\(steps), guidance \(guidance), batch \(batch)")
                XCTAssertEqual(firsts, Set(stride(from: 0, to: 6, by: batch)))
            }
        }
    }

    /// Routed experts: every image of a batch gets the same expert per call (the timesteps are
    /// shared), and the images equal those drawn alone.
    func testBatchedRoutedImagesEqualImagesDrawnAlone() throws {
        let dense = try TextToImagePipeline(pipeline: Self.folder)
        let unet = dense.sampler.unet, units = unet.config.units().map(\.name)
        let decisions = ExpertDecisions(units: units, kept: [units.map { _ in true }, units.indices.map { $0 % 3 != 1 }],
                                        route: (0..<1000).map { $0 < 500 ? 0 : 1 })
        let routed = try TextToImagePipeline(components: try TextToImageComponents(pipeline: Self.folder),
                                             sampler: RoutedSampler(unet: unet, decisions: decisions, schedulerConfig: dense.sampler.schedulerConfig))
        let o = try options(.ddim, 4)
        let alone = try routed.draw(entries, negativePrompt: nil, seeds: seeds, options: o, batch: 1)
        XCTAssertEqual(alone.images[0].calls.map(\.expert), [1, 1, 0, 0])
        let batched = try routed.draw(entries, negativePrompt: nil, seeds: seeds, options: o, batch: 5)
        assertSameImages(alone, batched, "routed, batch 5")
        XCTAssertLessThan(batched.macs, batched.denseMACs)
        XCTAssertEqual(batched.macs, alone.macs)
    }

    func testFidelityEvaluationBatchesGiveTheSamePairs() throws {
        let pipe = try TextToImagePipeline(pipeline: Self.folder)
        let eval = FidelityEvaluation(reference: pipe, referenceOptions: try options(.ddim, 4), candidate: pipe, candidateOptions: try options(.euler, 2))
        let one = try eval.run(entries, negativePrompt: nil, seeds: seeds, keepImages: true, batch: 1)
        let four = try eval.run(entries, negativePrompt: nil, seeds: seeds, keepImages: true, batch: 4)
        XCTAssertEqual(one.pairs.map(\.seed), four.pairs.map(\.seed))
        XCTAssertEqual(one.pairs.map(\.promptIndex), four.pairs.map(\.promptIndex))
        XCTAssertEqual(one.pairs.map(\.candidate.macs), four.pairs.map(\.candidate.macs))
        XCTAssertEqual(one.images.count, four.images.count)
        for (a, b) in zip(one.pairs, four.pairs) {
            XCTAssertEqual(a.psnr, b.psnr, accuracy: 0.5)
            XCTAssertEqual(a.ssim, b.ssim, accuracy: 1e-3)
        }
    }

    func testBatchOutOfRangeIsRefused() throws {
        let pipe = try TextToImagePipeline(pipeline: Self.folder)
        for batch in [0, -1, TextToImagePipeline.maxBatch + 1] {
            XCTAssertThrowsError(try pipe.draw(entries, negativePrompt: nil, seeds: [1], options: try options(), batch: batch)) { e in
                guard case TextToImageError.input(let why) = e else { return XCTFail("\(e)") }
                XCTAssertTrue(why.contains("batch \(batch)"), why)
            }
        }
    }
}
