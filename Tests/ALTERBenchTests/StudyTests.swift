import ALTER
import ALTERBench
import ExampleSupport
import Experts
import ExpertBundle
import Foundation
import StableDiffusion
import TensorCore
import XCTest

/// The studies behind `alter bench`, on the example model.
final class StudyTests: XCTestCase {
    func testInterleavedOrderSpreadsCallsEvenly() {
        XCTAssertEqual(SamplingBenchmark.interleavedOrder([2, 2]), [0, 1, 0, 1])
        // Run 0 at 1/6, 3/6, 5/6; run 1 at 1/4, 3/4.
        XCTAssertEqual(SamplingBenchmark.interleavedOrder([3, 2]), [0, 1, 0, 1, 0])
        let order = SamplingBenchmark.interleavedOrder([50, 21])
        XCTAssertEqual(order.filter { $0 == 0 }.count, 50)
        XCTAssertEqual(order.filter { $0 == 1 }.count, 21)
        // Every prefix holds each run's share of calls, within one call.
        for n in 1...order.count {
            let dense = order.prefix(n).filter { $0 == 0 }.count
            XCTAssertEqual(Double(dense) / 50, Double(n - dense) / 21, accuracy: 1.0 / 21 + 1.0 / 50 + 1e-9, "prefix \(n)")
        }
    }

