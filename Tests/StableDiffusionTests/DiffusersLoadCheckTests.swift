import Foundation
import XCTest

/// `scripts/make_fixtures.py --check-alter` runs `alter convert` on the tiny original checkpoint
/// into each dtype, loads the result with diffusers' `UNet2DConditionModel.from_pretrained`, and
/// records what it saw in `Tests/Fixtures/diffusers-load-check.json`. This test holds the record
/// to the claim: every dtype loaded in diffusers with every tensor identical.
final class DiffusersLoadCheckTests: XCTestCase {
    func testConvertedFoldersLoadInDiffusers() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/diffusers-load-check.json")
        let data = try Data(contentsOf: url)
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertNotNil(root["diffusers_version"] as? String)
        let results = try XCTUnwrap(root["results"] as? [[String: Any]])
        XCTAssertEqual(Set(results.compactMap { $0["dtype"] as? String }), ["fp32", "fp16", "bf16"])
        for r in results {
            let dtype = r["dtype"] as? String ?? "?"
            XCTAssertEqual(r["loaded"] as? Bool, true, "\(dtype): diffusers did not load the converted folder")
            XCTAssertEqual(r["tensors"] as? Int, 684, dtype)
            XCTAssertEqual(r["max_abs_diff"] as? Double, 0, dtype)
            XCTAssertEqual((r["mismatched"] as? [Any])?.count, 0, dtype)
            let back = try XCTUnwrap(r["original_roundtrip"] as? [String: Any], dtype)
            XCTAssertEqual(back["ok"] as? Bool, true, "\(dtype): original-layout round trip")
            XCTAssertEqual(back["max_abs_diff"] as? Double, 0, dtype)
        }
    }
}
