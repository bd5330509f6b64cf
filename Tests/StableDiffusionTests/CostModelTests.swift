import Foundation
import SafeTensors
import XCTest
@testable import StableDiffusion

/// The cost model against MACs counted by hooks on diffusers' SD2.1 UNet
/// (Tests/Fixtures/forward/units-sd21.json) and against ALTER.md's published figures.
final class CostModelTests: XCTestCase {
    func testSD21UnitsAndMACsMatchDiffusersCounts() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("forward/units-sd21.json")))
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let names = try XCTUnwrap(root["units"] as? [String])
        XCTAssertEqual(UNetConfig.sd21.units().map(\.name), names)
        XCTAssertEqual(names.count, 34)
        let contextTokens = try XCTUnwrap(root["context_tokens"] as? Int)
        let latents = try XCTUnwrap(root["latents"] as? [String: [String: Any]])
        XCTAssertEqual(Set(latents.keys), ["64x64", "96x96"])
        for (key, entry) in latents {
            let size = try XCTUnwrap(Int(key.split(separator: "x")[0]))
            let model = try CostModel(config: .sd21, latentHeight: size, latentWidth: size, contextLength: contextTokens)
            let total = try XCTUnwrap(entry["total"] as? [String: Int])
            XCTAssertEqual(model.total.convLinear, total["conv_linear_macs"], "\(key) total conv+linear")
            XCTAssertEqual(model.total.attention, total["attention_macs"], "\(key) total attention")
            let units = try XCTUnwrap(entry["units"] as? [[String: Any]])
            XCTAssertEqual(units.count, model.units.count)
            for (u, ref) in zip(model.units, units) {
                XCTAssertEqual(u.name, ref["name"] as? String)
                XCTAssertEqual(u.cost.convLinear, ref["conv_linear_macs"] as? Int, "\(key) \(u.name) conv+linear")
                XCTAssertEqual(u.cost.attention, ref["attention_macs"] as? Int, "\(key) \(u.name) attention")
            }
        }
    }

    func testPublishedFigures() throws {
        let c64 = try CostModel(config: .sd21, latentHeight: 64, latentWidth: 64, contextLength: 77)
        func g(_ x: Int) -> Double { (Double(x) / 1e8).rounded() / 10 }
        XCTAssertEqual(g(c64.total.convLinear), 339.1)
        XCTAssertEqual(g(c64.total.total), 402.1)
        XCTAssertEqual(g(try CostModel(config: .sd21, latentHeight: 96, latentWidth: 96, contextLength: 77).total.convLinear), 760.5)
        let byName = Dictionary(uniqueKeysWithValues: c64.units.map { ($0.name, $0.cost) })
        func g2(_ x: Int?) -> Double { (Double(x ?? 0) / 1e7).rounded() / 100 }
        XCTAssertEqual(g2(byName["down_blocks.0.attentions.0.transformer_blocks.0"]?.convLinear), 7.60)
        XCTAssertEqual(g2(byName["down_blocks.0.attentions.0.transformer_blocks.0"]?.total), 18.54)
        XCTAssertEqual(g2(byName["down_blocks.0.resnets.0"]?.total), 7.55)
        XCTAssertEqual(g2(byName["up_blocks.1.resnets.0"]?.total), 12.17)
        XCTAssertEqual(g2(byName["mid_block.attentions.0.transformer_blocks.0"]?.convLinear), 2.09)
        XCTAssertEqual(g2(byName["mid_block.attentions.0.transformer_blocks.0"]?.total), 2.11)
        XCTAssertEqual(g2(byName["down_blocks.3.resnets.0"]?.total), 1.89)
        XCTAssertEqual(g2(byName["mid_block.resnets.1"]?.total), 1.89)
        let share = Double(c64.unitTotal.convLinear) / Double(c64.total.convLinear)
        XCTAssertEqual((share * 100).rounded(), 72)
        XCTAssertEqual((Double(c64.unitTotal.total) / Double(c64.total.total) * 100).rounded(), 77)
    }

    func testTinyFixtureMACsMatchDiffusersCounts() throws {
        // Each forward fixture records the MACs diffusers' hooks counted at its own input size.
        for name in UNetForwardTests.cases {
            let file = try SafeTensorsFile(path: Fixtures.path("forward/\(name).safetensors"))
            let meta = try XCTUnwrap(file.metadata)
            let config = try UNetConfig(diffusersJSON: Data(try XCTUnwrap(meta["config"]).utf8), source: name)
            let macs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try XCTUnwrap(meta["macs"]).utf8)) as? [String: Any])
            let h = try XCTUnwrap(macs["height"] as? Int)
            let w = (macs["width"] as? Int) ?? h
            let s = try XCTUnwrap(macs["context_tokens"] as? Int)
            let model = try CostModel(config: config, latentHeight: h, latentWidth: w, contextLength: s)
            let total = try XCTUnwrap(macs["total"] as? [String: Int])
            XCTAssertEqual(model.total.convLinear, total["conv_linear_macs"], "\(name) conv+linear")
            XCTAssertEqual(model.total.attention, total["attention_macs"], "\(name) attention")
        }
    }
}
