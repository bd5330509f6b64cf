import ExpertBundle
import Foundation
import Images
import StableDiffusion
import TextToImage
import XCTest

/// `FidelityEvaluation` on the tiny pipeline fixture (Tests/Fixtures/pipeline/sd21-tiny) against itself.
final class FidelityEvaluationTests: XCTestCase {
    static var folder: String { TextToImagePipelineTests.folder }

    func options(_ method: SchedulerKind.Method, _ steps: Int) throws -> RoutedSampler.Options {
        var o = RoutedSampler.Options(scheduler: try SchedulerKind(method, steps: steps))
        o.guidance = 5
        return o
    }

    /// The same model, scheduler and steps: every pair identical (PSNR infinite, SSIM 1), MACs and the ratio 1.
    func testSameModelAndStepsGivesIdenticalImages() throws {
        let pipe = try TextToImagePipeline(pipeline: Self.folder)
        let eval = FidelityEvaluation(reference: pipe, referenceOptions: try options(.ddim, 3), candidate: pipe, candidateOptions: try options(.ddim, 3))
        let entries = [PromptEntry(prompt: "a red cube"), PromptEntry(prompt: "two blue balls", negativePrompt: "blurry")]
        let result = try eval.run(entries, negativePrompt: nil, seeds: [1, 2], keepImages: true)
        XCTAssertEqual(result.pairs.map(\.seed), [1, 2, 1, 2])
        XCTAssertEqual(result.pairs.map(\.promptIndex), [0, 0, 1, 1])
        XCTAssertEqual(result.pairs[2].negativePrompt, "blurry")
        for (pair, images) in zip(result.pairs, result.images) {
            XCTAssertEqual(images.reference, images.candidate)
            XCTAssertEqual(pair.psnr, .infinity)
            XCTAssertEqual(pair.ssim, 1, accuracy: 1e-12)
            XCTAssertEqual(pair.reference.macs, pair.candidate.macs)
            XCTAssertGreaterThan(pair.reference.macs, 0)
        }
        XCTAssertEqual(result.psnr.infiniteCount, 4)
        XCTAssertEqual(result.psnr.count, 0)
        XCTAssertNil(result.psnr.mean)
        XCTAssertEqual(try XCTUnwrap(result.ssim.mean), 1, accuracy: 1e-12)
        XCTAssertEqual(result.ratio.macs, 1)
        let f = pipe.components.vae.config.downsamplingFactor
        XCTAssertEqual(result.size, result.latent.map { $0 * f })
        XCTAssertEqual([result.images[0].reference.height, result.images[0].reference.width], result.size)
    }

    /// Fewer steps: the candidate's images are the pipeline's own draws at those steps, the metrics
    /// are those of `ImageMetrics` on them, and the MAC ratio is the steps ratio.
    func testFewerStepsMatchesSeparateDraws() throws {
        let pipe = try TextToImagePipeline(pipeline: Self.folder)
        let eval = FidelityEvaluation(reference: pipe, referenceOptions: try options(.ddim, 4), candidate: pipe, candidateOptions: try options(.euler, 2))
        let entries = [PromptEntry(prompt: "a red cube")]
        var sides: Set<String> = []
        let result = try eval.run(entries, negativePrompt: "dark", seeds: [7], keepImages: true) { _, side, _, _ in sides.insert(side.rawValue) }
        XCTAssertEqual(sides, ["reference", "candidate"])
        let pair = try XCTUnwrap(result.pairs.first)
        let drawn = try pipe.draw(entries, negativePrompt: "dark", seeds: [7], options: try options(.euler, 2)).images[0]
        XCTAssertEqual(result.images[0].candidate, drawn.image)
        let reference = try pipe.draw(entries, negativePrompt: "dark", seeds: [7], options: try options(.ddim, 4)).images[0]
        XCTAssertEqual(result.images[0].reference, reference.image)
        XCTAssertEqual(pair.psnr, try ImageMetrics.psnr(reference.image, drawn.image))
        XCTAssertEqual(pair.ssim, try ImageMetrics.ssim(reference.image, drawn.image))
        XCTAssertTrue(pair.psnr.isFinite)
        XCTAssertLessThan(pair.ssim, 1)
        XCTAssertEqual(result.ratio.macs, 0.5, accuracy: 1e-12)
        XCTAssertEqual(pair.candidate.macs * 2, pair.reference.macs)
        XCTAssertEqual(pair.candidate.macs, pair.candidate.denseMACs)
        XCTAssertGreaterThan(pair.reference.totalSeconds, pair.reference.denoiseSeconds)
        print("eval fixture, DDIM 4 vs Euler 2: PSNR \(pair.psnr) dB, SSIM \(pair.ssim), MAC ratio \(result.ratio.macs)")
    }

    func testMetricSummary() {
        let s = MetricSummary([.infinity, 1, 3])
        XCTAssertEqual(s.mean, 2)
        XCTAssertEqual(s.std, 1)
        XCTAssertEqual(s.min, 1)
        XCTAssertEqual(s.max, 3)
        XCTAssertEqual(s.count, 2)
        XCTAssertEqual(s.infiniteCount, 1)
        let none = MetricSummary([.infinity])
        XCTAssertNil(none.mean)
        XCTAssertNil(none.std)
        XCTAssertEqual(none.infiniteCount, 1)
    }
}
