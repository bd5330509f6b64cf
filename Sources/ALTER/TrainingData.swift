import Foundation
import SafeTensors
import StableDiffusion
import TensorCore

/// The training data of `alter compress`: a safetensors file with `latents` [N, C, H, W] (VAE
/// latents already multiplied by the VAE scaling factor), `context` [N, S, D] (text-encoder
/// hidden states) and optionally `uncond` [S, D] (the empty prompt's context). See
/// `formats/training-data.md`.
///
/// Opening reads and checks the header and scans the values once (they must be finite); the
/// samples stay in the memory-mapped file and `batch(indices:)` converts only the samples it is
/// asked for to Float32, so a file larger than memory can be trained on.
public struct TrainingData: Sendable {
    /// The tensor names the format defines.
    public static let latentsName = "latents", contextName = "context", uncondName = "uncond"
    /// Tensors under this prefix are allowed and ignored.
    public static let extraPrefix = "extra."
    /// The `format` metadata value, and the `format_version` this reader understands.
    public static let formatName = "alter.training-data", formatVersion = "1"

    /// Where the samples live: a mapped file (converted on demand) or tensors in memory.
    private enum Source {
        case file(SafeTensorsFile, latents: TensorInfo, context: TensorInfo)
        case memory(latents: Tensor, context: Tensor)
    }

    private let source: Source
    /// The file's path (or the label given to the in-memory initialiser).
    public let path: String
    /// Number of samples N.
    public let count: Int
    /// Shape of `latents`: [N, C, H, W].
    public let latentShape: [Int]
    /// Shape of `context`: [N, S, D].
    public let contextShape: [Int]
    /// The empty prompt's context [S, D], Float32, if the file has one.
    public let uncond: Tensor?
    /// The `__metadata__` strings (empty when there are none).
    public let metadata: [String: String]
    /// Names of the ignored `extra.` tensors, in file order.
    public let extraNames: [String]

    /// Latent channels C, height H and width W.
    public var latentChannels: Int { latentShape[1] }
    public var latentHeight: Int { latentShape[2] }
    public var latentWidth: Int { latentShape[3] }
    /// Context tokens S and width D.
    public var contextLength: Int { contextShape[1] }
    public var contextDim: Int { contextShape[2] }

    /// The `vae_scaling_factor` metadata value, if given (informative: the latents are already scaled).
    public var vaeScalingFactor: Double? { metadata["vae_scaling_factor"].flatMap(Double.init) }

    /// Every latent [N, C, H, W] as Float32. For a file this converts the whole tensor (4 bytes per
    /// element); training reads samples with `batch(indices:)` instead.
    public var latents: Tensor {
        switch source {
        case .memory(let l, _): return l
        case .file(let f, let info, _): return Self.convert(f, info, shape: latentShape)
        }
    }

    /// Every context [N, S, D] as Float32 (converted in full for a file, like `latents`).
    public var context: Tensor {
        switch source {
        case .memory(_, let c): return c
        case .file(let f, _, let info): return Self.convert(f, info, shape: contextShape)
        }
    }

    /// Opens and checks a training-data file (see `formats/training-data.md`). With `checkValues`
    /// (the default) every value is read once and must be finite.
    public init(contentsOf url: URL, checkValues: Bool = true) throws(TrainingDataError) {
        try self.init(path: url.path, checkValues: checkValues)
    }

