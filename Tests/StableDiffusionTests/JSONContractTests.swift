import ExampleSupport
import Foundation
import StableDiffusion
import XCTest

/// `alter inspect --json` and `alter inspect --units --json` on the example against their golden
/// key lists (formats/cli-json.md).
final class JSONContractTests: XCTestCase {
    func testInspectKeys() throws {
        var o = LoadOptions()
        o.configPath = Example.config
        o.allowUnused = true
        var info = try CheckpointInspection(path: Example.model, options: o, listTensors: true)
        XCTAssertNotNil(info.unet)
        // Keys that are absent when they do not apply (a single file; a UNet that loads): set here
        // so that the list holds them.
        info.pipelineComponents = ["unet"]
        info.unetError = "listed"
        try GoldenKeys.check(info, name: "inspect", opaque: ["dtypes", "files[].metadata"])
    }

    func testUnitsKeys() throws {
        let cost = try CostModel(config: try Example.checkpoint().config, latentHeight: 16, latentWidth: 16, contextLength: 5)
        try GoldenKeys.check(CostModel.Report(cost), name: "inspect-units")
    }

    func testConvertKeys() throws {
        let out = try temporaryDirectory(self) + "/unet"
        let summary = try Example.checkpoint().convert(to: out, layout: .diffusers, dtype: .f16)
        try GoldenKeys.check(summary, name: "convert")
    }
}
