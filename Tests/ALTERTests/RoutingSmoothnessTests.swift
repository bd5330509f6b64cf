@testable import ALTER
import ExampleSupport
import Foundation
import NN
import TensorCore
import XCTest

/// The routing smoothness term (`--smoothness-weight`, docs/method.md section 5):
/// L_smooth = 1/2 sum_t sum_i (P[t+1, i] - P[t, i])^2 over P = softmax(logits).
final class RoutingSmoothnessTests: XCTestCase {
    func router(experts: Int = 3, steps: Int = 12) throws -> LearnedRouter {
        let emb = Tensor(shape: [steps, 4], values: (0..<(steps * 4)).map { Float(sin(Double($0) * 0.37)) })
        return try LearnedRouter(timeEmbedding: emb, hidden: 8, experts: experts, parameters: RandomParameters(seed: 3))
    }

    /// Sharp switches count about 1 each: a route 0 0 0 1 1 1 2 2 0 0 has 3.
    func testSharpSwitchesCountOneEach() throws {
        let route = [0, 0, 0, 1, 1, 1, 2, 2, 0, 0]
        let logits = Tensor(shape: [route.count, 3], values: route.flatMap { e in (0..<3).map { $0 == e ? Float(40) : 0 } })
        let tape = Tape(recording: false)
        let r = try router()
        let value = try XCTUnwrap(r.smoothness(on: tape, RelaxedRoutes(routes: tape.constant(logits), route: route, logits: tape.constant(logits))))
        XCTAssertEqual(Double(value.value.data[0]), 3, accuracy: 1e-6)
        // A router without logits (fixed routing) has no term.
        XCTAssertNil(FixedRouter(experts: 3, trainSteps: 10).smoothness(on: tape, RelaxedRoutes(routes: tape.constant(logits), route: route, logits: nil)))
    }

    /// The value is the formula's, and its gradient with respect to the logits matches central
    /// finite differences (float64 reference of the formula).
    func testValueAndGradientAgainstFiniteDifferences() throws {
        let (t, e) = (7, 3)
        var rng = SeededGenerator(seed: 11)
        let x = (0..<(t * e)).map { _ in Float(rng.normal()) }
        func reference(_ v: [Double]) -> Double {
            let p = (0..<t).map { i -> [Double] in
                let row = (0..<e).map { v[i * e + $0] }
                let m = row.max()!
                let z = row.map { exp($0 - m) }
                let s = z.reduce(0, +)
                return z.map { $0 / s }
            }
            return 0.5 * (0..<(t - 1)).reduce(0) { acc, i in acc + (0..<e).reduce(0) { $0 + pow(p[i + 1][$1] - p[i][$1], 2) } }
        }
        let tape = Tape()
        let logits = tape.input(Tensor(shape: [t, e], values: x))
        let r = try router()
        let value = try XCTUnwrap(r.smoothness(on: tape, RelaxedRoutes(routes: logits, route: [Int](repeating: 0, count: t), logits: logits)))
        XCTAssertEqual(Double(value.value.data[0]), reference(x.map(Double.init)), accuracy: 1e-6)
        tape.backward(value)
        let g = try XCTUnwrap(tape.gradient(of: logits))
        var worst = 0.0
        for i in 0..<(t * e) {
            var plus = x.map(Double.init), minus = x.map(Double.init)
            plus[i] += 1e-5
            minus[i] -= 1e-5
            let fd = (reference(plus) - reference(minus)) / 2e-5
            worst = max(worst, abs(fd - Double(g.data[i])))
        }
        XCTAssertLessThan(worst, 1e-5, "worst absolute gradient error \(worst)")
    }

    /// Fixed and segment routings have no logits to smooth: the option is refused for them; with
    /// learned routing the hypernetwork steps report the term (and later steps do not).
    func testOnlyLearnedRoutingAndMetrics() throws {
        for routing in [ALTERSettings.Routing.intervals, .static, .segments] {
            var c = Example.config(steps: 8, hypernetSteps: 2)
            c.settings.routing = routing
            c.settings.smoothnessWeight = 0.1
            XCTAssertThrowsError(try c.validate(), "\(routing)") { XCTAssertEqual(($0 as? CompressionError)?.field, "smoothness_weight") }
        }
        var c = Example.config(steps: 8, hypernetSteps: 2)
        c.settings.smoothnessWeight = 0.1
        let trainer = try Example.trainer(c)
        let first = try trainer.trainStep(), second = try trainer.trainStep(), third = try trainer.trainStep()
        XCTAssertNotNil(first.smoothness)
        XCTAssertNotNil(second.smoothness)
        XCTAssertNil(third.smoothness)
        XCTAssertNil(try Example.trainer(Example.config(steps: 8, hypernetSteps: 2)).trainStep().smoothness, "off by default")
    }
}