    func testStatistics() {
        XCTAssertEqual(Measurement.median([3, 1, 2]), 2)
        XCTAssertEqual(Measurement.median([4, 1, 3, 2]), 2.5)
        XCTAssertEqual(Measurement.median([]), 0)
        let (mean, sd) = Measurement.meanAndDeviation([2, 4, 4, 4, 5, 5, 7, 9])
        XCTAssertEqual(mean, 5)
        XCTAssertEqual(sd, (32.0 / 7).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(Measurement.meanAndDeviation([3]).sd, 0)
    }

    /// Two routings, one seed, a few steps: one run each, held-out KD measured on held-out samples
    /// only, the same numbers when repeated, and static routing with one expert.
    func testRoutingStudyOnTheExample() throws {
        var s = RoutingStudy.Settings()
        s.routings = [.learned, .static]
        s.seeds = [1]
        s.steps = 6
        s.hypernetSteps = 3
        s.evalSamples = 4
        s.holdout = 8
        let data = try TrainingData(contentsOf: URL(fileURLWithPath: Example.data))
        let ckpt = try Example.checkpoint()
        let study = try RoutingStudy(settings: s, makeModel: { try UNet(checkpoint: ckpt) }, modelLabel: "example", data: data, dataLabel: "example")
        XCTAssertEqual(study.training.count + study.heldOut.count, data.count)
        XCTAssertEqual(study.heldOut.count, 8)
        XCTAssertEqual(study.config(.learned, seed: 1).settings.warmupSteps, CompressionConfig.defaultWarmupSteps(6))
        var steps = 0
        let report = try study.run { if case .step = $0 { steps += 1 } }
        XCTAssertEqual(steps, 12)
        XCTAssertEqual(report.runs.map(\.routing), ["learned", "static"])
        XCTAssertEqual(report.runs[1].expertShares, [1])
        for r in report.runs {
            XCTAssertTrue(r.keptMACFraction > 0 && r.keptMACFraction <= 1, "\(r)")
            XCTAssertTrue(r.heldOutOutputKD.isFinite && r.heldOutOutputKD >= 0, "\(r)")
        }
        XCTAssertEqual(report.summary.map(\.routing), ["learned", "static"])
        XCTAssertEqual(report.summary[0].meanHeldOutOutputKD, report.runs[0].heldOutOutputKD)
        let again = try study.run()
        XCTAssertEqual(again.runs.map(\.heldOutOutputKD), report.runs.map(\.heldOutOutputKD))
        XCTAssertEqual(again.runs.map(\.keptMACFraction), report.runs.map(\.keptMACFraction))
        XCTAssertThrowsError(try RoutingStudy(settings: { var x = s; x.holdout = data.count; return x }(), makeModel: { try UNet(checkpoint: ckpt) },
                                              modelLabel: "example", data: data, dataLabel: "example"))
    }

    /// Dense against routed sampling of an exported example bundle: call counts, MACs and their
    /// ratios are those of the schedules and the bundle's experts.
    func testSamplingComparisonOnTheExample() throws {
        let dir = try temporaryDirectory(self)
        let (bundle, dense) = try SamplingBenchmark.trainExampleBundle(in: dir, root: Example.root.path, steps: 6, experts: 3, keep: 0.7)
        let routed = try RoutedSampler(bundle: bundle)
        let denseSampler = RoutedSampler(unet: dense, schedulerConfig: routed.schedulerConfig)
        var settings = SamplingBenchmark.Settings(denseSchedule: try SchedulerKind(.ddim, steps: 4), routedSchedule: try SchedulerKind(.pndm, steps: 3))
        settings.repeats = 2
        let m = bundle.manifest.macs
        let c = try SamplingBenchmark.compare(name: "example", model: "test", dense: denseSampler, routed: routed, height: m.latentHeight,
                                              width: m.latentWidth, tokens: m.contextLength, experts: bundle.experts.count,
                                              keptMACFraction: m.keptFraction, settings: settings)
        XCTAssertEqual(c.dense.calls, 4)
        XCTAssertEqual(c.routed.calls, 4)
        XCTAssertEqual(c.dense.timedCalls, 8)
        XCTAssertEqual(c.routed.runTotals.count, 2)
        XCTAssertEqual(c.dense.macs, m.dense * 2 * 4)
        let calls = try bundle.schedule(settings.routedSchedule)
        XCTAssertEqual(c.routed.macs, calls.reduce(0) { $0 + 2 * $1.macs })
        XCTAssertEqual(c.routed.experts, calls.map(\.expert))
        XCTAssertEqual(c.runKeptMACFraction * c.speedupPredictedByMACs, 1, accuracy: 1e-12)
        for row in c.perExpert {
            XCTAssertEqual(row.keptMACFraction, Double(m.experts[row.expert]) / Double(m.dense), accuracy: 1e-12)
            XCTAssertGreaterThan(row.timeShare, 0)
        }

        let pairs = try SamplingBenchmark.pairs(unet: dense, decisions: bundle.decisions, latent: m.latentHeight,
                                            tokens: m.contextLength, rounds: 1)
        XCTAssertEqual(pairs.rows.count, bundle.experts.count)
        for row in pairs.rows {
            XCTAssertEqual(row.keptMACFraction, Double(m.experts[row.expert]) / Double(m.dense), accuracy: 1e-9)
            XCTAssertEqual(row.timeRatios.count, 1)
        }
    }

    func testForwardBenchmarkSkipSetAndRows() throws {
        let unet = try UNet(checkpoint: Example.checkpoint())
        let cost = try CostModel(config: unet.config, latentHeight: 16, latentWidth: 16, contextLength: 5)
        let skip = ForwardBenchmark.skipSet(cost, fraction: 0.5)
        let skipped = cost.unitTotal.total - cost.cost(skipping: skip).total + (cost.total.total - cost.unitTotal.total)
        XCTAssertLessThanOrEqual(Double(cost.total.total - cost.cost(skipping: skip).total), 0.5 * Double(cost.unitTotal.total))
        XCTAssertGreaterThan(skipped, 0)
        let report = try ForwardBenchmark.run(unet: unet, batches: [1], latent: 16, context: 5, runs: 1, skipSets: [[], skip])
        XCTAssertEqual(report.rows.count, 2)
        XCTAssertEqual(report.rows[0].macsPerSample, cost.total.total)
        XCTAssertEqual(report.rows[1].macsPerSample, cost.cost(skipping: skip).total)
        XCTAssertEqual(report.rows[1].skippedUnits, skip.sorted())
    }
}
