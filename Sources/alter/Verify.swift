import ArgumentParser
import ExpertBundle
import Foundation
import StableDiffusion

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a bundle: schema, files, checksums, routing, tensors, MACs, scheduler, components; with --deep, numeric parity and fidelity.",
        discussion: """
            Without --deep: both manifest kinds parse (strict JSON: no duplicate key) with a known format version; \
            the bundle stores exactly the files its manifests list, as regular files (no symbolic link); every \
            weight file and expert manifest matches its size and SHA-256; every timestep 0..999 is routed to an existing expert; every tensor an \
            expert needs is present with the right dtype, shape and SHA-256; no unlisted tensor is stored; MACs \
            equal the cost model's (with --keep K: and the routed mean kept MAC fraction is within 0.01 of K, \
            as `alter compress --keep K` promises at the run's latent size); the scheduler config is valid for sampling; carried pipeline components (tokenizer, \
            text encoder, VAE) match their SHA-256 per file and tensor, load strictly and fit the UNet. With --deep: each expert's output on a seeded probe input equals the \
            reference model's forward with the same units skipped, and its fidelity to the reference's dense \
            output is reported as PSNR, and the components encode a prompt and decode a latent to finite values. Exit status 0 only when every check holds; each failure is named.
            """)

    @Argument(help: "The bundle directory.")
    var bundle: String

    @Option(help: "The reference model for --deep (the run's final/unet, or any checkpoint of the same architecture).")
    var reference: String?

    @Flag(help: "Also compare each expert's output with the reference model's masked forward.")
    var deep = false

    @Option(help: "Probe latent size for --deep (default: the bundle's MAC latent size).")
    var probeLatent: Int?

    @Option(parsing: .unconditional, help: "Also require the routed mean kept MAC fraction within 0.01 of this --keep (the run's target).")
    var keep: Double?

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var modelOptions: ModelOptions

    func validate() throws {
        try ArgumentBounds.latent(probeLatent, flag: "--probe-latent")
        if let keep, !(keep > 0 && keep <= 1) { throw ValidationError("--keep must be in (0, 1], got \(keep)") }
    }

    func run() throws {
        // Checked here, after unknown options are reported: a misspelt --reference is not "missing".
        if deep && reference == nil { throw ValidationError("--deep needs --reference MODEL (for example RUN/final/unet)") }
        if !deep && reference != nil { throw ValidationError("--reference is used by --deep") }
        if probeLatent != nil && !deep { throw ValidationError("--probe-latent is used by --deep") }
        let b: ExpertBundle
        do { b = try ExpertBundle(path: bundle) } catch {
            let report = VerificationReport(schemaError: error, deep: deep)
            if json { try writeJSON(report) } else { printChecks(report) }
            throw ExitCode(1)
        }
        if let probeLatent {
            do { try LatentSize.checkSide(probeLatent, field: "--probe-latent", multiple: LatentSize.multiple(levels: b.config.levels)) } catch {
                throw ValidationError(ArgumentBounds.message(error, flags: [:]) + " (this bundle's UNet has \(b.config.levels) levels)")
            }
        }
        var referenceUNet: UNet?
        if deep, let reference {
            do { referenceUNet = try UNet(checkpoint: UNetCheckpoint(path: reference, options: modelOptions.loadOptions)) } catch {
                throw CommandFailure("\(error)")
            }
        }
        let report = b.verify(reference: referenceUNet, probeLatent: probeLatent, keep: keep)
        if json {
            try writeJSON(report)
        } else {
            printChecks(report)
            for f in report.fidelity {
                print(String(format: "     expert %d (t=%d): parity %.2e (tolerance %.0e), PSNR to dense %.2f dB", f.expert, f.timestep,
                             f.parityError, f.parityTolerance, f.psnrToDense))
            }
        }
        if !report.passed { throw ExitCode(1) }
    }

    /// One line per check: `ok`, `FAIL`, `----` (not run) or `skip`, its name and detail.
    func printChecks(_ report: VerificationReport) {
        for c in report.checks {
            let mark = switch c.status { case .passed: "ok  "; case .failed: "FAIL"; case .notRun: "----"; case .skipped: "skip" }
            print("\(mark) \(c.name): \(c.detail)")
        }
    }
}
