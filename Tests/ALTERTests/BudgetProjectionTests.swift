import ALTER
import ALTERBench
import Experts
import ExampleSupport
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// `--keep` is a promise: the frozen (exported) decisions meet it within `UnitBudget.tolerance`
/// whatever the model, the step budget and the learning rates (docs/method.md, "Projection onto
/// the budget").
final class BudgetProjectionTests: XCTestCase {
    static let targets = [0.3, 0.5, 0.65, 0.9]
    static var sd1Config: String { Example.root.appendingPathComponent("Tests/Fixtures/tiny-sd1/config.json").path }
    static var sd1Weights: String { Example.root.appendingPathComponent("Tests/Fixtures/tiny-sd1/diffusers.safetensors").path }

    /// Unit budgets of three configs: the example at its data's size, tiny-sd1 (SD1-style, 1x1
    /// projections, 2 groups) and SD2.1 at 64x64.
    func unitBudgets() throws -> [(String, UnitBudget, [String])] {
        let example = try Example.checkpoint().config
        let sd1 = try UNetConfig(diffusersJSON: Data(contentsOf: URL(fileURLWithPath: Self.sd1Config)), source: Self.sd1Config)
        return try [("example", example, 16, 5), ("tiny-sd1", sd1, 16, 6), ("sd21", UNetConfig.sd21, 64, 77)].map { name, config, side, s in
            (name, UnitBudget(cost: try CostModel(config: config, latentHeight: side, latentWidth: side, contextLength: s)), config.units().map(\.name))
        }
    }

    /// The projection meets every target on three configs, with learned, interval and static
    /// routing, from decisions that keep everything, nothing, or a random half; it is
    /// deterministic, and leaves decisions alone that already meet the target.
    func testProjectionMeetsEveryTargetOnSeveralConfigs() throws {
        var rng = SeededGenerator(seed: 11)
        for (name, budget, units) in try unitBudgets() {
            for experts in [4, 10, 1] {
                let route = experts == 4 ? (0..<1000).map { _ in rng.index(4) } : (0..<1000).map { $0 * experts / 1000 }
                let logits = (0..<experts).map { _ in (0..<units.count).map { _ in Float(rng.normal()) } }
                let starts: [[[Bool]]] = [logits.map { $0.map { _ in true } }, logits.map { $0.map { _ in false } },
                                          logits.map { $0.map { $0 >= 0 } }]
                for kept in starts {
                    let d = ExpertDecisions(units: units, kept: kept, route: route)
                    for keep in Self.targets where keep > budget.fixedShare + 0.02 {
                        let p = budget.project(d, logits: logits, keep: keep)
                        let what = "\(name), \(experts) experts, keep \(keep), from \(budget.keptFraction(d))"
                        XCTAssertLessThanOrEqual(abs(p.keptFraction - keep), UnitBudget.tolerance, what)
                        XCTAssertEqual(p.keptFraction, budget.keptFraction(p.decisions), what)
                        XCTAssertEqual(p.decisions.route, route)
                        XCTAssertEqual(budget.project(d, logits: logits, keep: keep), p, "deterministic: \(what)")
                        let again = budget.project(p.decisions, logits: logits, keep: keep)
                        XCTAssertEqual(again.decisions, p.decisions, "decisions within the tolerance are left alone: \(what)")
                        XCTAssertEqual(again.changed, 0)
                    }
                }
            }
        }
    }

