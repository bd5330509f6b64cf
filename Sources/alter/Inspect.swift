import ArgumentParser
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

    @Argument(help: "A diffusers UNet or pipeline folder, or a .safetensors checkpoint.")
    var path: String

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Flag(help: "List every tensor with its dtype and shape.")
    var tensors = false

    @Option(help: "The model's prediction type, if known (epsilon or v_prediction); shown instead of the guess.")
    var predictionType: PredictionType?

    @OptionGroup var model: ModelOptions

    func run() throws {
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

    private func printText(_ i: CheckpointInspection) {
        var out: [String] = []
        out.append("\(i.path)")
        out.append("  kind:        \(i.kind) (\(i.layout) layout)")
        out.append("  family:      \(i.family)")
        out.append("  prediction:  \(i.predictionType)")
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
            for a in u.assumptions { out.append("    assumed: \(a)") }
        }
        if let e = i.unetError {
            out.append("  UNet:        cannot load")
            out.append(contentsOf: e.split(separator: "\n").map { "    " + $0 })
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
