import ArgumentParser
import Foundation
import StableDiffusion

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tokenize a prompt with CLIP's tokenizer, as transformers' CLIPTokenizer does for SD2.1.",
        discussion: """
            Reads a diffusers pipeline folder (its tokenizer/), a tokenizer folder (vocab.json, merges.txt, \
            tokenizer_config.json) or open_clip's bpe_simple_vocab_16e6.txt.gz (pad token "!", 77 tokens, as SD2.x). \
            Prints the input ids (start token, text tokens, end token, padding) and their tokens.
            """)

    @Argument(help: "A pipeline folder, a tokenizer folder or an open_clip BPE file (.txt.gz).")
    var tokenizer: String

    @Option(help: "The text to tokenize.")
    var prompt: String

    @Flag(help: "Print JSON (formats/cli-json.md).")
    var json = false

    func run() throws {
        let t: CLIPTokenizer
        do { t = try CLIPTokenizer(path: tokenizer) } catch { throw CommandFailure(error.description) }
        let report = CLIPTokenizationReport(tokenizer: t, source: tokenizer, prompt: prompt)
        if json {
            try writeJSON(report)
            return
        }
        print("\(report.tokenCount) of \(report.maxLength) tokens\(report.truncated ? " (truncated)" : ""), padded with \"\(report.padToken)\" (\(report.padTokenId))")
        print("input_ids: " + report.inputIds.map(String.init).joined(separator: " "))
        print("tokens: " + report.tokens.prefix(report.tokenCount).joined(separator: " "))
    }
}
