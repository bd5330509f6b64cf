import Experts
import Foundation
import NN
import StableDiffusion
import TensorCore

/// One ALTER training run (docs/method.md, section 6): each iteration takes a UNet step with the current
/// hard mask table, then, during the hypernetwork phase, a hypernetwork step with the UNet frozen,
/// and refreshes the table; after the phase the noise-free decisions are frozen.
public final class ALTERTrainer {
    public let config: CompressionConfig
    public let student: UNet
    public let teacher: UNet
    public let data: TrainingData
    public let hypernet: Hypernetwork
    public let budget: UnitBudget
    /// The training timesteps of every ALTER run: its noise schedule's and its routing table's length.
    public static let trainTimesteps = 1000
    public let schedule = NoiseSchedule.scaledLinear(steps: ALTERTrainer.trainTimesteps)
    public let unetOptimizer: AdamW
    public let hypernetOptimizer: AdamW
    /// Iterations completed.
    public private(set) var step = 0
    /// The hard decisions the next UNet step uses.
    public private(set) var decisions: ExpertDecisions
    var dataRNG: SeededGenerator
    var noiseRNG: SeededGenerator
    /// MAC fraction the units must keep on average (the ratio loss's p').
    public let unitTarget: Double
    /// The untrained hypernetwork's noise-free decisions (what the hypernetwork phase starts from).
    public let initialDecisions: ExpertDecisions
    /// The projection of the learned decisions onto `--keep` when the masks froze; nil before.
    public private(set) var budgetProjection: BudgetProjection?
    /// Called after each backward pass and before the optimizer step it feeds, with the phase and
    /// the parameters about to be updated: the place where a data-parallel run all-reduces the
    /// gradients. Nil: nothing happens there.
    public var gradientHook: ((GradientPhase, [Parameter]) -> Void)?
    /// Records the run's random draws and per-step values (formats/record-draws.md); nil: nothing is recorded.
    public let recorder: DrawRecorder?

    /// The optimizer step a gradient hook precedes.
    public enum GradientPhase: Sendable {
        case unet, hypernet
    }

    /// Prepares a run. `student` and `teacher` must be separate instances of the same model.
    /// Throws, before any training, when the data or the settings do not fit the model.
    /// With a `recorder`, the initialisation and the first `recorder.steps` iterations are recorded.
    public init(config: CompressionConfig, student: UNet, teacher: UNet, data: TrainingData,
                recorder: DrawRecorder? = nil) throws(CompressionError) {
        try config.validate()
        precondition(student !== teacher, "ALTERTrainer: the student and the teacher must not share weights")
        do { try data.validate(for: student.config) } catch let e { throw .data(e.description) }
        // Options that need the empty prompt's context.
        for (field, value, use) in [("caption_dropout", config.settings.captionDropout, "replace captions with"),
                                    ("guidance_kd_weight", config.settings.guidanceKDWeight, "run the unconditional half with")]
        where value > 0 && data.uncond == nil {
            throw .invalid(field: field, "is \(value), but \(data.path) has no `uncond` tensor (the empty prompt's context) to \(use); encode the data with `alter encode-data`, which writes it")
        }
        guard config.batch <= data.count else {
            throw .invalid(field: "batch", "is \(config.batch), more than the \(data.count) samples of \(data.path)")
        }
        self.config = config
        self.student = student
        self.teacher = teacher
        self.data = data
        self.recorder = recorder
        let (h, w, s) = (data.latentHeight, data.latentWidth, data.contextLength)
        do { budget = UnitBudget(cost: try CostModel(config: student.config, latentHeight: h, latentWidth: w, contextLength: s)) } catch {
            throw .data("\(data.path): \(error)")
        }
        guard config.settings.keep > budget.fixedShare else {
            throw .keepBelowFixed(keep: config.settings.keep, fixed: budget.fixedShare)
        }
        unitTarget = config.settings.keep - budget.fixedShare
        do {
            hypernet = try Hypernetwork(config: student.config, settings: config.settings, trainSteps: Self.trainTimesteps, seed: config.seed ^ 0x4859_5045_524E_4554)
        } catch { preconditionFailure("Hypernetwork: \(error)") }
        var root = SeededGenerator(seed: config.seed)
        dataRNG = root.split()
        noiseRNG = root.split()
        for p in teacher.parameters { p.trainable = false }
        let st = config.settings
        var unetSettings = AdamW.Settings(learningRate: st.learningRateUNet)
        var hyperSettings = AdamW.Settings(learningRate: st.learningRateHypernet)
        for s in [\AdamW.Settings.beta1: st.beta1, \AdamW.Settings.beta2: st.beta2, \AdamW.Settings.eps: st.adamEpsilon,
                  \AdamW.Settings.weightDecay: st.weightDecay, \AdamW.Settings.clipNorm: st.gradientClip] {
            unetSettings[keyPath: s.key] = s.value
            hyperSettings[keyPath: s.key] = s.value
        }
        unetSettings.warmupSteps = st.warmupSteps
        hyperSettings.warmupSteps = st.warmupSteps
        unetOptimizer = AdamW(parameters: student.parameters, settings: unetSettings)
        hypernetOptimizer = AdamW(parameters: hypernet.parameters, settings: hyperSettings)
        initialDecisions = hypernet.finalDecisions(settings: st)
        if let recorder { Self.recordInitialisation(recorder, hypernet: hypernet, budget: budget, initial: initialDecisions) }
        if config.hypernetSteps > 0 {
            let tape = Tape(recording: false)
            let draw = hypernet.sample(on: tape, settings: st, rng: &noiseRNG)
            decisions = draw.hard
            recorder?.add("init.draw", draw: draw)
        } else {
            let p = BudgetProjection.project(initialDecisions, logits: hypernet.keepLogits(settings: st), initial: initialDecisions,
                                             keep: st.keep, budget: budget)
            decisions = p.decisions
            budgetProjection = p.report
        }
    }