    /// Pairs are kept in the order of their logits; an exchange fixes a target the greedy pass
    /// cannot reach; units too coarse for the tolerance give the closest fraction found, never a
    /// worse one than the input; experts that serve no timestep are left alone.
    func testRankingExchangeAndCoarseUnits() {
        let units = ["a", "b", "c", "d", "e"]
        let fine = UnitBudget(share: [0.1, 0.1, 0.1, 0.1, 0.1], totalMACs: 100)
        let all = ExpertDecisions(units: units, kept: [[true, true, true, true, true]], route: [0, 0])
        let p = fine.project(all, logits: [[1, 5, 2, 4, 3]], keep: 0.7)
        XCTAssertEqual(p.decisions.kept, [[false, true, false, true, false]])
        XCTAssertEqual(p.keptFraction, 0.7, accuracy: 1e-12)
        XCTAssertEqual(p.inputKeptFraction, 1, accuracy: 1e-12)
        XCTAssertEqual(p.changed, 3)

        // Greedy by logit keeps a (0.25 + 0.3 = 0.55) and cannot add b or c; the exchange finds b + c.
        let three = ["a", "b", "c"]
        let lumpy = UnitBudget(share: [0.3, 0.25, 0.2], totalMACs: 100)
        let x = lumpy.project(ExpertDecisions(units: three, kept: [[true, true, true]], route: [0]), logits: [[3, 2, 1]], keep: 0.7)
        XCTAssertEqual(x.decisions.kept, [[false, true, true]])
        XCTAssertEqual(x.keptFraction, 0.7, accuracy: 1e-12)

        // 0.1 + multiples of 0.3: 0.5 cannot be met; 0.4 is the closest.
        let coarse = UnitBudget(share: [0.3, 0.3, 0.3], totalMACs: 100)
        let c = coarse.project(ExpertDecisions(units: three, kept: [[true, true, true]], route: [0]), logits: [[1, 2, 3]], keep: 0.5)
        XCTAssertEqual(c.keptFraction, 0.4, accuracy: 1e-12)
        XCTAssertEqual(c.decisions.kept, [[false, false, true]])
        let stay = coarse.project(ExpertDecisions(units: three, kept: [[false, true, false]], route: [0]), logits: [[1, 2, 3]], keep: 0.5)
        XCTAssertEqual(stay.decisions.kept, [[false, true, false]], "no closer decisions exist: the input stays")

        // Expert 1 serves nothing: it does not count and keeps what it had.
        let two = ExpertDecisions(units: units, kept: [[true, true, true, true, true], [true, false, true, false, true]], route: [0, 0, 0])
        let z = fine.project(two, logits: [[1, 5, 2, 4, 3], [0, 0, 0, 0, 0]], keep: 0.7)
        XCTAssertEqual(z.decisions.kept, [[false, true, false, true, false], [true, false, true, false, true]])
    }

    /// The shape of the check that found the broken promise: the example's tiny UNet, `--keep 0.6
    /// --steps 120 --hypernet-steps 80` and the default learning rates and batch. The learned
    /// decisions keep everything; the frozen ones meet the target and the report says the
    /// hypernetwork phase hardly moved them. (Run to the freeze at step 80: the 40 UNet-only steps
    /// after it do not touch the decisions.)
    func testDefaultLearningRatesStillMeetTheTarget() throws {
        var c = CompressionConfig(model: Example.model, data: Example.data, steps: 120, hypernetSteps: 80)
        c.configPath = Example.config
        c.settings.keep = 0.6
        let trainer = try Example.trainer(c)
        while trainer.step < c.hypernetSteps { _ = try trainer.trainStep() }
        XCTAssertTrue(trainer.masksFrozen)
        let p = try XCTUnwrap(trainer.budgetProjection)
        XCTAssertEqual(trainer.budget.keptFraction(trainer.finalDecisions), 0.6, accuracy: UnitBudget.tolerance)
        XCTAssertEqual(p.keptFraction, trainer.budget.keptFraction(trainer.finalDecisions))
        XCTAssertGreaterThan(p.learnedDistance, 0.3, "the learned decisions: \(p.learnedKeptFraction)")
        XCTAssertTrue(p.hardlyMoved, "progress \(p.hypernetProgress)")
        XCTAssertTrue(p.withinTolerance)
        XCTAssertGreaterThan(p.changedUnitDecisions, 0)
    }

