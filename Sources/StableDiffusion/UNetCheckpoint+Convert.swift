import Foundation
import SafeTensors

/// What a conversion wrote (`alter convert --json`, formats/cli-json.md).
public struct ConversionSummary: Sendable, Encodable {
    /// The checkpoint read.
    public var input: String
    /// The file or folder written.
    public var output: String
    public var layout: CheckpointLayout
    /// The storage dtype written, or "as stored".
    public var dtype: String
    public var tensors: Int
    /// Bytes of tensor data written.
    public var bytes: Int
    /// The weights file inside `output` (equal to `output` for the original layout).
    public var weightsPath: String
    /// UNet tensors of the input that the model does not use (allowed by `allowUnused`; not written).
    public var unusedTensors: [String]
    /// Wall time of the conversion, filled in by the caller.
    public var seconds = 0.0

    enum CodingKeys: String, CodingKey, CaseIterable {
        case input, output, layout, dtype, tensors = "tensor_count", bytes, weightsPath = "weights_path"
        case unusedTensors = "unused_tensors", seconds
    }
}

extension UNetCheckpoint {
    /// Writes the UNet to `output` in `layout`: a diffusers folder (`config.json` +
    /// `diffusion_pytorch_model.safetensors`) or an original-layout single file
    /// (`model.diffusion_model.*`, UNet only). `dtype` nil keeps each tensor's stored dtype.
    ///
    /// Streams one tensor at a time and writes atomically: on any error the destination is
    /// left as it was. The output follows `OutputTarget`'s policy: an existing destination is
    /// replaced only with `overwrite` and only by its own kind (a file by a file, a UNet folder by a
    /// UNet folder); an input of the conversion is never replaced.
    /// `progress` is called with (bytes done, bytes total).
    public func convert(
        to output: String, layout: CheckpointLayout, dtype: DType?, overwrite: Bool = false,
        progress: ((Int, Int) -> Void)? = nil
    ) throws(CheckpointError) -> ConversionSummary {
        if let dtype, !dtype.isFloatConvertible {
            throw .io(file: output, "target dtype must be F32, F16 or BF16, not \(dtype.rawValue)")
        }
        // The output policy: not an input, replaced only with `overwrite` and only by its own kind.
        let policy = OutputTarget(path: output, kind: layout == .original ? .file : .unetFolder, replace: overwrite,
                                  inputs: [source.path] + source.weightPaths + [configFile].compactMap { $0 })
        let lock: PathLock
        do {
            try policy.prepare()
            lock = try PathLock(beside: output)
        } catch { throw .safetensors(error) }
        defer { lock.release() }
        var tensors: [ConvertedTensor] = []
        for e in UNetKeyMap(config: config, layout: layout).entries {
            guard let loc = location(e.canonical) else {
                throw .safetensors(SafeTensorsError(file: source.path, tensor: e.canonical, .noSuchTensor))
            }
            tensors.append(ConvertedTensor(name: e.stored, dtype: dtype ?? loc.info.dtype, shape: e.shape, pieces: [.whole(loc)]))
        }

        switch layout {
        case .original:
            let bytes = try writeWeights(tensors, to: output, progress: progress)
            return ConversionSummary(input: source.path, output: output, layout: layout, dtype: dtype?.rawValue ?? "as stored", tensors: tensors.count,
                                     bytes: bytes, weightsPath: output, unusedTensors: report.unused)
        case .diffusers:
            try config.validate(source: configOrigin)
            let folder: AtomicDirectory
            do { folder = try AtomicDirectory(destination: output) } catch { throw .safetensors(error) }
            let weights = folder.path + "/\(CheckpointSource.weightsName).safetensors"
            let bytes = try writeWeights(tensors, to: weights, progress: progress)
            do { try config.diffusersJSON().write(to: URL(fileURLWithPath: folder.path + "/config.json")) } catch {
                throw .io(file: output, "cannot write config.json: \(error.localizedDescription)")
            }
            do { try folder.commit(replacing: overwrite) } catch { throw .safetensors(error) }
            return ConversionSummary(
                input: source.path, output: output, layout: layout, dtype: dtype?.rawValue ?? "as stored", tensors: tensors.count, bytes: bytes,
                weightsPath: output + "/\(CheckpointSource.weightsName).safetensors", unusedTensors: report.unused)
        }
    }

    private func writeWeights(_ tensors: [ConvertedTensor], to path: String, progress: ((Int, Int) -> Void)?) throws(CheckpointError) -> Int {
        let total = tensors.reduce(0) { $0 + $1.spec.byteCount }
        var done = 0
        do {
            return try ConvertedTensor.write(tensors, to: path) { n in
                done += n
                progress?(done, total)
            }
        } catch { throw .safetensors(error) }
    }
}
