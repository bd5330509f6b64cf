import Experts
import ALTER
import Foundation
import StableDiffusion
import TensorCore
import XCTest

final class HypernetworkTests: XCTestCase {
    func sd21Hypernet(_ routing: ALTERSettings.Routing = .learned) throws -> (Hypernetwork, ALTERSettings) {
        var s = ALTERSettings()
        s.routing = routing
        return (try Hypernetwork(config: .sd21, settings: s, seed: 3), s)
    }

    /// Z's rows, flattened per expert, are orthonormal (ALTER.md 4).
    func testGeneratorInputIsOrthonormalPerExpert() throws {
        let (h, _) = try sd21Hypernet()
        XCTAssertEqual(h.units.count, 34)
        let z = h.generatorInput.reshaped([h.experts, h.units.count * 64])
        let n = z.shape[1]
        var worst = 0.0
        for a in 0..<h.experts {
            for b in 0..<h.experts {
                var dot = 0.0
                for k in 0..<n { dot += Double(z.data[a * n + k]) * Double(z.data[b * n + k]) }
                worst = max(worst, abs(dot - (a == b ? 1 : 0)))
            }
        }
        XCTAssertLessThan(worst, 1e-5)
    }

    /// With the offset b = 4, every unit of every expert starts kept; a learned router covers the
    /// timesteps with valid experts, fixed intervals split them equally.
    func testInitialDecisions() throws {
        let (h, s) = try sd21Hypernet()
        let d = h.finalDecisions(settings: s)
        XCTAssertEqual(d.kept.count, 10)
        XCTAssertTrue(d.kept.allSatisfy { $0.allSatisfy { $0 } })
        XCTAssertEqual(d.route.count, 1000)
        XCTAssertTrue(d.route.allSatisfy { (0..<10).contains($0) })

        let (hi, si) = try sd21Hypernet(.intervals)
        let di = hi.finalDecisions(settings: si)
        XCTAssertEqual(di.expertShares, Array(repeating: 0.1, count: 10))
        XCTAssertEqual(di.route[99], 0)
        XCTAssertEqual(di.route[100], 1)
        XCTAssertEqual(di.route[999], 9)

        let (hs, ss) = try sd21Hypernet(.static)
        XCTAssertEqual(hs.experts, 1)
        XCTAssertEqual(hs.finalDecisions(settings: ss).expertShares, [1])
    }

    /// A sampled table is the product of one-hot routes and hard expert masks, and gradients
    /// reach every hypernetwork parameter through the straight-through estimators.
    func testSampledTableAndStraightThroughGradients() throws {
        let (h, s) = try sd21Hypernet()
        var rng = SeededGenerator(seed: 1)
        let tape = Tape()
        let r = h.sample(on: tape, settings: s, rng: &rng)
        XCTAssertEqual(r.maskTable.shape, [1000, 34])
        let table = r.maskTable.value.scalars
        XCTAssertEqual(table, r.hard.table)
        XCTAssertTrue(table.allSatisfy { $0 == 0 || $0 == 1 })
        // A loss that depends on every mask entry with varying weights.
        let w = Tensor(shape: [1000, 34], values: (0..<34_000).map { Float(($0 * 7919) % 13) - 6 })
        tape.backward(tape.sum(tape.multiply(r.maskTable, tape.constant(w))))
        for p in h.parameters {
            let g = try XCTUnwrap(p.grad, p.name)
            XCTAssertTrue(g.scalars.contains { $0 != 0 }, "\(p.name) got a zero gradient")
        }
    }

    /// Segment routing: memberships are a partition of unity, the untrained router splits the
    /// timesteps into equal contiguous intervals in expert order, gradients reach the widths, and
    /// the routes stay one contiguous interval per expert when the widths change.
    func testSegmentRouter() throws {
        let (h, s) = try sd21Hypernet(.segments)
        let router = try XCTUnwrap(h.router as? SegmentRouter)
        let p = router.memberships(on: Tape(recording: false)).value
        XCTAssertEqual(p.shape, [1000, 10])
        for t in stride(from: 0, to: 1000, by: 37) {
            let row = (0..<10).map { Double(p.data[t * 10 + $0]) }
            XCTAssertEqual(row.reduce(0, +), 1, accuracy: 1e-5, "row \(t)")
            XCTAssertTrue(row.allSatisfy { $0 >= -1e-6 }, "row \(t): \(row)")
        }
        let d = h.finalDecisions(settings: s)
        XCTAssertEqual(d.route, FixedRouter(experts: 10, trainSteps: 1000).hardRoutes())
        XCTAssertEqual(router.boundaries().map { ($0 * 1000).rounded() / 1000 }, (1...10).map { Double($0 * 100) })

        var rng = SeededGenerator(seed: 1)
        let tape = Tape()
        let r = h.sample(on: tape, settings: s, rng: &rng)
        // Pushing mass to high timesteps: expert 9 is cheap there, so the widths must move.
        let w = Tensor(shape: [1000, 34], values: (0..<34_000).map { Float(($0 / 34) - 500) / 500 })
        tape.backward(tape.sum(tape.multiply(r.maskTable, tape.constant(w))))
        let g = try XCTUnwrap(router.widths.grad)
        XCTAssertTrue(g.scalars.contains { $0 != 0 }, "router.widths got a zero gradient")

        // Uneven widths: still one interval per expert, in order, of the boundaries' lengths.
        let widths: [Float] = [0.5, -1, 0, 2, -0.3, 0.1, 0, 1, -2, 0.4]
        for (i, v) in widths.enumerated() { router.widths.value.data[i] = v }
        let route = router.hardRoutes()
        XCTAssertEqual(route, route.sorted(), "routes are non-decreasing in t")
        let c = router.boundaries()
        for e in 0..<10 {
            let served = route.filter { $0 == e }.count
            let length = c[e] - (e == 0 ? 0 : c[e - 1])
            XCTAssertEqual(Double(served), length, accuracy: 1, "expert \(e)")
        }
    }

    /// The same seed draws the same decisions.
    func testSamplingIsReproducible() throws {
        let (h, s) = try sd21Hypernet()
        var a = SeededGenerator(seed: 9), b = SeededGenerator(seed: 9)
        let da = h.sample(on: Tape(recording: false), settings: s, rng: &a).hard
        let db = h.sample(on: Tape(recording: false), settings: s, rng: &b).hard
        XCTAssertEqual(da, db)
        XCTAssertEqual(a, b)
    }

    /// Kept fractions follow the cost model: all kept is 1, all skipped is the fixed share.
    func testUnitBudget() throws {
        let cost = try CostModel(config: .sd21, latentHeight: 64, latentWidth: 64, contextLength: 77)
        let b = UnitBudget(cost: cost)
        XCTAssertEqual(b.fixedShare, 1 - Double(cost.unitTotal.total) / Double(cost.total.total), accuracy: 1e-12)
        XCTAssertEqual(b.fixedShare, 0.23, accuracy: 0.01)  // 77% of SD2.1's MACs are in units (ALTER.md 3)
        let units = cost.units.map(\.name)
        let all = ExpertDecisions(units: units, kept: [Array(repeating: true, count: 34)], route: Array(repeating: 0, count: 1000))
        XCTAssertEqual(b.keptFraction(all), 1, accuracy: 1e-12)
        var half = all
        half.kept.append(Array(repeating: false, count: 34))
        half.route = (0..<1000).map { $0 < 500 ? 0 : 1 }
        XCTAssertEqual(b.keptFraction(half), (1 + b.fixedShare) / 2, accuracy: 1e-12)
    }
}
