import ArgumentParser
import Foundation
import StableDiffusion

struct Forward: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one UNet forward pass on inputs from a safetensors file (to check alter against PyTorch).",
        discussion: """
            --inputs holds `sample` [B,4,H,W], `timestep` [B] (or one value for the whole batch) and \
            `context` [B,S,D]. --gates holds one [B] tensor per unit name with values in [0, 1]: the unit's \
            output is (1 - m) * input + m * unit(input). --skip lists units that are not computed at all. \
            Units are ALTER's prunable blocks (`alter inspect MODEL --units`). The output file holds `out` \
            and, with --features, `feature.<block>` for every down block, the mid block and every up block.
            """)

    @Argument(help: "The checkpoint (folder or .safetensors).")
    var model: String

    @Option(help: "Input tensors: sample, timestep, context.")
    var inputs: String

    @Option(help: "Per-unit gates, one [B] tensor per unit name.")
    var gates: String?

    @Option(help: "Comma-separated units to skip (not computed).")
    var skip: String?

    @Flag(help: "Also write the tapped block features.")
    var features = false

    @Option(name: .shortAndLong, help: "Output .safetensors file.")
    var output: String

    @OptionGroup var modelOptions: ModelOptions

    func run() throws {
        let start = Date()
        let unet: UNet
        do {
            unet = try UNet(checkpoint: UNetCheckpoint(path: model, options: modelOptions.loadOptions))
        } catch { throw CommandFailure("\(error)") }
        var options = UNetForwardOptions()
        options.tapFeatures = features
        do {
            let x = try ForwardFiles.readInputs(inputs, for: unet)
            if let gates { options.gates = try ForwardFiles.readGates(gates, for: unet, batch: x.sample.shape[0]) }
            if let skip {
                options.skip = Set(skip.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
            }
            try unet.check(options, batch: x.sample.shape[0])
            let loaded = Date()
            let out = unet.forward(sample: x.sample, timesteps: x.timesteps, context: x.context, options: options)
            let computed = Date()
            Interrupts.installCleanupHandler()
            try ForwardFiles.writeOutputs(out, to: output)
            printError(String(format: "load %.2f s, forward %.2f s; wrote %@", loaded.timeIntervalSince(start), computed.timeIntervalSince(loaded), output))
        } catch { throw CommandFailure("\(error)") }
    }
}