    /// Very short runs (2 steps with 1 or 0 hypernetwork steps) meet every target on the example,
    /// and on tiny-sd1 with synthetic data and interval or static routing; with 0 hypernetwork
    /// steps the decisions never moved, which the report says.
    func testVeryShortRunsMeetEveryTarget() throws {
        let sd1Data = TrainingData.synthetic(count: 4, height: 16, width: 16, contextLength: 6, contextDim: 12, seed: 5)
        var o = LoadOptions()
        o.configPath = Self.sd1Config
        let sd1 = try UNetCheckpoint(path: Self.sd1Weights, options: o)
        let sd1Fixed = try unitBudgets()[1].1.fixedShare
        for keep in Self.targets {
            for hypernetSteps in [1, 0] {
                var c = Example.config(steps: 2, hypernetSteps: hypernetSteps, keep: keep)
                c.settings.warmupSteps = 1
                let trainer = try Example.trainer(c)
                for _ in 0..<2 { _ = try trainer.trainStep() }
                let p = try XCTUnwrap(trainer.budgetProjection)
                let what = "example, keep \(keep), hypernet steps \(hypernetSteps)"
                XCTAssertEqual(trainer.budget.keptFraction(trainer.finalDecisions), keep, accuracy: UnitBudget.tolerance, what)
                XCTAssertEqual(p.target, keep)
                if hypernetSteps == 0 {
                    XCTAssertEqual(p.hypernetChangedUnitDecisions, 0, what)
                    XCTAssertEqual(p.learnedKeptFraction, p.initialKeptFraction, what)
                    XCTAssertTrue(p.hardlyMoved, what)
                }
            }
            for routing in [ALTERSettings.Routing.intervals, .static] where keep > sd1Fixed + 0.02 {
                var c = CompressionConfig(model: Self.sd1Weights, data: sd1Data.path, steps: 2, hypernetSteps: 1)
                c.configPath = Self.sd1Config
                c.settings.keep = keep
                c.settings.routing = routing
                c.settings.experts = 3
                c.settings.warmupSteps = 1
                let trainer = try ALTERTrainer(config: c, student: try UNet(checkpoint: sd1), teacher: try UNet(checkpoint: sd1), data: sd1Data)
                for _ in 0..<2 { _ = try trainer.trainStep() }
                XCTAssertEqual(trainer.budget.keptFraction(trainer.finalDecisions), keep, accuracy: UnitBudget.tolerance, "tiny-sd1, \(routing), keep \(keep)")
            }
        }
    }

    /// A run stopped after the masks froze resumes to the same projected decisions, report and
    /// weights, bit for bit; `final/decisions.json` holds the report and the routing segments.
    func testResumeAfterTheFreezeKeepsTheProjection() throws {
        let config = Example.config(steps: 8, hypernetSteps: 3, keep: 0.5)
        let root = try temporaryDirectory(self)
        let straight = RunDirectory(path: root + "/a"), resumed = RunDirectory(path: root + "/b")
        try straight.create(config: config)
        XCTAssertEqual(try Example.trainer(config).run(in: straight), .finished)
        try resumed.create(config: config)
        let first = try Example.trainer(config)
        XCTAssertEqual(try first.run(in: resumed, shouldStop: { first.step == 5 }), .interrupted(step: 5))
        let second = try Example.trainer(config)
        XCTAssertEqual(try resumed.restoreCheckpoint(into: second), 5)
        XCTAssertEqual(second.budgetProjection, first.budgetProjection)
        try resumed.truncateMetrics(after: 5)
        XCTAssertEqual(try second.run(in: resumed), .finished)
        for file in ["final/unet/diffusion_pytorch_model.safetensors", "final/decisions.json", "checkpoint/state.json"] {
            let a = try XCTUnwrap(FileManager.default.contents(atPath: straight.path + "/" + file))
            let b = try XCTUnwrap(FileManager.default.contents(atPath: resumed.path + "/" + file))
            XCTAssertTrue(a == b, "\(file) differs")
        }
        let final = try straight.readDecisions()
        let p = try XCTUnwrap(final.budgetProjection)
        XCTAssertEqual(final.keptFraction, p.keptFraction)
        XCTAssertEqual(final.keptFraction, 0.5, accuracy: UnitBudget.tolerance)
        let segments = try XCTUnwrap(final.expertRoutingSegments)
        XCTAssertEqual(segments, RoutingTable.segments(final.decisions.route, experts: 4))
        XCTAssertEqual(final.routingSegments, segments.reduce(0, +))
    }

    /// Segments are the maximal runs of one expert in the routing table.
    func testRoutingSegments() {
        XCTAssertEqual(RoutingTable.segments([0, 0, 1, 1, 0, 2, 2, 2, 0], experts: 4), [3, 1, 1, 0])
        XCTAssertEqual(RoutingTable.segments((0..<1000).map { $0 * 10 / 1000 }, experts: 10), Array(repeating: 1, count: 10))
        XCTAssertEqual(RoutingTable.segments([], experts: 2), [0, 0])
    }
}
