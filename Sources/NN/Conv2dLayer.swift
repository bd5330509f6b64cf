import Foundation
import TensorCore

/// A square-kernel 2-D convolution, NCHW.
public struct Conv2dLayer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int
    public let padding: Int
    /// Winograd-transformed weights, recomputed when the weight's version changes.
    private let winogradCache = WinogradCache()

    final class WinogradCache: @unchecked Sendable {
        private var u: Tensor?
        private var version = -1
        private let lock = NSLock()
        func get(_ weight: Parameter) -> Tensor {
            lock.lock(); defer { lock.unlock() }
            if let u, version == weight.version { return u }
            let t = Winograd3x3.transformedWeights(weight.value)
            u = t
            version = weight.version
            return t
        }
    }

    public init(
        _ source: some ParameterSource, _ prefix: String, in inChannels: Int, out outChannels: Int,
        kernel: Int, stride: Int = 1, padding: Int = 0
    ) throws {
        weight = try source.parameter(prefix + ".weight", shape: [outChannels, inChannels, kernel, kernel])
        bias = try source.parameter(prefix + ".bias", shape: [outChannels])
        self.stride = stride
        self.padding = padding
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    /// x: [N, C, H, W] -> [N, O, Ho, Wo].
    public func callAsFunction(_ x: Var, on tape: Tape) -> Var {
        tape.conv2d(x, weight: tape.parameter(weight), bias: bias.map(tape.parameter), stride: stride, padding: padding) {
            [winogradCache, weight] in winogradCache.get(weight)
        }
    }
}
