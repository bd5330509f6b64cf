/// A problem with a safetensors file, naming the file and, where there is one, the tensor.
public struct SafeTensorsError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong.
    public enum Reason: Equatable, Sendable {
        case cannotOpen(String)
        case fileTooShort(size: Int)
        case headerBeyondFile(headerLength: UInt64, fileSize: Int)
        case headerTooLarge(headerLength: UInt64, limit: Int)
        case invalidJSON(String)
        case headerNotObject
        case duplicateName
        case invalidMetadata(String)
        case invalidEntry(String)
        case unknownDType(String)
        case invalidShape(String)
        case shapeOverflow
        case invalidOffsets(String)
        case sizeMismatch(expected: Int, actual: Int)
        case offsetsOverlap(previous: String)
        case offsetsGap(previous: String?, gapBytes: Int)
        case dataPastEnd(end: Int, dataSize: Int)
        case trailingBytes(count: Int)
        case noSuchTensor
        case notFloat(DType)
        case countMismatch(expected: Int, actual: Int)
        case writeOrder(expected: String)
        case io(String)
        /// The output exists and replacing it was not asked for.
        case exists
    }

    /// Path of the file concerned.
    public var file: String
    /// Name of the tensor concerned, if any.
    public var tensor: String?
    public var reason: Reason

    public init(file: String, tensor: String? = nil, _ reason: Reason) {
        self.file = file
        self.tensor = tensor
        self.reason = reason
    }

    public var description: String {
        var where_ = file
        if let tensor { where_ += ": tensor '\(tensor)'" }
        return "\(where_): \(message)"
    }

    /// What is wrong, without the file and tensor.
    public var message: String {
        switch reason {
        case .cannotOpen(let why): return "cannot open: \(why)"
        case .fileTooShort(let size):
            return "file is \(size) bytes; a safetensors file needs at least 8 (header length)"
        case .headerBeyondFile(let n, let size):
            return "header length \(n) runs past the end of the file (\(size) bytes)"
        case .headerTooLarge(let n, let limit):
            return "header length \(n) exceeds the \(limit)-byte limit"
        case .invalidJSON(let why): return "header is not valid JSON: \(why)"
        case .headerNotObject: return "header JSON is not an object"
        case .duplicateName: return "name appears more than once in the header"
        case .invalidMetadata(let why): return "invalid __metadata__: \(why)"
        case .invalidEntry(let why): return "invalid header entry: \(why)"
        case .unknownDType(let s): return "unknown dtype '\(s)'"
        case .invalidShape(let why): return "invalid shape: \(why)"
        case .shapeOverflow: return "shape element count or byte size overflows"
        case .invalidOffsets(let why): return "invalid data_offsets: \(why)"
        case .sizeMismatch(let e, let a):
            return "shape x dtype size is \(e) bytes but data_offsets span \(a)"
        case .offsetsOverlap(let prev): return "data overlaps tensor '\(prev)'"
        case .offsetsGap(let prev, let gap):
            if let prev { return "\(gap) unused bytes between tensor '\(prev)' and this one" }
            return "data starts \(gap) bytes into the data section; the first tensor must start at 0"
        case .dataPastEnd(let end, let size):
            return "data ends at byte \(end) of a \(size)-byte data section"
        case .trailingBytes(let n): return "\(n) bytes after the last tensor belong to no tensor"
        case .noSuchTensor: return "no such tensor in the file"
        case .notFloat(let d): return "dtype \(d.rawValue) cannot be read as Float (F32, F16 or BF16 only)"
        case .countMismatch(let e, let a): return "expected \(e) elements, got \(a)"
        case .writeOrder(let e): return "tensors must be written in header order; expected '\(e)' next"
        case .io(let why): return why
        case .exists: return "already exists (replacing it was not asked for)"
        }
    }
}