    /// The hypernetwork's noise-free decisions projected onto `--keep` (docs/method.md,
    /// "Projection onto the budget"), with the report of the projection.
    func projectedDecisions() -> (ExpertDecisions, BudgetProjection) {
        let st = config.settings
        let p = BudgetProjection.project(hypernet.finalDecisions(settings: st), logits: hypernet.keepLogits(settings: st),
                                         initial: initialDecisions, keep: st.keep, budget: budget)
        return (p.decisions, p.report)
    }

    /// Whether the hypernetwork phase is over (masks frozen).
    public var masksFrozen: Bool { step >= config.hypernetSteps }

    /// The decisions to export: the frozen ones after the phase, else the current noise-free ones
    /// projected onto the budget.
    public var finalDecisions: ExpertDecisions { masksFrozen ? decisions : projectedDecisions().0 }

    /// The projection report of `finalDecisions`.
    public var finalBudgetProjection: BudgetProjection { (masksFrozen ? budgetProjection : nil) ?? projectedDecisions().1 }

    /// One training iteration. Throws `CompressionError.nonFinite` when a loss or a gradient norm
    /// is not finite: a non-finite UNet objective or gradient leaves the trainer exactly as it was
    /// after the previous step (random streams included), so a checkpoint then holds the last good
    /// step; a non-finite hypernetwork objective is found after the UNet update of the step, which
    /// stays in memory and is not checkpointed.
    public func trainStep() throws(CompressionError) -> StepMetrics {
        let start = DispatchTime.now().uptimeNanoseconds
        let st = config.settings
        let (dataBefore, noiseBefore) = (dataRNG, noiseRNG)
        func rewind() {
            dataRNG = dataBefore
            noiseRNG = noiseBefore
        }
        let batch = drawBatch()
        let teacherOut = teacher.forward(sample: batch.noisy, timesteps: batch.timesteps, context: batch.context,
                                         options: { var o = UNetForwardOptions(); o.tapFeatures = st.featureKDWeight != 0; return o }())
        let usedDecisions = decisions
        var hypernetDraw: RelaxedDecisions?, nextDraw: RelaxedDecisions?

        // (1) UNet step with the hard mask table.
        for p in student.parameters { p.trainable = true }
        let unetLR = unetOptimizer.currentLearningRate
        var skip = Set<String>(), gates: [String: [Float]] = [:]
        let t = batch.timesteps.map { Int($0) }
        for (l, name) in decisions.units.enumerated() {
            let m = t.map { decisions.kept[decisions.route[$0]][l] ? Float(1) : 0 }
            if m.allSatisfy({ $0 == 0 }) { skip.insert(name) } else if !m.allSatisfy({ $0 == 1 }) { gates[name] = m }
        }
        let tape = Tape()
        let out = student.forward(on: tape, sample: tape.constant(batch.noisy), timesteps: batch.timesteps,
                                  context: tape.constant(batch.context),
                                  gates: gates.mapValues { tape.constant(Tensor(shape: [$0.count], values: $0)) },
                                  skip: skip, tapFeatures: st.featureKDWeight != 0)
        let u = objective(tape, out, teacher: teacherOut, target: batch.target)
        let unetLoss = u.total.value.data[0]
        guard unetLoss.isFinite else {
            rewind()
            throw .nonFinite(step: step + 1, "the UNet objective is \(unetLoss)", stateIsLastGoodStep: true)
        }
        tape.backward(u.total)
        gradientHook?(.unet, unetOptimizer.parameters)
        guard let unetNorm = unetOptimizer.updateIfFinite() else {
            rewind()
            throw .nonFinite(step: step + 1, "the UNet gradient norm is not finite", stateIsLastGoodStep: true)
        }

        // (2) Hypernetwork step with the UNet frozen, (3) table refresh.
        var metrics = StepMetrics(step: step + 1, loss: Double(u.total.value.data[0]), outputKD: u.outputKD, featureKD: u.featureKD,
                                  denoise: u.denoise, guidanceKD: u.guidanceKD, keptFraction: budget.keptFraction(usedDecisions),
                                  expertShares: usedDecisions.expertShares, learningRateUNet: unetLR,
                                  gradientNormUNet: unetNorm, seconds: 0)
        if step < config.hypernetSteps {
            for p in student.parameters { p.trainable = false }
            let hyperLR = hypernetOptimizer.currentLearningRate
            let tape = Tape()
            let relaxed = hypernet.sample(on: tape, settings: st, rng: &noiseRNG)
            hypernetDraw = relaxed
            let rows = tape.selectRows(relaxed.maskTable, t)
            var hGates: [String: Var] = [:]
            for (l, name) in hypernet.units.enumerated() { hGates[name] = tape.column(rows, l) }
            let out = student.forward(on: tape, sample: tape.constant(batch.noisy), timesteps: batch.timesteps,
                                      context: tape.constant(batch.context), gates: hGates, tapFeatures: st.featureKDWeight != 0)
            let perf = objective(tape, out, teacher: teacherOut, target: batch.target)
            let ratio = ratioLoss(tape, relaxed.maskTable)
            var total = tape.add(perf.total, tape.scale(ratio, Float(st.ratioWeight)))
            var balanceValue: Double?
            if st.balanceWeight != 0, let balance = hypernet.router.loss(on: tape, relaxed.routerDraw) {
                balanceValue = Double(balance.value.data[0])
                total = tape.add(total, tape.scale(balance, Float(st.balanceWeight)))
            }
            var smoothnessValue: Double?
            if st.smoothnessWeight != 0, let smooth = hypernet.router.smoothness(on: tape, relaxed.routerDraw) {
                smoothnessValue = Double(smooth.value.data[0])
                total = tape.add(total, tape.scale(smooth, Float(st.smoothnessWeight)))
            }
            let hyperLoss = total.value.data[0]
            guard hyperLoss.isFinite else {
                for p in student.parameters { p.trainable = true }
                throw .nonFinite(step: step + 1, "the hypernetwork objective is \(hyperLoss)", stateIsLastGoodStep: false)
            }
            tape.backward(total)
            for p in student.parameters { p.zeroGrad() }
            gradientHook?(.hypernet, hypernetOptimizer.parameters)
            guard let hyperNorm = hypernetOptimizer.updateIfFinite() else {
                for p in student.parameters { p.trainable = true }
                throw .nonFinite(step: step + 1, "the hypernetwork gradient norm is not finite", stateIsLastGoodStep: false)
            }
            metrics.gradientNormHypernet = hyperNorm
            metrics.hypernetLoss = Double(total.value.data[0])
            metrics.performance = Double(perf.total.value.data[0])
            metrics.ratio = Double(ratio.value.data[0])
            metrics.balance = balanceValue
            metrics.smoothness = smoothnessValue
            metrics.learningRateHypernet = hyperLR
            for p in student.parameters { p.trainable = true }
            if step + 1 < config.hypernetSteps {
                let draw = hypernet.sample(on: Tape(recording: false), settings: st, rng: &noiseRNG)
                decisions = draw.hard
                nextDraw = draw
            } else {
                (decisions, budgetProjection) = projectedDecisions()
            }
        }
        if let recorder, recorder.records(step: step + 1) {
            let p = DrawRecorder.prefix(step: step + 1)
            recorder.add(p + ".indices", ints: batch.indices)
            recorder.add(p + ".timesteps", ints: t)
            recorder.add(p + ".noise", batch.noise)
            if let dropped = batch.dropped { recorder.add(p + ".dropped", flags: dropped) }
            recorder.add(p + ".decisions", decisions: usedDecisions)
            recorder.add(p, metrics: metrics)
            if let hypernetDraw {
                recorder.add(p + ".hypernet", draw: hypernetDraw)
                recorder.add(p + ".hypernet.decisions", decisions: hypernetDraw.hard)
                if let logits = hypernetDraw.routerDraw.logits {
                    let balanceRoute = hypernet.router is SegmentRouter ? hypernetDraw.routerDraw.route : LearnedRouter.argmaxRows(logits.value)
                    recorder.add(p + ".hypernet.balance_route", ints: balanceRoute)
                }
            }
            if let nextDraw { recorder.add(p + ".next", draw: nextDraw) }
        }
        step += 1
        metrics.seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return metrics
    }

