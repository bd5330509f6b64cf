import SafeTensors

/// The outcome of matching a checkpoint's tensors against a component's expected parameters
/// (the UNet's, the text encoder's or the VAE's).
public struct LoadReport: Sendable, CustomStringConvertible {
    public struct Misshapen: Sendable, Equatable {
        public var canonical: String
        public var stored: String
        public var expected: [Int]
        public var actual: [Int]
    }
    public struct WrongDType: Sendable, Equatable {
        public var stored: String
        public var dtype: DType
    }

    /// The checkpoint path.
    public var file: String
    public var layout: CheckpointLayout
    /// The component whose tensors were matched.
    public var component: Component = .unet
    /// Parameters found with the right shape and a float dtype.
    public var mapped = 0
    /// Stored names of expected parameters that are absent.
    public var missing: [String] = []
    /// Stored tensors of the component's namespace that no parameter uses.
    public var unused: [String] = []
    public var misshapen: [Misshapen] = []
    public var wrongDType: [WrongDType] = []

    /// Whether nothing is missing, misshapen, of a wrong dtype, or (unless allowed) unused.
    public func isAcceptable(allowUnused: Bool) -> Bool {
        missing.isEmpty && misshapen.isEmpty && wrongDType.isEmpty && (allowUnused || unused.isEmpty)
    }

    public var description: String {
        var lines = ["\(file): \(component.rawValue) tensors (\(layout.rawValue) layout): \(mapped) mapped, \(missing.count) missing, \(unused.count) unused, \(misshapen.count + wrongDType.count) misshapen"]
        let limit = 20
        func list<T>(_ title: String, _ xs: [T], _ f: (T) -> String) {
            guard !xs.isEmpty else { return }
            lines.append("  \(title):")
            for x in xs.prefix(limit) { lines.append("    \(f(x))") }
            if xs.count > limit { lines.append("    ... and \(xs.count - limit) more") }
        }
        list("missing", missing) { $0 }
        list("misshapen", misshapen) { "\($0.stored): expected \($0.expected), found \($0.actual)" }
        list("wrong dtype", wrongDType) { "\($0.stored): \($0.dtype.rawValue), expected F32, F16 or BF16" }
        list(component == .textEncoder || component == .vae ? "unused" : "unused (load option allow_unused loads anyway)", unused) { $0 }
        return lines.joined(separator: "\n")
    }
}
