import StableDiffusion
import TensorCore

/// The prompts as the UNet reads them (diffusers' `encode_prompt`): the text encoder's
/// `last_hidden_state` of each prompt and, with classifier-free guidance, of each negative prompt.
public struct PromptEmbeddings: Sendable {
    /// [B, S, D]: one row per prompt (diffusers' `prompt_embeds`).
    public var context: Tensor
    /// [B, S, D]: one row per negative prompt (diffusers' `negative_prompt_embeds`); nil without
    /// guidance (scale at most 1), when no unconditional half is computed.
    public var uncond: Tensor?
    /// The tokens of each prompt (S ids each, padded and truncated).
    public var prompts: [CLIPTokenization]
    /// The tokens of each negative prompt; empty without guidance.
    public var negativePrompts: [CLIPTokenization]

    public init(context: Tensor, uncond: Tensor?, prompts: [CLIPTokenization], negativePrompts: [CLIPTokenization]) {
        self.context = context
        self.uncond = uncond
        self.prompts = prompts
        self.negativePrompts = negativePrompts
    }
}
