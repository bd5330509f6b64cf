import ALTER
import ArgumentParser
import ExpertBundle
import SafeTensors
import StableDiffusion

// Library types read straight from the command line.

extension DType: ExpressibleByArgument {
    /// fp32, fp16 or bf16 (also f32, f16; any letter case).
    public init?(argument: String) {
        switch argument.lowercased() {
        case "fp32", "f32": self = .f32
        case "fp16", "f16": self = .f16
        case "bf16": self = .bf16
        default: return nil
        }
    }

    public static var allValueStrings: [String] { ["fp32", "fp16", "bf16"] }

    public static var allValueDescriptions: [String: String] {
        ["fp32": "32-bit IEEE float", "fp16": "16-bit IEEE float (half)", "bf16": "bfloat16 (8-bit exponent, 7-bit mantissa)"]
    }

    public var defaultValueDescription: String {
        switch self {
        case .f32: return "fp32"
        case .f16: return "fp16"
        case .bf16: return "bf16"
        default: return rawValue
        }
    }
}

extension NoiseSchedule.PredictionType: ExpressibleByArgument {}
extension ALTERSettings.Routing: ExpressibleByArgument {}
extension CheckpointLayout: ExpressibleByArgument {}
extension SchedulerKind.Method: ExpressibleByArgument {}

extension SchedulerKind: ExpressibleByArgument {
    /// METHOD:STEPS, e.g. pndm:20.
    public init?(argument: String) {
        guard let k = try? SchedulerKind(parsing: argument) else { return nil }
        self = k
    }

    public var defaultValueDescription: String { description }
}

/// A sampler given as METHOD (steps from another option) or METHOD:STEPS.
struct SchedulerChoice: ExpressibleByArgument {
    var method: SchedulerKind.Method
    var steps: Int?

    init(method: SchedulerKind.Method, steps: Int? = nil) {
        self.method = method
        self.steps = steps
    }

    init?(argument: String) {
        if argument.contains(":") {
            guard let k = try? SchedulerKind(parsing: argument) else { return nil }
            self.init(method: k.method, steps: k.steps)
        } else {
            guard let m = SchedulerKind.Method(rawValue: argument.lowercased()) else { return nil }
            self.init(method: m)
        }
    }

    var defaultValueDescription: String { steps.map { "\(method.rawValue):\($0)" } ?? method.rawValue }

    /// The sampler with `steps` unless the choice names its own.
    func kind(steps defaultSteps: Int) throws -> SchedulerKind {
        do { return try SchedulerKind(method, steps: steps ?? defaultSteps) } catch { throw ValidationError("\(error)") }
    }
}

/// A comma-separated list of values of one type (`--batch 1,2`, `--skip unit,unit`).
struct CommaList<Element: ExpressibleByArgument>: ExpressibleByArgument {
    var values: [Element]

    init(_ values: [Element]) { self.values = values }

    init?(argument: String) {
        let items = argument.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let parsed = items.compactMap { Element(argument: $0) }
        guard !items.isEmpty, parsed.count == items.count else { return nil }
        values = parsed
    }

    var defaultValueDescription: String { values.map(\.defaultValueDescription).joined(separator: ",") }
}

/// What a MODEL argument names: a bundle directory (read and checked at once) or a checkpoint path.
enum ModelInput {
    case bundle(ExpertBundle)
    case checkpoint(String)

    /// A bundle when `path` is a directory holding bundle.json, else a checkpoint.
    init(path: String) throws {
        if ExpertBundle.isBundle(path) {
            do { self = .bundle(try ExpertBundle(path: path)) } catch { throw CommandFailure(error.description) }
        } else {
            self = .checkpoint(path)
        }
    }
}

/// Argument bounds: the library's (`Bounds`, `LatentSize`), never a second copy of the numbers;
/// errors name the flag instead of the library's field.
enum ArgumentBounds {
    /// Throws a `ValidationError` naming `flag` unless `value` (when given) lies in `range`.
    static func check(_ value: Int?, in range: ClosedRange<Int>, flag: String) throws {
        guard let value else { return }
        do { try Bounds.check(value, in: range, field: flag) } catch { throw ValidationError(message(error, flags: [:])) }
    }

    /// Checks a latent side (`Bounds.latentSide`) given with `flag`; the multiple of 2^(levels-1)
    /// is checked once the model is known (`LatentSize`).
    static func latent(_ value: Int?, flag: String) throws { try check(value, in: Bounds.latentSide, flag: flag) }

    /// Checks a context length (`Bounds.contextLength`) given with `flag`.
    static func context(_ value: Int?, flag: String) throws { try check(value, in: Bounds.contextLength, flag: flag) }

    /// A library size error in terms of the command's flags (`latent_height` -> `--latent`, ...);
    /// a field without a flag keeps its name.
    static func message(_ e: SizeError, flags: [String: String]) -> String {
        let field = e.field.split(separator: ".").last.map(String.init) ?? e.field
        return "\(flags[field] ?? flags[e.field] ?? e.field) \(e.message)"
    }

    /// A library error whose text names size fields in backticks, with each field replaced by its flag.
    static func message(_ text: String, flags: [String: String]) -> String {
        flags.reduce(text) { $0.replacingOccurrences(of: "`\($1.key)`", with: $1.value).replacingOccurrences(of: "`macs.\($1.key)`", with: $1.value) }
    }
}
