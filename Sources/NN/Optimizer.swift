import TensorCore

/// An optimiser: updates its parameters in place from their accumulated gradients.
public protocol Optimizer: AnyObject {
    /// The parameters it updates, in a fixed order.
    var parameters: [Parameter] { get }
    /// Updates applied so far.
    var step: Int { get }
    /// The learning rate of update number `step + 1`.
    var currentLearningRate: Double { get }
    /// Applies one update from the accumulated gradients, clears them, and returns the global
    /// gradient norm before any clipping.
    @discardableResult func update() -> Double
    /// Like `update`, but leaves everything but the gradients unchanged and returns nil when the
    /// gradient norm is not finite.
    func updateIfFinite() -> Double?
    /// The state a checkpoint keeps besides the parameters and `step`, named and in a fixed order.
    var stateTensors: [(name: String, tensor: Tensor)] { get }
    /// Restores `step` and the state tensors (in `stateTensors`' order and shapes).
    func restore(step: Int, state: [Tensor])
}
