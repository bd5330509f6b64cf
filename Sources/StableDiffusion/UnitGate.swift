import TensorCore

/// How a unit takes part in a forward pass.
enum UnitGate {
    /// Computed normally.
    case on
    /// Not computed: output = input.
    case skip
    /// Blended per sample: (1 - m) * input + m * f(input), m: [N].
    case blend(Var)
}
