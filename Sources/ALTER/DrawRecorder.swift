import Experts
import Foundation
import SafeTensors
import TensorCore

/// Collects what an ALTER run draws at random during its first `steps` iterations, with the
/// values each step computed from those draws, so that another trainer can replay the run and
/// check itself step by step (formats/record-draws.md). It only observes: a run with a recorder
/// draws, trains and writes exactly what it does without one.
public final class DrawRecorder {
    /// Iterations recorded (the first ones of the run).
    public let steps: Int
    /// The recorded tensors in the order they were recorded.
    public private(set) var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
    var metadata: [String: String] = [:]

    /// A recorder of iterations 1...`steps`.
    public init(steps: Int) {
        precondition(steps >= 0, "DrawRecorder: negative step count \(steps)")
        self.steps = steps
    }

    /// Whether iteration `step` (1-based) is recorded.
    func records(step: Int) -> Bool { step <= steps }

    func add(_ name: String, _ t: Tensor) { add(name, floats: t.scalars, shape: t.shape) }

    func add(_ name: String, floats: [Float], shape: [Int]) {
        append(name, .f32, shape, floats.withUnsafeBytes { Array($0) })
    }

    func add(_ name: String, ints: [Int], shape: [Int]? = nil) {
        let v = ints.map { Int64($0).littleEndian }
        append(name, .i64, shape ?? [ints.count], v.withUnsafeBytes { Array($0) })
    }

    func add(_ name: String, double: Double) {
        append(name, .f64, [], withUnsafeBytes(of: double.bitPattern.littleEndian) { Array($0) })
    }

    func add(_ name: String, doubles: [Double]) {
        let v = doubles.map { $0.bitPattern.littleEndian }
        append(name, .f64, [doubles.count], v.withUnsafeBytes { Array($0) })
    }

    /// Booleans as U8 [count] (1 true).
    func add(_ name: String, flags: [Bool]) {
        append(name, .u8, [flags.count], flags.map { UInt8($0 ? 1 : 0) })
    }

    /// `kept` as U8 [experts, units] (1 kept) and `route` as I64 [timesteps].
    func add(_ prefix: String, decisions d: ExpertDecisions) {
        append(prefix + ".kept", .u8, [d.experts, d.units.count], d.kept.flatMap { $0.map { UInt8($0 ? 1 : 0) } })
        add(prefix + ".route", ints: d.route)
    }

    /// The Gumbel noise of one draw of the hypernetwork's decisions.
    func add(_ prefix: String, draw: RelaxedDecisions) {
        add(prefix + ".unit_gumbel", draw.unitNoise)
        if let noise = draw.routerDraw.noise { add(prefix + ".route_gumbel", noise) }
    }

    /// The scalar values of `m` (those present).
    func add(_ prefix: String, metrics m: StepMetrics) {
        let values: [(String, Double?)] = [
            ("loss", m.loss), ("output_kd", m.outputKD), ("feature_kd", m.featureKD), ("denoise", m.denoise), ("guidance_kd", m.guidanceKD),
            ("kept_fraction", m.keptFraction), ("lr_unet", m.learningRateUNet), ("grad_norm_unet", m.gradientNormUNet),
            ("hypernet_loss", m.hypernetLoss), ("performance", m.performance), ("ratio", m.ratio), ("balance", m.balance),
            ("smoothness", m.smoothness),
            ("lr_hypernet", m.learningRateHypernet), ("grad_norm_hypernet", m.gradientNormHypernet),
        ]
        for case let (name, value?) in values { add("\(prefix).\(name)", double: value) }
    }

    private func append(_ name: String, _ dtype: DType, _ shape: [Int], _ bytes: [UInt8]) {
        precondition(!tensors.contains { $0.spec.name == name }, "DrawRecorder: \(name) recorded twice")
        tensors.append((TensorSpec(name: name, dtype: dtype, shape: shape), bytes))
    }

    /// The `step.NNNNNN` prefix of iteration `step`.
    static func prefix(step: Int) -> String { "step." + String(format: "%06d", step) }

    /// Adds the run's final decisions (`final.kept`, `final.route`).
    public func recordFinal(_ d: ExpertDecisions) { add("final", decisions: d) }

    /// Writes the record to `path` (atomically; the output policy is the caller's).
    public func write(to path: String) throws {
        var meta = metadata
        meta["format"] = "alter.record-draws"
        meta["format_version"] = "1"
        meta["recorded_steps"] = String(steps)
        let writer = try SafeTensorsWriter(path: path, tensors: tensors.map(\.spec), metadata: meta)
        do {
            let bytes = Dictionary(uniqueKeysWithValues: tensors.map { ($0.spec.name, $0.bytes) })
            for spec in writer.order { try bytes[spec.name, default: []].withUnsafeBytes { try writer.write(spec.name, bytes: $0) } }
            try writer.finish()
        } catch {
            writer.abort()
            throw error
        }
    }
}