    /// A training batch: noisy latents at uniform timesteps, their context and the denoising target.
    /// With guidance distillation the tensors hold 2B rows: the B drawn samples with their
    /// contexts, then the same samples with the data's `uncond` (`indices` and `noise` stay B).
    struct Batch {
        var noisy: Tensor, context: Tensor, target: Tensor, timesteps: [Float]
        /// The drawn sample indices and noise.
        var indices: [Int], noise: Tensor
        /// Per sample, whether its caption was dropped (its context is `uncond`); nil when the run
        /// has no caption dropout (nothing drawn).
        var dropped: [Bool]?
    }

    /// Draws, from the data stream and in this order: the sample indices, the timesteps, the noise
    /// and, with caption dropout, one uniform per sample (dropped when below the probability).
    func drawBatch() -> Batch {
        let b = config.batch
        let indices = (0..<b).map { _ in dataRNG.index(data.count) }
        let timesteps = (0..<b).map { _ in dataRNG.index(schedule.trainSteps) }
        let (x0, context) = data.batch(indices: indices)
        let noise = Tensor(shape: x0.shape, values: dataRNG.normals(x0.count))
        var dropped: [Bool]?
        let p = config.settings.captionDropout
        if p > 0, let uncond = data.uncond {
            let flags = (0..<b).map { _ in dataRNG.openUnit() < p }
            for (k, drop) in flags.enumerated() where drop { Self.setRow(context, k, to: uncond) }
            dropped = flags
        }
        let noisy = schedule.addNoise(x0, noise: noise, timesteps: timesteps)
        let target = schedule.target(config.predictionType, x0: x0, noise: noise, timesteps: timesteps)
        if config.settings.guidanceKDWeight > 0, let uncond = data.uncond {
            let unconditional = Tensor(uninitialized: context.shape)
            for k in 0..<b { Self.setRow(unconditional, k, to: uncond) }
            return Batch(noisy: Self.stacked(noisy, noisy), context: Self.stacked(context, unconditional), target: Self.stacked(target, target),
                         timesteps: (timesteps + timesteps).map(Float.init), indices: indices, noise: noise, dropped: dropped)
        }
        return Batch(noisy: noisy, context: context, target: target, timesteps: timesteps.map(Float.init), indices: indices, noise: noise,
                     dropped: dropped)
    }

