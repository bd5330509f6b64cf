/// A named, trainable tensor: its value is updated in place by optimisers and its gradient is
/// accumulated by `Tape.backward`.
public final class Parameter: @unchecked Sendable {
    /// Canonical name (the diffusers name for UNet weights).
    public let name: String
    /// The value. Optimisers write its storage in place, then call `markUpdated()`.
    public let value: Tensor
    /// The accumulated gradient, same shape as `value`, or nil when none has been accumulated.
    public private(set) var grad: Tensor?
    /// Whether tapes record this parameter (and so compute its gradient).
    public var trainable = true
    /// Bumped by `markUpdated()`; caches derived from the value (e.g. Winograd weights) compare it.
    public private(set) var version = 0

    public init(name: String, value: Tensor) {
        self.name = name
        self.value = value
    }

    public var shape: [Int] { value.shape }

    /// grad += g (out of place: tensors handed to the tape may be shared).
    public func accumulate(_ g: Tensor) {
        precondition(g.count == value.count, "Parameter \(name): gradient of \(g.count) elements for \(value.shape)")
        if let grad {
            self.grad = Elementwise.add(grad, g.reshaped(value.shape))
        } else {
            grad = g.reshaped(value.shape)
        }
    }

    /// Forgets the gradient.
    public func zeroGrad() { grad = nil }

    /// Records that `value` was changed in place.
    public func markUpdated() { version &+= 1 }
}
