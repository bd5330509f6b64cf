import ALTERBench
import NN
import StableDiffusion
import TensorCore
import XCTest

/// `ComponentBenchmark` on small models of SD2.1's structure (the full-size run is the benchmark).
final class ComponentBenchmarkTests: XCTestCase {
    func testPartsTimeTheRightShapes() throws {
        var text = CLIPTextConfig()
        (text.vocabSize, text.hiddenSize, text.intermediateSize, text.numHiddenLayers, text.numAttentionHeads) = (1000, 32, 64, 2, 2)
        var vae = VAEConfig()
        (vae.blockOutChannels, vae.layersPerBlock, vae.normNumGroups) = ([8, 16], 1, 4)
        let report = try ComponentBenchmark.run(parts: ComponentBenchmark.Part.allCases, runs: 2, text: text, vae: vae)
        XCTAssertEqual(report.rows.map(\.part), ["text", "decode64", "decode96", "encode512"])
        XCTAssertEqual(report.rows.map(\.inputShape), [[1, 77], [1, 4, 64, 64], [1, 4, 96, 96], [1, 3, 512, 512]])
        // Factor 2 for two levels: 64 -> 128, 96 -> 192; 512 -> 256 latent, mean only.
        XCTAssertEqual(report.rows.map(\.outputShape), [[1, 77, 32], [1, 3, 128, 128], [1, 3, 192, 192], [1, 4, 256, 256]])
        for row in report.rows {
            XCTAssertEqual(row.seconds.count, 2)
            XCTAssertEqual(row.bestSeconds, row.seconds.min())
            XCTAssertGreaterThan(row.peakResidentMB, 0)
        }
        let parameters = RandomParameters(seed: 21)
        let encoder = try CLIPTextEncoder(config: text, parameters: parameters)
        let model = try AutoencoderKL(config: vae, parameters: parameters)
        XCTAssertEqual(report.textEncoderParameters, encoder.parameters.reduce(0) { $0 + $1.value.count })
        XCTAssertEqual(report.vaeParameters, model.parameters.reduce(0) { $0 + $1.value.count })

        let vaeOnly = try ComponentBenchmark.run(parts: [.decode64], runs: 1, text: text, vae: vae)
        XCTAssertEqual(vaeOnly.textEncoderParameters, 0)
        XCTAssertEqual(vaeOnly.rows.count, 1)
    }

    func testPromptIDs() {
        let ids = ComponentBenchmark.promptIDs(length: 77, vocab: 49408)
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(Array(ids.prefix(10)), [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407])
        XCTAssertTrue(ids.dropFirst(10).allSatisfy { $0 == 0 })
        XCTAssertEqual(ComponentBenchmark.promptIDs(length: 5, vocab: 49408).count, 5)
    }
}
