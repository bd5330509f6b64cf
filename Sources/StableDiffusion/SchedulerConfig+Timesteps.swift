import Foundation

extension SchedulerConfig {
    /// The inference timesteps of diffusers' `set_timesteps` for `steps` steps, from the noisiest,
    /// as Double values (integers except Euler's unrounded `linspace`). The arithmetic is numpy's,
    /// operation for operation, so that the values (and their count) are exactly diffusers':
    /// * leading: `(arange(N) * (T // N)).round()[::-1] + steps_offset`;
    /// * trailing: `round(arange(T, 0, -T/N)) - 1` -- numpy's float `arange` has
    ///   ceil(T / (T/N)) elements, which is N + 1 for some N (61, 103, ... for T = 1000): the
    ///   extra one is timestep -1, which the schedulers refuse;
    /// * linspace: `linspace(0, T - 1, N)[::-1]`, rounded half to even when `round` is true
    ///   (DDIM, PNDM), left as is otherwise (Euler, which then rounds to Float).
    func inferenceTimesteps(steps n: Int, spacing: TimestepSpacing, round: Bool) -> [Double] {
        let t = trainTimesteps
        switch spacing {
        case .leading:
            let ratio = t / n
            return (0..<n).reversed().map { Double($0 * ratio + stepsOffset) }
        case .trailing:
            // numpy arange(start, stop, step) for floats: length ceil((stop - start) / step),
            // element i = start + i * delta with delta = (start + step) - start.
            let start = Double(t), step = -(Double(t) / Double(n))
            let length = max(Int(((0 - start) / step).rounded(.up)), 0)
            let delta = (start + step) - start
            return (0..<length).map { i in (start + Double(i) * delta).rounded(.toNearestOrEven) - 1 }
        case .linspace:
            let values = Self.numpyLinspace(stop: Double(t - 1), count: n)
            return values.reversed().map { round ? $0.rounded(.toNearestOrEven) : $0 }
        }
    }

    /// numpy `linspace(0, stop, count)` in float64: i * (stop / (count - 1)), the last one exactly stop.
    static func numpyLinspace(stop: Double, count: Int) -> [Double] {
        guard count > 1 else { return count == 1 ? [0] : [] }
        let step = stop / Double(count - 1)
        var v = (0..<count).map { Double($0) * step }
        v[count - 1] = stop
        return v
    }

    /// Throws unless 1 <= steps <= trainTimesteps.
    func checkStepCount(_ steps: Int) throws(SchedulerError) {
        guard steps >= 1, steps <= trainTimesteps else { throw .invalidStepCount(steps, trainTimesteps: trainTimesteps) }
    }

    /// Throws unless every timestep lies in 0..<trainTimesteps.
    func checkRange(_ timesteps: [Double], scheduler: String, steps: Int, spacing: TimestepSpacing) throws(SchedulerError) {
        for v in timesteps where !(v >= 0 && v <= Double(trainTimesteps - 1)) {
            throw .timestepOutOfRange(scheduler: scheduler, steps: steps, spacing: spacing.rawValue,
                                      timestep: v, trainTimesteps: trainTimesteps)
        }
    }
}