    /// Opens and checks the training-data file at `path`.
    public init(path: String, checkValues: Bool = true) throws(TrainingDataError) {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) } catch { throw .safetensors(error) }
        let names = file.names
        // What the file holds, named in the error for a missing tensor (a typo is the usual cause).
        func require(_ name: String) throws(TrainingDataError) -> TensorInfo {
            guard let info = file.info(name) else { throw .missingTensor(file: path, tensor: name, found: names) }
            guard info.dtype.isFloatConvertible else { throw .notFloat(file: path, tensor: name, dtype: info.dtype) }
            return info
        }
        let l = try require(Self.latentsName)
        let c = try require(Self.contextName)
        let u = file.info(Self.uncondName) == nil ? nil : try require(Self.uncondName)
        for name in names where ![Self.latentsName, Self.contextName, Self.uncondName].contains(name) {
            guard name.hasPrefix(Self.extraPrefix) else { throw .unexpectedTensor(file: path, tensor: name) }
        }
        try Self.checkShapes(path: path, latents: l.shape, context: c.shape, uncond: u?.shape)
        let meta = file.metadata ?? [:]
        try Self.checkMetadata(path: path, meta)
        if checkValues {
            for info in [l, c] + (u.map { [$0] } ?? []) {
                try Self.checkFinite(file, info, perSample: info.name == Self.uncondName ? 0 : info.elementCount / info.shape[0])
            }
        }
        source = .file(file, latents: l, context: c)
        self.path = path
        count = l.shape[0]
        latentShape = l.shape
        contextShape = c.shape
        uncond = u.map { Self.convert(file, $0, shape: $0.shape) }
        metadata = meta
        extraNames = names.filter { $0.hasPrefix(Self.extraPrefix) }
    }

    /// Training data held in memory, checked like a file (`path` labels it in errors).
    public init(
        latents: Tensor, context: Tensor, uncond: Tensor? = nil, metadata: [String: String] = [:], path: String = "(memory)"
    ) throws(TrainingDataError) {
        try Self.checkShapes(path: path, latents: latents.shape, context: context.shape, uncond: uncond?.shape)
        try Self.checkMetadata(path: path, metadata)
        for (name, t) in [(Self.latentsName, latents), (Self.contextName, context)] + (uncond.map { [(Self.uncondName, $0)] } ?? []) {
            let perSample = name == Self.uncondName ? 0 : t.count / t.shape[0]
            if let bad = Self.firstNonFinite(UnsafeBufferPointer(start: t.data, count: t.count)) {
                throw .nonFinite(file: path, tensor: name, sample: perSample == 0 ? nil : bad.index / perSample, value: bad.value)
            }
        }
        source = .memory(latents: latents, context: context)
        self.path = path
        count = latents.shape[0]
        latentShape = latents.shape
        contextShape = context.shape
        self.uncond = uncond
        self.metadata = metadata
        extraNames = []
    }

    /// Checks that the data fits `config`: `latents` has `config.inChannels` channels and a height
    /// and width that are positive multiples of 2^(levels-1) (each level but the last halves
    /// them); `context` is `config.crossAttentionDim` wide.
    public func validate(for config: UNetConfig) throws(TrainingDataError) {
        guard latentChannels == config.inChannels else {
            throw .latentChannels(file: path, shape: latentShape, expected: config.inChannels)
        }
        let multiple = 1 << max(0, config.levels - 1)
        guard latentHeight > 0, latentWidth > 0, latentHeight % multiple == 0, latentWidth % multiple == 0 else {
            throw .latentSize(file: path, shape: latentShape, multiple: multiple, levels: config.levels)
        }
        guard contextDim == config.crossAttentionDim else {
            throw .contextDim(file: path, tensor: Self.contextName, shape: contextShape, expected: config.crossAttentionDim)
        }
    }

    /// Copies the samples at `indices` (each in 0..<count; repeats allowed) into new Float32
    /// tensors: latents [B, C, H, W] and context [B, S, D] with B = indices.count.
    public func batch(indices: [Int]) -> (latents: Tensor, context: Tensor) {
        for i in indices { precondition(i >= 0 && i < count, "TrainingData.batch: index \(i) outside 0..<\(count)") }
        let b = indices.count
        let lat = Tensor(uninitialized: [b] + latentShape.dropFirst())
        let ctx = Tensor(uninitialized: [b] + contextShape.dropFirst())
        let lPer = lat.count / max(b, 1), cPer = ctx.count / max(b, 1)
        switch source {
        case .memory(let l, let c):
            for (k, i) in indices.enumerated() {
                (lat.data + k * lPer).update(from: l.data + i * lPer, count: lPer)
                (ctx.data + k * cPer).update(from: c.data + i * cPer, count: cPer)
            }
        case .file(let f, let li, let ci):
            let lBytes = f.rawBytes(li), cBytes = f.rawBytes(ci)
            for (k, i) in indices.enumerated() {
                Self.convertRows(lBytes, li.dtype, from: i * lPer, count: lPer, into: lat.data + k * lPer)
                Self.convertRows(cBytes, ci.dtype, from: i * cPer, count: cPer, into: ctx.data + k * cPer)
            }
        }
        return (lat, ctx)
    }

    // MARK: - checks

    static func checkShapes(path: String, latents l: [Int], context c: [Int], uncond u: [Int]?) throws(TrainingDataError) {
        guard l.count == 4 else {
            throw .wrongShape(file: path, tensor: latentsName, shape: l, expected: "rank 4: [N, C, H, W]")
        }
        guard c.count == 3 else {
            throw .wrongShape(file: path, tensor: contextName, shape: c, expected: "rank 3: [N, S, D]")
        }
        guard l[0] >= 1 else {
            throw .wrongShape(file: path, tensor: latentsName, shape: l, expected: "at least one sample (N >= 1)")
        }
        guard !l.contains(0) else {
            throw .wrongShape(file: path, tensor: latentsName, shape: l, expected: "[N, C, H, W] with no zero dimension")
        }
        guard c[0] == l[0] else { throw .sampleCountMismatch(file: path, latents: l[0], context: c[0]) }
        guard !c.contains(0) else {
            throw .wrongShape(file: path, tensor: contextName, shape: c, expected: "[N, S, D] with no zero dimension")
        }
        if let u, u != Array(c.dropFirst()) {
            throw .wrongShape(
                file: path, tensor: uncondName, shape: u,
                expected: "[S, D] = \(Array(c.dropFirst())), one sample of 'context' \(c)")
        }
    }

    static func checkMetadata(path: String, _ meta: [String: String]) throws(TrainingDataError) {
        if let f = meta["format"], f != formatName {
            throw .invalidMetadata(file: path, key: "format", value: f, expected: "'\(formatName)'")
        }
        if let v = meta["format_version"], v != formatVersion {
            throw .invalidMetadata(file: path, key: "format_version", value: v, expected: "'\(formatVersion)' (this alter reads version \(formatVersion))")
        }
        if let s = meta["vae_scaling_factor"] {
            guard let x = Double(s.trimmingCharacters(in: .whitespaces)), x.isFinite, x > 0 else {
                throw .invalidMetadata(file: path, key: "vae_scaling_factor", value: s, expected: "a positive decimal number such as 0.18215")
            }
        }
    }

    /// Reads every value of `info` once and throws at the first non-finite one. `perSample`
    /// elements make one sample (0: the tensor is not per sample).
    static func checkFinite(_ file: SafeTensorsFile, _ info: TensorInfo, perSample: Int) throws(TrainingDataError) {
        let bytes = file.rawBytes(info)
        if let index = firstNonFiniteIndex(bytes, info.dtype) {
            var value: Float = 0
            convertRows(bytes, info.dtype, from: index, count: 1, into: &value)
            throw .nonFinite(file: file.path, tensor: info.name, sample: perSample == 0 ? nil : index / perSample, value: value)
        }
        // A file larger than memory should not stay resident after the scan.
        if info.byteCount >= 64 << 20 { file.release(info) }
    }

    /// The index of the first NaN or infinity among raw little-endian F32, F16 or BF16 values:
    /// an all-ones exponent. Eight bytes at a time (two or four values per word: a lane whose
    /// exponent bits are all set becomes zero after the XOR; the borrow test finds zero lanes).
    static func firstNonFiniteIndex(_ bytes: UnsafeRawBufferPointer, _ dtype: DType) -> Int? {
        let size = dtype.byteSize
        let exponent: UInt64, ones: UInt64, tops: UInt64
        switch dtype {
        case .f32: (exponent, ones, tops) = (0x7F80_0000_7F80_0000, 0x0000_0001_0000_0001, 0x8000_0000_8000_0000)
        case .f16: (exponent, ones, tops) = (0x7C00_7C00_7C00_7C00, 0x0001_0001_0001_0001, 0x8000_8000_8000_8000)
        default: (exponent, ones, tops) = (0x7F80_7F80_7F80_7F80, 0x0001_0001_0001_0001, 0x8000_8000_8000_8000)
        }
        var offset = 0
        while offset + 8 <= bytes.count {
            let y = (UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) & exponent) ^ exponent
            if (y &- ones) & ~y & tops != 0 { break }
            offset += 8
        }
        let lane = UInt64(exponent & (size == 4 ? 0xFFFF_FFFF : 0xFFFF))
        for i in (offset / size)..<(bytes.count / size) {
            let bits = size == 4
                ? UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                : UInt64(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
            if bits & lane == lane { return i }
        }
        return nil
    }

    static func firstNonFinite(_ values: UnsafeBufferPointer<Float>) -> (index: Int, value: Float)? {
        for (i, v) in values.enumerated() where !v.isFinite { return (i, v) }
        return nil
    }

    // MARK: - conversion

    /// Converts elements `from..<from+count` of a raw tensor of `dtype` into `dst` as Float32.
    static func convertRows(_ bytes: UnsafeRawBufferPointer, _ dtype: DType, from: Int, count: Int, into dst: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        let size = dtype.byteSize
        let src = UnsafeRawBufferPointer(rebasing: bytes[(from * size)..<((from + count) * size)])
        DTypeConversion.convert(src, from: dtype, to: .f32, into: UnsafeMutableRawBufferPointer(start: dst, count: count * 4))
    }

    static func convert(_ file: SafeTensorsFile, _ info: TensorInfo, shape: [Int]) -> Tensor {
        let t = Tensor(uninitialized: shape)
        convertRows(file.rawBytes(info), info.dtype, from: 0, count: info.elementCount, into: t.data)
        return t
    }
}

