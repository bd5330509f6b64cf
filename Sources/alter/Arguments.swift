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

    var isBundle: Bool { if case .bundle = self { return true } else { return false } }
}
