import NN
import TensorCore

/// diffusers' `AutoencoderKL` (Stable Diffusion's VAE): the encoder (+ quant_conv) maps an image
/// in [-1, 1] to a latent distribution at 1/f the resolution (f = `config.downsamplingFactor`, 8
/// for SD); the decoder (after post_quant_conv) maps a latent back to an image.
///
/// Latents the UNet works on are VAE latents times `config.scalingFactor`: `decodeScaled`
/// divides by it first, as diffusers' pipelines do; `decode` takes raw latents. Inference runs on
/// a tape that records nothing.
public struct AutoencoderKL {
    public let config: VAEConfig
    public let encoder: VAEEncoder
    public let decoder: VAEDecoder
    /// 1x1 convolutions on the moments and on the latent; nil when the config has none.
    public let quantConv: Conv2dLayer?, postQuantConv: Conv2dLayer?

    /// Reads every parameter of `config` from `parameters` by its diffusers name.
    public init(config: VAEConfig, parameters s: some ParameterSource) throws {
        self.config = config
        let l = config.latentChannels
        encoder = try VAEEncoder(s, config: config)
        quantConv = config.useQuantConv ? try Conv2dLayer(s, VAEKeys.quantConv, in: 2 * l, out: 2 * l, kernel: 1) : nil
        postQuantConv = config.usePostQuantConv ? try Conv2dLayer(s, VAEKeys.postQuantConv, in: l, out: l, kernel: 1) : nil
        decoder = try VAEDecoder(s, config: config)
    }

    public var parameters: [Parameter] {
        encoder.parameters + (quantConv?.parameters ?? []) + (postQuantConv?.parameters ?? []) + decoder.parameters
    }

    /// Checks a tensor for `channels`: [N, channels, H, W] with N >= 1 and each side a positive
    /// multiple of `multiple`.
    func validate(_ x: Tensor, channels: Int, multiple: Int, what: String) throws(VAEError) {
        guard x.rank == 4 else { throw .invalidInput("\(what) has shape \(x.shape), expected [N, \(channels), H, W]") }
        guard x.shape[0] >= 1, x.shape[1] == channels else { throw .invalidInput("\(what) has shape \(x.shape), expected [N>=1, \(channels), H, W]") }
        for (axis, side) in [("height", x.shape[2]), ("width", x.shape[3])] where side < 1 || side % multiple != 0 {
            throw .invalidInput("\(what) \(axis) \(side) is not a positive multiple of \(multiple)")
        }
    }

    /// image: [N, in, H, W] -> moments [N, 2L, H/f, W/f] (mean channels, then unclamped
    /// log-variance), recorded on `tape`.
    public func moments(_ image: Var, on tape: Tape) -> Var {
        let h = encoder(image, on: tape)
        return quantConv.map { $0(h, on: tape) } ?? h
    }

    /// z: [N, L, h, w] (raw latents) -> image [N, out, h*f, w*f], recorded on `tape`.
    public func decode(_ z: Var, on tape: Tape) -> Var {
        decoder(postQuantConv.map { $0(z, on: tape) } ?? z, on: tape)
    }

    /// The latent distribution of `image` [N, in_channels, H, W] (sides multiples of f; pixels in
    /// [-1, 1] as diffusers' image processor makes them).
    public func encode(_ image: Tensor) throws(VAEError) -> LatentDistribution {
        try validate(image, channels: config.inChannels, multiple: config.downsamplingFactor, what: "image")
        let tape = Tape(recording: false)
        return LatentDistribution(moments: moments(tape.constant(image), on: tape).value)
    }

    /// The image [N, out_channels, h*f, w*f] of raw latents `z` [N, latent_channels, h, w].
    public func decode(_ z: Tensor) throws(VAEError) -> Tensor {
        try validate(z, channels: config.latentChannels, multiple: 1, what: "latent")
        let tape = Tape(recording: false)
        return decode(tape.constant(z), on: tape).value
    }

    /// The image of UNet latents: `decode(latents / scalingFactor)`, as diffusers' pipelines do.
    public func decodeScaled(_ latents: Tensor) throws(VAEError) -> Tensor {
        try validate(latents, channels: config.latentChannels, multiple: 1, what: "latent")
        let z = Tensor(uninitialized: latents.shape)
        let s = Float(config.scalingFactor)
        for i in 0..<z.count { z.data[i] = latents.data[i] / s }
        return try decode(z)
    }
}
