import Foundation

/// A small, fast, reproducible random generator (SplitMix64) whose whole state is one `UInt64`,
/// so runs can save it and resume bit for bit.
public struct SeededGenerator: RandomNumberGenerator, Codable, Sendable, Equatable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for the named stream `name` of `seed`: seeded by `seed` XOR the FNV-1a hash of
    /// the name's UTF-8 bytes, so every named tensor or purpose gets its own reproducible stream.
    public init(seed: UInt64, stream name: String) {
        state = seed ^ name.utf8.reduce(UInt64(0xCBF2_9CE4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    public mutating func openUnit() -> Double { (Double(next() >> 11) + 0.5) * 0x1p-53 }

    /// Uniform integer in 0..<n.
    public mutating func index(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// A standard normal sample (Box-Muller; one of the pair is used).
    public mutating func normal() -> Double {
        let u1 = openUnit(), u2 = openUnit()
        return (-2 * Foundation.log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// A standard Gumbel sample, -log(-log U).
    public mutating func gumbel() -> Double { -Foundation.log(-Foundation.log(openUnit())) }

    /// `count` standard normal Floats (`count` must not be negative: sizes from files and
    /// arguments are checked before they get here).
    public mutating func normals(_ count: Int) -> [Float] {
        precondition(count >= 0, "SeededGenerator.normals: negative count \(count)")
        return (0..<count).map { _ in Float(normal()) }
    }

    /// `count` standard Gumbel Floats.
    public mutating func gumbels(_ count: Int) -> [Float] { (0..<count).map { _ in Float(gumbel()) } }

    /// A generator seeded from this one (independent streams for separate purposes).
    public mutating func split() -> SeededGenerator { SeededGenerator(seed: next() ^ 0xD1B5_4A32_D192_ED03) }
}
