import Foundation
import TensorCore

/// A fully connected layer, y = x W^T + b.
public struct LinearLayer {
    public var weight: Tensor
    public var bias: Tensor?

    public init(_ source: some ParameterSource, _ prefix: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true) throws {
        weight = try source.tensor(prefix + ".weight", shape: [outFeatures, inFeatures])
        self.bias = bias ? try source.tensor(prefix + ".bias", shape: [outFeatures]) : nil
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    /// x: [..., in] -> [..., out].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        Linear.forward(x, weight: weight, bias: bias)
    }
}

/// A square-kernel 2-D convolution, NCHW.
public struct Conv2dLayer {
    public let weight: Tensor
    public var bias: Tensor?
    public var stride: Int
    public var padding: Int
    /// Winograd-transformed weights, computed on first use (the weights of a layer do not change).
    private let winogradCache = WinogradCache()

    final class WinogradCache: @unchecked Sendable {
        private var u: Tensor?
        private let lock = NSLock()
        func get(_ weight: Tensor) -> Tensor {
            lock.lock(); defer { lock.unlock() }
            if let u { return u }
            let t = Winograd3x3.transformedWeights(weight)
            u = t
            return t
        }
    }

    public init(
        _ source: some ParameterSource, _ prefix: String, in inChannels: Int, out outChannels: Int,
        kernel: Int, stride: Int = 1, padding: Int = 0
    ) throws {
        weight = try source.tensor(prefix + ".weight", shape: [outChannels, inChannels, kernel, kernel])
        bias = try source.tensor(prefix + ".bias", shape: [outChannels])
        self.stride = stride
        self.padding = padding
    }

    /// x: [N, C, H, W] -> [N, O, Ho, Wo].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        Conv2d.forward(x, weight: weight, bias: bias, stride: stride, padding: padding) { [winogradCache, weight] in
            winogradCache.get(weight)
        }
    }
}

/// Group normalisation with a learned affine transform.
public struct GroupNormLayer {
    public var weight: Tensor
    public var bias: Tensor
    public var groups: Int
    public var eps: Float

    public init(_ source: some ParameterSource, _ prefix: String, channels: Int, groups: Int, eps: Float) throws {
        weight = try source.tensor(prefix + ".weight", shape: [channels])
        bias = try source.tensor(prefix + ".bias", shape: [channels])
        self.groups = groups
        self.eps = eps
    }

    /// x: [N, C, ...] -> same shape; with `silu`, followed by SiLU.
    public func callAsFunction(_ x: Tensor, silu: Bool = false) -> Tensor {
        GroupNorm.forward(x, groups: groups, weight: weight, bias: bias, eps: eps, silu: silu)
    }
}

/// Layer normalisation over the last axis with a learned affine transform.
public struct LayerNormLayer {
    public var weight: Tensor
    public var bias: Tensor
    public var eps: Float

    public init(_ source: some ParameterSource, _ prefix: String, channels: Int, eps: Float) throws {
        weight = try source.tensor(prefix + ".weight", shape: [channels])
        bias = try source.tensor(prefix + ".bias", shape: [channels])
        self.eps = eps
    }

    /// x: [..., C] -> same shape.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        LayerNorm.forward(x, weight: weight, bias: bias, eps: eps)
    }
}
