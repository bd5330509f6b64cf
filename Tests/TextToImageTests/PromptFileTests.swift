import TextToImage
import XCTest

final class PromptFileTests: XCTestCase {
    func testPlainLinesAndJSONLines() throws {
        XCTAssertEqual(try PromptFile.parse("a cat\r\n\n  \nthe \"dog\"\n", jsonLines: false, file: "p.txt"),
                       [PromptEntry(prompt: "a cat"), PromptEntry(prompt: "the \"dog\"")])
        XCTAssertEqual(try PromptFile.parse("{\"prompt\": \"a\", \"negative_prompt\": \"b\"}\n\n{\"prompt\": \"c\"}", jsonLines: true, file: "p.jsonl"),
                       [PromptEntry(prompt: "a", negativePrompt: "b"), PromptEntry(prompt: "c")])
    }

    func testRefusals() {
        func refuses(_ text: String, _ jsonl: Bool, _ words: String..., line: UInt = #line) {
            XCTAssertThrowsError(try PromptFile.parse(text, jsonLines: jsonl, file: "p"), line: line) { e in
                for w in words { XCTAssertTrue("\(e)".contains(w), "\(e)", line: line) }
            }
        }
        refuses("\n \n", false, "no prompts")
        refuses("{\"prompt\": 1}", true, "p:1", "must be a string")
        refuses("{\"negative_prompt\": \"x\"}", true, "no \"prompt\"")
        refuses("\n{\"prompt\": \"a\", \"prompt\": \"b\"}", true, "p:2")
        refuses("[\"a\"]", true, "JSON object")
        refuses("{\"prompt\": \"a\"", true, "p:1")
        refuses("{\"prompt\": \"a\", \"seed\": \"1\"}", true, "unknown key \"seed\"")
    }
}
