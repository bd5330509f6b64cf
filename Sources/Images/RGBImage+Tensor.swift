import TensorCore

extension RGBImage {
    /// The image as the VAE encoder's input, as diffusers' `VaeImageProcessor.preprocess` makes
    /// it: `x / 255` in Float32, then `2 * x - 1`, in [-1, 1]. out: [1, 3, H, W].
    public func tensor() -> Tensor {
        let plane = width * height
        let t = Tensor(uninitialized: [1, 3, height, width])
        pixels.withUnsafeBufferPointer { src in
            let d = t.data
            for i in 0..<plane {
                for c in 0..<3 { d[c * plane + i] = 2 * (Float(src[i * 3 + c]) / 255) - 1 }
            }
        }
        return t
    }

    /// Image `index` of a decoder output, as diffusers' `VaeImageProcessor.postprocess` and
    /// `numpy_to_pil` make it: `(x * 0.5 + 0.5).clamp(0, 1)`, then `(x * 255).round()` (half to
    /// even), all in Float32; NaN gives 0. tensor: [B, 3, H, W].
    public init(tensor: Tensor, index: Int = 0) throws(ImageError) {
        guard tensor.rank == 4, tensor.shape[1] == 3, tensor.shape[0] >= 1 else {
            throw ImageError(file: nil, .invalid("an image tensor is [B, 3, H, W], not \(tensor.shape)"))
        }
        let (b, h, w) = (tensor.shape[0], tensor.shape[2], tensor.shape[3])
        guard (0..<b).contains(index) else {
            throw ImageError(file: nil, .invalid("image \(index) of a batch of \(b)"))
        }
        try ImageBounds.check(width: w, height: h, file: nil)
        let plane = w * h
        let src = tensor.data + index * 3 * plane
        self = RGBImage.make(width: w, height: h) { out in
            for i in 0..<plane {
                for c in 0..<3 { out[i * 3 + c] = Self.byte(src[c * plane + i]) }
            }
        }
    }

    /// Every image of a decoder output [B, 3, H, W] (`init(tensor:index:)`).
    public static func images(from tensor: Tensor) throws(ImageError) -> [RGBImage] {
        guard tensor.rank == 4 else { throw ImageError(file: nil, .invalid("an image tensor is [B, 3, H, W], not \(tensor.shape)")) }
        var result: [RGBImage] = []
        for i in 0..<tensor.shape[0] { result.append(try RGBImage(tensor: tensor, index: i)) }
        return result
    }

    /// One decoder value in [-1, 1] to a byte, with diffusers' order of Float32 operations.
    @inline(__always)
    static func byte(_ x: Float) -> UInt8 {
        let half = x * 0.5
        let shifted = half + 0.5
        guard shifted == shifted else { return 0 }
        let clamped = min(max(shifted, 0), 1)
        let scaled = clamped * 255
        return UInt8(scaled.rounded(.toNearestOrEven))
    }
}
