import Experts
import StableDiffusion

extension FinalDecisions {
    /// Checks what `final/decisions.json` holds before anything uses it: the decisions
    /// (`ExpertDecisions.validate`, with a route of `ALTERTrainer.trainTimesteps` entries), and
    /// the latent size and context length the MACs are counted at within `Bounds` (whether a side
    /// is a multiple of 2^(levels-1) is checked against the UNet, by `LatentSize`). Errors name the
    /// field (`decisions.route`, `decisions.kept[1]`, `latent_height`, ...).
    public func validate() throws(ExpertsError) {
        do { try decisions.validate(trainTimesteps: ALTERTrainer.trainTimesteps) } catch {
            guard case .invalid(let field, let why) = error else { throw error }
            throw .invalid(field: "decisions." + field, why)
        }
        do {
            try Bounds.check(latentHeight, in: Bounds.latentSide, field: "latent_height")
            try Bounds.check(latentWidth, in: Bounds.latentSide, field: "latent_width")
            try Bounds.check(contextLength, in: Bounds.contextLength, field: "context_length")
        } catch { throw .invalid(field: error.field, error.message) }
    }
}
