import ExpertBundle
import Foundation
import XCTest

/// Inputs BundleManifestFuzz found (docs/fuzzing.md), rebuilt as text: each must be refused by
/// the manifest readers with an error naming the file, and must not reach Foundation's parser
/// (which reads them differently or not at all).
final class BundleManifestFuzzRegressionTests: XCTestCase {
    /// A bundle.json shaped like a real one, with `routing` spelled by the caller.
    func manifest(routing: String) -> Data {
        Data("""
            {"format":"alter.bundle","format_version":2,"architecture":{},"prediction_type":"epsilon","scheduler":{},
             "source":{"model":"m","files":[]},"train_timesteps":3,"routing":\(routing),"units":[],
             "experts":[],"files":[],"macs":{"latent_height":8,"latent_width":8,"context_length":1,"dense":1,
             "dense_conv_linear":1,"experts":[],"mean_over_train_timesteps":1,"kept_mac_fraction":1}}
            """.utf8)
    }

    func testNumbersJSONCTakesAndFoundationRefuses() throws {
        // crash-272dba8f: "0." in the routing table (json-c: 0; Foundation: invalid).
        XCTAssertNoThrow(try BundleManifest.decode(manifest(routing: "[0,0,0]"), path: "fuzz/bundle.json"))
        // crash-764220a3: "1e3080" in the routing table (json-c: infinity; Foundation: invalid).
        for routing in ["[0,0.,0]", "[0,1e,0]", "[0,-,0]", "[0,1.e0,0]", "[0,1e3080,0]", "[0,-1e400,0]"] {
            XCTAssertThrowsError(try BundleManifest.decode(manifest(routing: routing), path: "fuzz/bundle.json"), routing) { e in
                XCTAssertEqual((e as? BundleError)?.path, "fuzz/bundle.json")
                XCTAssertTrue("\(e)".contains("not valid JSON"), "\(e)")
            }
        }
    }
}
