import SafeTensors
import TensorCore

/// The safetensors files of `alter forward`: inputs (`sample`, `timestep`, `context`), optional
/// per-unit gates (one [B] tensor per unit name), and outputs (`out`, `feature.<name>`).
public enum ForwardFiles {
    /// Inputs read and checked against `unet`.
    public struct Inputs {
        public var sample: Tensor
        public var timesteps: [Float]
        public var context: Tensor
    }

    /// Reads `sample` [B,C,H,W], `timestep` [B] (float or integer dtype) and `context` [B,S,D].
    public static func readInputs(_ path: String, for unet: UNet) throws -> Inputs {
        let file = try SafeTensorsFile(path: path)
        let sample = try floatTensor(file, "sample")
        let timestepInfo = try file.require("timestep")
        let timesteps: [Float]
        switch timestepInfo.dtype {
        case .i64: timesteps = file.rawBytes(timestepInfo).withMemoryRebound(to: Int64.self) { $0.map { Float($0) } }
        case .i32: timesteps = file.rawBytes(timestepInfo).withMemoryRebound(to: Int32.self) { $0.map { Float($0) } }
        default: timesteps = try file.floats("timestep")
        }
        guard timestepInfo.shape.count <= 1 else {
            throw SafeTensorsError(file: path, tensor: "timestep", .invalidShape("expected [B], got \(timestepInfo.shape)"))
        }
        let context = try floatTensor(file, "context")
        let batch = sample.shape.first ?? 0
        // A single timestep applies to the whole batch, as in diffusers.
        let ts = timesteps.count == 1 && batch > 1 ? Array(repeating: timesteps[0], count: batch) : timesteps
        do {
            try unet.check(sample: sample.shape, timesteps: ts.count, context: context.shape)
        } catch {
            throw ForwardFileError(file: path, message: error.description)
        }
        return Inputs(sample: sample, timesteps: ts, context: context)
    }

    /// Reads per-unit gates: every tensor must be named after a unit and hold [batch] values in [0, 1].
    public static func readGates(_ path: String, for unet: UNet, batch: Int) throws -> [String: [Float]] {
        let file = try SafeTensorsFile(path: path)
        var gates: [String: [Float]] = [:]
        for info in file.tensors {
            gates[info.name] = try file.floats(info.name)
        }
        var options = UNetForwardOptions()
        options.gates = gates
        do { try unet.check(options, batch: batch) } catch { throw ForwardFileError(file: path, message: error.description) }
        return gates
    }

    /// Writes `out` and the features (as `feature.<name>`) atomically, F32.
    public static func writeOutputs(_ output: UNetOutput, to path: String, metadata: [String: String]? = nil) throws {
        var tensors: [(String, Tensor)] = [("out", output.sample)]
        tensors += output.features.map { ("feature.\($0.name)", $0.tensor) }
        let writer = try SafeTensorsWriter(
            path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: .f32, shape: $0.1.shape) }, metadata: metadata)
        let byName = Dictionary(uniqueKeysWithValues: tensors)
        for spec in writer.order {
            guard let t = byName[spec.name] else { continue }
            try writer.write(spec.name, bytes: UnsafeRawBufferPointer(start: t.data, count: t.count * 4))
        }
        try writer.finish()
    }

    static func floatTensor(_ file: SafeTensorsFile, _ name: String) throws -> Tensor {
        let info = try file.require(name)
        return Tensor(shape: info.shape, values: try file.floats(name))
    }
}

/// A forward input file that does not fit the model.
public struct ForwardFileError: Error, CustomStringConvertible {
    public var file: String
    public var message: String
    public var description: String { "\(file): \(message)" }
}