    /// Copies `row` ([S, D]) into sample `k` of `context` ([B, S, D]).
    static func setRow(_ context: Tensor, _ k: Int, to row: Tensor) {
        (context.data + k * row.count).update(from: row.data, count: row.count)
    }

    /// [a; b] along the first axis (a and b of one shape).
    static func stacked(_ a: Tensor, _ b: Tensor) -> Tensor {
        let t = Tensor(uninitialized: [a.shape[0] + b.shape[0]] + a.shape.dropFirst())
        t.data.update(from: a.data, count: a.count)
        (t.data + a.count).update(from: b.data, count: b.count)
        return t
    }

    /// The first and second half of a tensor's rows (first axis).
    static func halves(_ x: Tensor) -> (Tensor, Tensor) {
        let n = x.shape[0] / 2, per = x.count / max(x.shape[0], 1)
        let shape = [n] + x.shape.dropFirst()
        return (Tensor(shape: shape, values: Array(UnsafeBufferPointer(start: x.data, count: n * per))),
                Tensor(shape: shape, values: Array(UnsafeBufferPointer(start: x.data + n * per, count: n * per))))
    }

    /// The first and second half of a value's rows on `tape`.
    static func halves(_ tape: Tape, _ x: Var) -> (Var, Var) {
        let rows = x.shape[0], n = rows / 2
        let flat = tape.reshape(x, [rows, x.value.count / max(rows, 1)])
        let shape = [n] + x.shape.dropFirst()
        return (tape.reshape(tape.selectRows(flat, Array(0..<n)), shape), tape.reshape(tape.selectRows(flat, Array(n..<rows)), shape))
    }

