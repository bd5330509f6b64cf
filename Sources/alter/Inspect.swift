import ArgumentParser
import ExpertBundle
import Foundation
import StableDiffusion

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a checkpoint: layout, model family, tensors, parameters per component, dtypes, metadata.",
        discussion: """
            Reads headers only, so it answers at once even for multi-GB files. The UNet is matched strictly \
            against the architecture (from config.json, or inferred from the tensors); problems are listed \
            and make the exit status 1.
            """)

    @Argument(help: "A diffusers UNet or pipeline folder, a .safetensors checkpoint, or a bundle (NAME.alter).")
    var path: String

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Flag(help: "List every tensor with its dtype and shape.")
    var tensors = false

    @Option(help: "The model's prediction type, if known (epsilon or v_prediction); shown instead of the guess.")
    var predictionType: NoiseSchedule.PredictionType?

    @Flag(help: "Print ALTER's prunable units with their MACs (cost model) instead of the checkpoint summary.")
    var units = false

    @Option(help: "Latent size (height = width) for --units.")
    var latent = 64

    @Option(help: "Context length (text tokens) for --units.")
    var context = 77

    @Option(help: "For a bundle: show this expert's kept and skipped units and tensors.")
    var expert: Int?

    @Option(help: "For a bundle: a sampler schedule (pndm:20, ddim:50, euler:30): the expert and MACs of each UNet call, and the total against the dense model.")
    var schedule: SchedulerKind?

    @OptionGroup var model: ModelOptions

    func validate() throws {
        try ArgumentBounds.latent(latent, flag: "--latent")
        try ArgumentBounds.context(context, flag: "--context")
    }

    func run() throws {
        let input = try ModelInput(path: path)
        if case .bundle(let b) = input { return try BundleInspection(bundle: b, expert: expert, schedule: schedule, json: json).run() }
        if expert != nil || schedule != nil { throw ValidationError("--expert and --schedule apply to bundles (NAME.alter); \(path) is not one") }
        if units { return try runUnits() }
        var info: CheckpointInspection
        do {
            info = try CheckpointInspection(path: path, options: model.loadOptions, listTensors: tensors)
        } catch {
            throw CommandFailure(error.description)
        }
        if let p = predictionType { info.predictionType = "\(p.rawValue) (given)" }
        if json {
            try writeJSON(info)
        } else {
            printText(info)
        }
        if info.unetError != nil { throw ExitCode(1) }
    }

    private func runUnits() throws {
        let config: UNetConfig
        do { config = try UNetCheckpoint(path: path, options: model.loadOptions).config } catch { throw CommandFailure(error.description) }
        let cost: CostModel
        do { cost = try CostModel(config: config, latentHeight: latent, latentWidth: latent, contextLength: context) } catch {
            throw ValidationError(ArgumentBounds.message(error, flags: ["latent_height": "--latent", "latent_width": "--latent", "context_length": "--context"]))
        }
        if json { return try writeJSON(CostModel.Report(cost)) }
        func g(_ x: Int) -> String { String(format: "%.2f", Double(x) / 1e9) }
        func pct(_ x: Int, _ t: Int) -> String { String(format: "%.1f%%", 100 * Double(x) / Double(t)) }
        print("\(cost.units.count) units at a \(latent)x\(latent) latent, \(context) context tokens (GMACs per sample)")
        print("  #  unit".padding(toLength: 60, withPad: " ", startingAt: 0) + "kind".padding(toLength: 12, withPad: " ", startingAt: 0)
              + "conv+linear".leftPad(12) + "+attention".leftPad(12))
        for (i, u) in cost.units.enumerated() {
            let label = String(format: "%3d  ", i) + u.name
            print(label.padding(toLength: 60, withPad: " ", startingAt: 0) + u.kind.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + g(u.cost.convLinear).leftPad(12) + g(u.cost.total).leftPad(12))
        }
        let t = cost.total, ut = cost.unitTotal
        print("units".padding(toLength: 72, withPad: " ", startingAt: 0) + g(ut.convLinear).leftPad(12) + g(ut.total).leftPad(12)
              + "  (\(pct(ut.convLinear, t.convLinear)) / \(pct(ut.total, t.total)) of the UNet)")
        print("whole UNet".padding(toLength: 72, withPad: " ", startingAt: 0) + g(t.convLinear).leftPad(12) + g(t.total).leftPad(12))
    }

    private func printText(_ i: CheckpointInspection) {
        var out: [String] = []
        out.append("\(i.path)")
        out.append("  kind:        \(i.kind) (\(i.layout) layout)")
        out.append("  family:      \(i.family)")
        out.append("  prediction:  \(flagHints(i.predictionType))")
        let dtypes = i.dtypes.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", ")
        out.append("  tensors:     \(i.tensorCount) in \(i.files.count) file\(i.files.count == 1 ? "" : "s"), \(formatBytes(i.bytes)); dtypes \(dtypes)")
        if i.hasEMA { out.append("  EMA:         model_ema.* copies present (--ema loads them)") }
        if let p = i.pipelineComponents { out.append("  pipeline:    \(p.joined(separator: ", "))") }
        for f in i.files {
            if let m = f.metadata, !m.isEmpty {
                let text = m.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
                out.append("  metadata:    \(URL(fileURLWithPath: f.path).lastPathComponent): \(text)")
            }
        }
        out.append("  components:")
        for c in i.components {
            out.append("    " + c.component.padding(toLength: 14, withPad: " ", startingAt: 0)
                + "\(grouped(c.tensors)) tensors".leftPad(14) + "\(grouped(c.parameters)) params".leftPad(22)
                + formatBytes(c.bytes).leftPad(11))
        }
        if let u = i.unet {
            out.append("  UNet:        config \(u.configOrigin)")
            out.append("    block_out_channels \(u.blockOutChannels), layers_per_block \(u.layersPerBlock), cross_attention_dim \(u.crossAttentionDim)")
            out.append("    heads \(u.attentionHeads), \(u.useLinearProjection ? "linear" : "1x1-conv") projections, upcast_attention \(u.upcastAttention), sample_size \(u.sampleSize)")
            out.append("    \(grouped(u.parameters)) parameters; load: \(u.mapped) mapped, \(u.missing) missing, \(u.unused) unused, \(u.misshapen) misshapen")
            for a in u.assumptions { out.append("    assumed: \(flagHints(a))") }
        }
        if let e = i.unetError {
            out.append("  UNet:        cannot load")
            out.append(contentsOf: flagHints(e).split(separator: "\n").map { "    " + $0 })
        }
        if let ts = i.tensors {
            out.append("  tensor list:")
            for t in ts { out.append("    \(t.name)  \(t.dtype)  \(t.shape)") }
        }
        print(out.joined(separator: "\n"))
    }
}

extension String {
    func leftPad(_ n: Int) -> String {
        count >= n ? " " + self : String(repeating: " ", count: n - count) + self
    }
}