/// A training-data file that cannot be used. Every case names the file and, where there is one,
/// the tensor, and says what was expected and what was found.
public enum TrainingDataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file cannot be opened or is not a valid safetensors file.
    case safetensors(SafeTensorsError)
    /// `latents` or `context` is absent; `found` lists the names the file holds.
    case missingTensor(file: String, tensor: String, found: [String])
    /// A tensor's dtype is not F32, F16 or BF16.
    case notFloat(file: String, tensor: String, dtype: DType)
    /// A tensor has the wrong rank, a zero dimension, or (for `uncond`) differs from [S, D].
    case wrongShape(file: String, tensor: String, shape: [Int], expected: String)
    /// `latents` and `context` hold different numbers of samples.
    case sampleCountMismatch(file: String, latents: Int, context: Int)
    /// A tensor that is neither `latents`, `context`, `uncond` nor under `extra.`.
    case unexpectedTensor(file: String, tensor: String)
    /// A NaN or infinity, in `sample` (nil for `uncond`).
    case nonFinite(file: String, tensor: String, sample: Int?, value: Float)
    /// A `__metadata__` key this format defines holds an unusable value.
    case invalidMetadata(file: String, key: String, value: String, expected: String)
    /// The latents' channel count is not the model's `in_channels`.
    case latentChannels(file: String, shape: [Int], expected: Int)
    /// The latents' height or width is not a positive multiple of 2^(levels-1).
    case latentSize(file: String, shape: [Int], multiple: Int, levels: Int)
    /// The context's width is not the model's `cross_attention_dim`.
    case contextDim(file: String, tensor: String, shape: [Int], expected: Int)

    /// The file concerned.
    public var file: String {
        switch self {
        case .safetensors(let e): return e.file
        case .missingTensor(let f, _, _), .notFloat(let f, _, _), .wrongShape(let f, _, _, _),
             .sampleCountMismatch(let f, _, _), .unexpectedTensor(let f, _), .nonFinite(let f, _, _, _),
             .invalidMetadata(let f, _, _, _), .latentChannels(let f, _, _), .latentSize(let f, _, _, _),
             .contextDim(let f, _, _, _):
            return f
        }
    }

    /// The tensor concerned, if any.
    public var tensor: String? {
        switch self {
        case .safetensors(let e): return e.tensor
        case .missingTensor(_, let t, _), .notFloat(_, let t, _), .wrongShape(_, let t, _, _), .unexpectedTensor(_, let t),
             .nonFinite(_, let t, _, _), .contextDim(_, let t, _, _):
            return t
        case .sampleCountMismatch: return TrainingData.contextName
        case .latentChannels, .latentSize: return TrainingData.latentsName
        case .invalidMetadata: return nil
        }
    }

    public var description: String {
        switch self {
        case .safetensors(let e):
            switch e.reason {
            case .fileTooShort, .headerTooLarge, .headerBeyondFile, .invalidJSON, .headerNotObject:
                // The first eight bytes or the header do not frame a safetensors header at all.
                return e.description + "; this is not a safetensors file"
            default:
                return e.description
            }
        case .missingTensor(let f, let t, let found):
            let what = t == TrainingData.latentsName
                ? "[N, C, H, W] VAE latents, already multiplied by the VAE scaling factor"
                : "[N, S, D] text-encoder hidden states, one row of S tokens per latent"
            let listed = found.isEmpty
                ? "the file holds no tensors"
                : "the file holds " + found.prefix(8).map { "'\($0)'" }.joined(separator: ", ") + (found.count > 8 ? ", ... (\(found.count) in all)" : "")
            return "\(f): no tensor '\(t)' (expected \(what)); \(listed)"
        case .notFloat(let f, let t, let d):
            return "\(f): tensor '\(t)' has dtype \(d.rawValue); training data must be F32, F16 or BF16"
        case .wrongShape(let f, let t, let s, let e):
            return "\(f): tensor '\(t)' has shape \(s); expected \(e)"
        case .sampleCountMismatch(let f, let l, let c):
            return "\(f): tensor 'context' holds \(c) samples but 'latents' holds \(l); both need the same N (one context per latent)"
        case .unexpectedTensor(let f, let t):
            return "\(f): unexpected tensor '\(t)'; a training-data file holds 'latents', 'context' and optionally 'uncond' (put anything else under the '\(TrainingData.extraPrefix)' prefix)"
        case .nonFinite(let f, let t, let s, let v):
            let at = s.map { " in sample \($0)" } ?? ""
            return "\(f): tensor '\(t)' holds a non-finite value (\(v))\(at); training data must be finite"
        case .invalidMetadata(let f, let k, let v, let e):
            return "\(f): __metadata__ '\(k)' is '\(v)'; expected \(e)"
        case .latentChannels(let f, let s, let c):
            return "\(f): tensor 'latents' has shape \(s); the model takes \(c) latent channels ([N, \(c), H, W])"
        case .latentSize(let f, let s, let m, let levels):
            return "\(f): tensor 'latents' has shape \(s); the model's \(levels) levels need H and W to be positive multiples of \(m)"
        case .contextDim(let f, let t, let s, let d):
            return "\(f): tensor '\(t)' has shape \(s); the model's cross-attention takes D = \(d) ([N, S, \(d)])"
        }
    }
}
