/// Float32 storage shared by tensors: 64-byte aligned, never resized, recycled through a pool.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    private let byteCapacity: Int

    /// Allocates `count` floats, uninitialised.
    public init(count: Int) {
        precondition(count >= 0, "TensorStorage: negative count")
        self.count = count
        let (raw, size) = BufferPool.shared.allocate(bytes: count * 4)
        byteCapacity = size
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { BufferPool.shared.release(UnsafeMutableRawPointer(pointer), size: byteCapacity) }
}

/// A dense, row-major Float32 tensor.
///
/// Kernels take tensors and return new ones; a tensor's storage is not written after the kernel
/// that produced it returns (except by the explicitly in-place kernels), so tensors can be shared.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let storage: TensorStorage

    /// An uninitialised tensor of `shape` (kernels fill it).
    public init(uninitialized shape: [Int]) {
        self.shape = shape
        storage = TensorStorage(count: Tensor.count(of: shape))
    }

    /// A tensor of zeros.
    public init(zeros shape: [Int]) {
        self.init(uninitialized: shape)
        storage.pointer.initialize(repeating: 0, count: count)
    }

    /// A tensor filled with `value`.
    public init(repeating value: Float, shape: [Int]) {
        self.init(uninitialized: shape)
        storage.pointer.initialize(repeating: value, count: count)
    }

    /// A tensor holding `values` (row-major); `values.count` must equal the shape's element count.
    public init(shape: [Int], values: [Float]) {
        precondition(values.count == Tensor.count(of: shape), "Tensor: \(values.count) values for shape \(shape)")
        self.init(uninitialized: shape)
        values.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    /// A view of the same storage with another shape of the same element count.
    public init(reshaping other: Tensor, to shape: [Int]) {
        precondition(Tensor.count(of: shape) == other.count, "reshape \(other.shape) -> \(shape)")
        self.shape = shape
        storage = other.storage
    }

    public static func count(of shape: [Int]) -> Int { shape.reduce(1, *) }

    /// Number of elements.
    public var count: Int { Tensor.count(of: shape) }
    public var rank: Int { shape.count }
    /// The first element; valid for `count` elements.
    public var data: UnsafeMutablePointer<Float> { storage.pointer }
    /// The elements as an array (a copy).
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    /// A view with another shape.
    public func reshaped(_ shape: [Int]) -> Tensor { Tensor(reshaping: self, to: shape) }

    /// A deep copy.
    public func copy() -> Tensor {
        let t = Tensor(uninitialized: shape)
        t.data.update(from: data, count: count)
        return t
    }
}
