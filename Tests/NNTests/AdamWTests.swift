import NN
import TensorCore
import XCTest

final class AdamWTests: XCTestCase {
    /// Three updates of torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    /// on w = [1, -2, 0.5] with gradients g_k = [0.3, -0.1, 2] * k (k = 1, 2, 3), no clipping, no
    /// warm-up, recomputed here in Double from PyTorch's update rule:
    /// w *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
    func testMatchesPyTorchUpdateRule() {
        let p = Parameter(name: "w", value: Tensor(shape: [3], values: [1, -2, 0.5]))
        var s = AdamW.Settings(learningRate: 0.1)
        s.clipNorm = 0
        let opt = AdamW(parameters: [p], settings: s)
        var w: [Double] = [1, -2, 0.5], m = [0.0, 0, 0], v = [0.0, 0, 0]
        for k in 1...3 {
            let g = [0.3, -0.1, 2].map { $0 * Double(k) }
            p.accumulate(Tensor(shape: [3], values: g.map(Float.init)))
            opt.update()
            for i in 0..<3 {
                w[i] *= 1 - 0.1 * 0.01
                m[i] = 0.9 * m[i] + 0.1 * g[i]
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i]
                let mh = m[i] / (1 - pow(0.9, Double(k))), denom = (v[i] / (1 - pow(0.999, Double(k)))).squareRoot() + 1e-8
                w[i] -= 0.1 * mh / denom
            }
            for i in 0..<3 { XCTAssertEqual(Double(p.value.data[i]), w[i], accuracy: 1e-6, "step \(k) element \(i)") }
            XCTAssertNil(p.grad)
        }
        XCTAssertEqual(opt.step, 3)
    }

    /// Gradient clipping scales the global norm to the limit; warm-up ramps the rate linearly.
    func testClippingAndWarmup() {
        let a = Parameter(name: "a", value: Tensor(zeros: [2])), b = Parameter(name: "b", value: Tensor(zeros: [1]))
        var s = AdamW.Settings(learningRate: 1)
        s.warmupSteps = 4
        s.clipNorm = 1
        s.weightDecay = 0
        let opt = AdamW(parameters: [a, b], settings: s)
        XCTAssertEqual(opt.currentLearningRate, 0.25)
        a.accumulate(Tensor(shape: [2], values: [3, 0]))
        b.accumulate(Tensor(shape: [1], values: [4]))
        XCTAssertEqual(opt.gradientNorm(), 5, accuracy: 1e-9)
        XCTAssertEqual(opt.update(), 5, accuracy: 1e-9)
        // First Adam step moves each coordinate by lr * sign(g) (for |g| >> eps), clipped or not.
        XCTAssertEqual(a.value.data[0], -0.25, accuracy: 1e-5)
        XCTAssertEqual(b.value.data[0], -0.25, accuracy: 1e-5)
        XCTAssertEqual(opt.currentLearningRate, 0.5)
        for _ in 0..<3 { a.accumulate(Tensor(shape: [2], values: [1, 1])); opt.update() }
        XCTAssertEqual(opt.currentLearningRate, 1)
    }
}

final class OptimizerTests: XCTestCase {
    /// An optimiser restored from another's state tensors continues exactly as the original.
    func testStateTensorsRestore() {
        func parameters() -> [Parameter] {
            [Parameter(name: "a", value: Tensor(shape: [3], values: [1, -2, 0.5])), Parameter(name: "b", value: Tensor(shape: [2], values: [0.25, 4]))]
        }
        func gradients(_ ps: [Parameter], _ k: Int) {
            for p in ps { p.accumulate(Tensor(shape: p.shape, values: p.value.scalars.map { $0 * 0.1 + Float(k) })) }
        }
        var settings = AdamW.Settings(learningRate: 0.01)
        settings.warmupSteps = 3
        let first = parameters(), original: any Optimizer = AdamW(parameters: first, settings: settings)
        for k in 0..<2 { gradients(first, k); original.update() }
        XCTAssertEqual(original.stateTensors.map(\.name), ["m.a", "m.b", "v.a", "v.b"])

        let second = parameters()
        for (p, q) in zip(second, first) { p.value.data.update(from: q.value.data, count: q.value.count) }
        let restored: any Optimizer = AdamW(parameters: second, settings: settings)
        restored.restore(step: original.step, state: original.stateTensors.map { $0.tensor.copy() })
        XCTAssertEqual(restored.step, 2)
        XCTAssertEqual(restored.currentLearningRate, original.currentLearningRate)
        gradients(first, 2)
        gradients(second, 2)
        XCTAssertEqual(original.update(), restored.update())
        XCTAssertEqual(first.map(\.value.scalars), second.map(\.value.scalars))
    }
}