    struct Objective {
        var total: Var
        var outputKD: Double, featureKD: Double, denoise: Double
        var guidanceKD: Double?
    }

    /// Records what the run starts from: the hypernetwork's initial values (Z and every parameter),
    /// the units' MAC shares and the initial noise-free decisions.
    static func recordInitialisation(_ r: DrawRecorder, hypernet: Hypernetwork, budget: UnitBudget, initial: ExpertDecisions) {
        r.metadata["units"] = hypernet.units.joined(separator: ",")
        r.metadata["experts"] = String(hypernet.experts)
        r.metadata["dense_macs"] = String(budget.totalMACs)
        r.add("init.generator_input", hypernet.generatorInput)
        for p in hypernet.parameters { r.add("init.hypernet." + p.name, p.value) }
        r.add("init.unit_share", doubles: budget.share)
        r.add("init.fixed_share", double: budget.fixedShare)
        r.add("init.initial_decisions", decisions: initial)
    }

    /// L_U = w_denoise * L_denoise + w_out * L_outKD + w_feat * L_featKD (+ w_guid * L_guidKD)
    /// (docs/method.md, section 5). With guidance distillation the batch holds the conditional
    /// rows, then the unconditional ones: the first three terms take the conditional half.
    func objective(_ tape: Tape, _ out: (sample: Var, features: [(name: String, value: Var)]), teacher: UNetOutput, target: Tensor) -> Objective {
        let st = config.settings
        if st.guidanceKDWeight > 0 {
            let (sc, su) = Self.halves(tape, out.sample)
            let (tc, tu) = Self.halves(teacher.sample)
            let features = out.features.map { (name: $0.name, value: Self.halves(tape, $0.value).0) }
            let teacherFeatures = teacher.features.map { (name: $0.name, tensor: Self.halves($0.tensor).0) }
            var o = distillation(tape, (sc, features), teacher: UNetOutput(sample: tc, features: teacherFeatures), target: Self.halves(target).0)
            // L_guidKD = MSE(su + g (sc - su), tu + g (tc - tu)) / g^2.
            let g = Float(st.guidanceKDScale)
            let student = tape.add(tape.scale(su, 1 - g), tape.scale(sc, g))
            let guidedTeacher = Tensor(uninitialized: tc.shape)
            for i in 0..<tc.count { guidedTeacher.data[i] = (1 - g) * tu.data[i] + g * tc.data[i] }
            let guided = tape.scale(tape.mseLoss(student, tape.constant(guidedTeacher)), 1 / (g * g))
            o.guidanceKD = Double(guided.value.data[0])
            o.total = tape.add(o.total, tape.scale(guided, Float(st.guidanceKDWeight)))
            return o
        }
        return distillation(tape, out, teacher: teacher, target: target)
    }

    /// The first three terms of L_U on all rows of the batch.
    func distillation(_ tape: Tape, _ out: (sample: Var, features: [(name: String, value: Var)]), teacher: UNetOutput, target: Tensor) -> Objective {
        let st = config.settings
        let outKD = tape.mseLoss(out.sample, tape.constant(teacher.sample))
        var total = tape.scale(outKD, Float(st.outputKDWeight))
        var featValue = 0.0, denoiseValue = 0.0
        if st.featureKDWeight != 0, !out.features.isEmpty {
            var feat = tape.mseLoss(out.features[0].value, tape.constant(teacher.features[0].tensor))
            for i in 1..<out.features.count {
                feat = tape.add(feat, tape.mseLoss(out.features[i].value, tape.constant(teacher.features[i].tensor)))
            }
            feat = tape.scale(feat, 1 / Float(out.features.count))
            featValue = Double(feat.value.data[0])
            total = tape.add(total, tape.scale(feat, Float(st.featureKDWeight)))
        }
        if st.denoiseWeight != 0 {
            let d = tape.mseLoss(out.sample, tape.constant(target))
            denoiseValue = Double(d.value.data[0])
            total = tape.add(total, tape.scale(d, Float(st.denoiseWeight)))
        }
        return Objective(total: total, outputKD: Double(outKD.value.data[0]), featureKD: featValue, denoise: denoiseValue)
    }

