import TensorCore

/// Element-wise linear combinations for the samplers: Double coefficients, each element computed
/// in Double and rounded to Float once.
enum SchedulerArithmetic {
    /// c * x.
    static func combine(_ x: Tensor, _ c: Double) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        let xp = x.data, yp = y.data
        for i in 0..<x.count { yp[i] = Float(c * Double(xp[i])) }
        return y
    }

    /// ca * a + cb * b (same element count; the result has a's shape).
    static func combine(_ a: Tensor, _ ca: Double, _ b: Tensor, _ cb: Double) -> Tensor {
        precondition(a.count == b.count, "combine \(a.shape) \(b.shape)")
        let y = Tensor(uninitialized: a.shape)
        let ap = a.data, bp = b.data, yp = y.data
        for i in 0..<a.count { yp[i] = Float(ca * Double(ap[i]) + cb * Double(bp[i])) }
        return y
    }
}
