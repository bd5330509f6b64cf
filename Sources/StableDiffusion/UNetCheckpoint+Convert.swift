import Foundation
import SafeTensors

/// What a conversion wrote.
public struct ConversionSummary: Sendable {
    /// The file or folder written.
    public var output: String
    public var layout: CheckpointLayout
    public var tensors: Int
    /// Bytes of tensor data written.
    public var bytes: Int
    /// The weights file inside `output` (equal to `output` for the original layout).
    public var weightsPath: String
}

extension UNetCheckpoint {
    /// Writes the UNet to `output` in `layout`: a diffusers folder (`config.json` +
    /// `diffusion_pytorch_model.safetensors`) or an original-layout single file
    /// (`model.diffusion_model.*`, UNet only). `dtype` nil keeps each tensor's stored dtype.
    ///
    /// Streams one tensor at a time and writes atomically: on any error the destination is
    /// left as it was. An existing destination is replaced only with `overwrite`.
    /// `progress` is called with (bytes done, bytes total).
    public func convert(
        to output: String, layout: CheckpointLayout, dtype: DType?, overwrite: Bool = false,
        progress: ((Int, Int) -> Void)? = nil
    ) throws(CheckpointError) -> ConversionSummary {
        if let dtype, !dtype.isFloatConvertible {
            throw .io(file: output, "target dtype must be F32, F16 or BF16, not \(dtype.rawValue)")
        }
        let fm = FileManager.default
        var isDir: ObjCBool = false
        let exists = fm.fileExists(atPath: output, isDirectory: &isDir)
        if exists && !overwrite { throw .io(file: output, "already exists (pass --force to replace it)") }
        if exists && layout == .original && isDir.boolValue {
            throw .io(file: output, "is a folder; the original layout is a single .safetensors file")
        }
        let target = UNetKeyMap(config: config, layout: layout)
        var specs: [TensorSpec] = []
        var sources: [String: TensorStore.Location] = [:]
        for e in target.entries {
            guard let loc = location(e.canonical) else {
                throw .safetensors(SafeTensorsError(file: source.path, tensor: e.canonical, .noSuchTensor))
            }
            specs.append(TensorSpec(name: e.stored, dtype: dtype ?? loc.info.dtype, shape: e.shape))
            sources[e.stored] = loc
        }
        let metadata = ["format": "pt"]

        switch layout {
        case .original:
            let bytes = try writeWeights(to: output, specs: specs, sources: sources, metadata: metadata, progress: progress)
            return ConversionSummary(output: output, layout: layout, tensors: specs.count, bytes: bytes, weightsPath: output)
        case .diffusers:
            try config.validate(source: configOrigin)
            let folder = try StagingFolder(destination: output)
            let weights = folder.path + "/\(CheckpointSource.weightsName).safetensors"
            let bytes = try writeWeights(to: weights, specs: specs, sources: sources, metadata: metadata, progress: progress)
            do { try config.diffusersJSON().write(to: URL(fileURLWithPath: folder.path + "/config.json")) } catch {
                throw .io(file: output, "cannot write config.json: \(error.localizedDescription)")
            }
            try folder.commit(overwrite: overwrite)
            return ConversionSummary(
                output: output, layout: layout, tensors: specs.count, bytes: bytes,
                weightsPath: output + "/\(CheckpointSource.weightsName).safetensors")
        }
    }

    private func writeWeights(
        to path: String, specs: [TensorSpec], sources: [String: TensorStore.Location],
        metadata: [String: String], progress: ((Int, Int) -> Void)?
    ) throws(CheckpointError) -> Int {
        let total = specs.reduce(0) { $0 + $1.byteCount }
        var done = 0
        let writer: SafeTensorsWriter
        do { writer = try SafeTensorsWriter(path: path, tensors: specs, metadata: metadata) } catch { throw .safetensors(error) }
        let maxBytes = specs.map(\.byteCount).max() ?? 0
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxBytes, 1), alignment: 64)
        defer { scratch.deallocate() }
        do {
            for spec in writer.order {
                guard let loc = sources[spec.name] else { continue }
                if loc.info.dtype == spec.dtype {
                    try writer.write(spec.name, copying: loc.info, from: loc.file)
                } else {
                    let src = loc.file.rawBytes(loc.info)
                    let dst = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<spec.byteCount])
                    DTypeConversion.convert(src, from: loc.info.dtype, to: spec.dtype, into: dst)
                    try writer.write(spec.name, bytes: UnsafeRawBufferPointer(dst))
                }
                loc.file.release(loc.info)
                done += spec.byteCount
                progress?(done, total)
            }
            try writer.finish()
        } catch {
            writer.abort()
            throw .safetensors(error)
        }
        return total
    }
}

/// A folder built under a temporary name beside its destination and renamed into place by
/// `commit`; dropped without a commit, it is removed.
final class StagingFolder {
    let destination: String
    let path: String
    private var committed = false

    init(destination: String) throws(CheckpointError) {
        let url = URL(fileURLWithPath: destination)
        path = url.deletingLastPathComponent().path + "/.\(url.lastPathComponent).alter-tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        self.destination = destination
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false) } catch {
            throw .io(file: destination, "cannot create \(path): \(error.localizedDescription)")
        }
        TemporaryPaths.shared.add(path)
    }

    deinit {
        if !committed, TemporaryPaths.shared.remove(path) { try? FileManager.default.removeItem(atPath: path) }
    }

    /// Renames the folder into place, replacing an existing destination when `overwrite`.
    func commit(overwrite: Bool) throws(CheckpointError) {
        let fm = FileManager.default
        var old: String?
        if fm.fileExists(atPath: destination) {
            guard overwrite else { throw .io(file: destination, "already exists (pass --force to replace it)") }
            let aside = path + ".old"
            guard rename(destination, aside) == 0 else { throw .io(file: destination, "cannot move the old one aside: \(String(cString: strerror(errno)))") }
            old = aside
        }
        guard rename(path, destination) == 0 else {
            let why = String(cString: strerror(errno))
            if let old { _ = rename(old, destination) }
            throw .io(file: destination, "cannot rename \(path) into place: \(why)")
        }
        committed = true
        TemporaryPaths.shared.remove(path)
        syncDirectory(of: destination)
        if let old { try? fm.removeItem(atPath: old) }
    }
}
