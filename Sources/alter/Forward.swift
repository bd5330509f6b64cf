import ArgumentParser
import ExpertBundle
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

    @Argument(help: "The checkpoint (folder or .safetensors), or a bundle (NAME.alter) with --expert.")
    var model: String

    @Option(help: "For a bundle: the expert to run (its skipped units are not computed, their tensors not read).")
    var expert: Int?

    @Option(help: "Input tensors: sample, timestep, context.")
    var inputs: String

    @Option(help: "Per-unit gates, one [B] tensor per unit name.")
    var gates: String?

    @Option(help: "Comma-separated units to skip (not computed).")
    var skip: CommaList<String>?

    @Flag(help: "Also write the tapped block features.")
    var features = false

    @Option(name: .shortAndLong, help: "Output .safetensors file.")
    var output: String

    @Flag(help: "Replace an existing output file (never one of the inputs).")
    var force = false

    @OptionGroup var modelOptions: ModelOptions

    func run() throws {
        let start = Date()
        let lock = try prepareOutputFile(output, force: force, inputs: [model, inputs, gates, modelOptions.config])
        defer { lock.release() }
        let unet: UNet
        var options = UNetForwardOptions()
        do {
            switch try ModelInput(path: model) {
            case .bundle(let bundle):
                guard let expert else {
                    throw ValidationError("\(model) is a bundle: choose an expert with --expert (0..<\(bundle.experts.count))")
                }
                guard bundle.experts.indices.contains(expert) else {
                    throw ValidationError("--expert \(expert) does not exist: \(model) has experts 0..<\(bundle.experts.count)")
                }
                unet = try bundle.unet(expert: expert)
                options.skip = bundle.skippedUnits(expert: expert)
            case .checkpoint(let path):
                guard expert == nil else { throw ValidationError("--expert applies to bundles; \(model) is not one") }
                unet = try UNet(checkpoint: UNetCheckpoint(path: path, options: modelOptions.loadOptions))
            }
        } catch let e as ValidationError { throw e } catch let e as CommandFailure { throw e } catch { throw CommandFailure("\(error)") }
        options.tapFeatures = features
        do {
            let x = try ForwardFiles.readInputs(inputs, for: unet)
            if let gates { options.gates = try ForwardFiles.readGates(gates, for: unet, batch: x.sample.shape[0]) }
            if let skip { options.skip.formUnion(skip.values) }
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