    /// L_ratio = |log S - log p'|, S = sum_l cbar_l * mean_t m[t, l] (docs/method.md, section 5; target converted
    /// from the kept fraction of total MACs).
    func ratioLoss(_ tape: Tape, _ table: Var) -> Var {
        let shares = tape.constant(Tensor(shape: [budget.share.count], values: budget.share.map(Float.init)))
        let s = tape.sum(tape.multiply(tape.meanRows(table), shares))
        return tape.abs(tape.addScalar(tape.log(s), -Float(Foundation.log(unitTarget))))
    }
}

/// The trainer's state besides its tensors (saved in a checkpoint's `state.json`).
public struct TrainerState: Codable, Sendable, Equatable {
    public var step: Int
    public var dataRNG: SeededGenerator
    public var noiseRNG: SeededGenerator
    public var decisions: ExpertDecisions
    public var unetOptimizerStep: Int
    public var hypernetOptimizerStep: Int
    /// The projection onto the budget, once the masks are frozen (absent before, and in runs
    /// checkpointed by versions without it).
    public var budgetProjection: BudgetProjection?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case step, dataRNG = "data_rng", noiseRNG = "noise_rng", decisions
        case unetOptimizerStep = "unet_optimizer_step", hypernetOptimizerStep = "hypernet_optimizer_step"
        case budgetProjection = "budget_projection"
    }
}

extension ALTERTrainer {
    public var state: TrainerState {
        TrainerState(step: step, dataRNG: dataRNG, noiseRNG: noiseRNG, decisions: decisions,
                     unetOptimizerStep: unetOptimizer.step, hypernetOptimizerStep: hypernetOptimizer.step,
                     budgetProjection: budgetProjection)
    }

    /// Takes over a saved state (the tensors are restored by `RunDirectory`).
    public func restore(_ s: TrainerState) throws(CompressionError) {
        guard s.decisions.units == hypernet.units, s.decisions.experts == hypernet.experts,
              s.decisions.route.count == hypernet.trainSteps, s.step >= 0, s.step <= config.steps else {
            throw .runDirectory("the saved state does not match this model and configuration")
        }
        step = s.step
        dataRNG = s.dataRNG
        noiseRNG = s.noiseRNG
        decisions = s.decisions
        budgetProjection = s.budgetProjection
        // A run frozen by a version without the projection is projected when it resumes.
        if masksFrozen, budgetProjection == nil { (decisions, budgetProjection) = projectedDecisions() }
    }
}

/// How `ALTERTrainer.run` ended.
public enum CompressionOutcome: Equatable, Sendable {
    /// Every step ran; `final/` is written.
    case finished
    /// Stopped on request after `step` steps; the checkpoint holds them.
    case interrupted(step: Int)
}

extension ALTERTrainer {
    /// Trains until `config.steps`, appending metrics to `dir`, writing a checkpoint every
    /// `config.checkpointEvery` steps, every `config.checkpointMinutes` minutes, at the end, and
    /// when `shouldStop` turns true (checked after each step); at the end writes `final/`. A
    /// non-finite loss stops the run with `CompressionError.nonFinite`, after a checkpoint of the
    /// last good step when the trainer still holds it.
    public func run(in dir: RunDirectory, progress: (StepMetrics) -> Void = { _ in },
                    shouldStop: () -> Bool = { false }) throws(CompressionError) -> CompressionOutcome {
        var lastCheckpoint = DispatchTime.now().uptimeNanoseconds
        let interval = config.checkpointMinutes * 60e9
        while step < config.steps {
            let m: StepMetrics
            do { m = try trainStep() } catch {
                if case .nonFinite(_, _, true) = error, step > 0 { try dir.writeCheckpoint(self) }
                throw error
            }
            try dir.append(m)
            progress(m)
            if step < config.steps {
                if shouldStop() {
                    try dir.writeCheckpoint(self)
                    return .interrupted(step: step)
                }
                let now = DispatchTime.now().uptimeNanoseconds
                if (config.checkpointEvery > 0 && step % config.checkpointEvery == 0)
                    || (interval > 0 && Double(now - lastCheckpoint) >= interval) {
                    try dir.writeCheckpoint(self)
                    lastCheckpoint = DispatchTime.now().uptimeNanoseconds
                }
            }
        }
        try dir.writeCheckpoint(self)
        try dir.writeFinal(self)
        return .finished
    }
}
