import Foundation
import SafeTensors

/// One prompt to draw, with its own negative prompt when it has one.
public struct PromptEntry: Equatable, Sendable {
    public var prompt: String
    /// nil: the run's negative prompt (or the empty prompt).
    public var negativePrompt: String?
    public init(prompt: String, negativePrompt: String? = nil) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
    }
}

/// A prompts file (`alter sample --prompts FILE`): plain text with one prompt per line (blank
/// lines skipped; lines end at "\n", "\r\n" or any other Unicode line break), or, when the name ends in `.jsonl`, JSON lines
/// `{"prompt": "...", "negative_prompt": "..."}` (`negative_prompt` optional; no other key; blank
/// lines skipped). UTF-8, at most `maxBytes` bytes and `maxPrompts` prompts.
public enum PromptFile {
    public static let maxBytes = 16 << 20
    public static let maxPrompts = 10_000

    /// The prompts of the file at `path`.
    public static func read(path: String) throws(TextToImageError) -> [PromptEntry] {
        let data: Data
        do { data = try RegularFile.read(path, limit: maxBytes) } catch { throw .input("\(path): \(error.reason)") }
        guard let text = String(data: data, encoding: .utf8) else { throw .input("\(path): not UTF-8 text") }
        return try parse(text, jsonLines: path.lowercased().hasSuffix(".jsonl"), file: path)
    }

    /// The prompts of `text` (the contents of `file`, for errors).
    public static func parse(_ text: String, jsonLines: Bool, file: String) throws(TextToImageError) -> [PromptEntry] {
        var entries: [PromptEntry] = []
        for (i, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = String(raw)
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            guard entries.count < maxPrompts else { throw .input("\(file): more than \(maxPrompts) prompts") }
            if jsonLines {
                entries.append(try entry(json: line, file: file, line: i + 1))
            } else {
                entries.append(PromptEntry(prompt: line))
            }
        }
        guard !entries.isEmpty else { throw .input("\(file): no prompts") }
        return entries
    }

    private static func entry(json line: String, file: String, line number: Int) throws(TextToImageError) -> PromptEntry {
        let value: Any
        do { value = try StrictJSON.jsonObject(Data(line.utf8), source: "\(file):\(number)") } catch { throw .input(error.description) }
        guard let fields = value as? [String: Any] else { throw .input("\(file):\(number): expected a JSON object {\"prompt\": ...}") }
        var prompt: String?, negative: String?
        for (key, v) in fields.sorted(by: { $0.key < $1.key }) {
            guard let s = v as? String else { throw .input("\(file):\(number): \"\(key)\" must be a string") }
            switch key {
            case "prompt": prompt = s
            case "negative_prompt": negative = s
            default: throw .input("\(file):\(number): unknown key \"\(key)\" (expected prompt, negative_prompt)")
            }
        }
        guard let prompt else { throw .input("\(file):\(number): no \"prompt\"") }
        return PromptEntry(prompt: prompt, negativePrompt: negative)
    }
}
