/// A value on a tape: a tensor and, when it depends on something that needs a gradient, the
/// index of the tape node that produced it.
public struct Var {
    public let value: Tensor
    /// Tape node index, or -1 for a constant.
    let id: Int

    init(_ value: Tensor, id: Int) {
        self.value = value
        self.id = id
    }

    public var shape: [Int] { value.shape }
    /// Whether gradients flow into this value.
    public var requiresGrad: Bool { id >= 0 }
}

/// Reverse-mode automatic differentiation by a tape.
///
/// Operations (see `Tape+Ops.swift`) compute their result at once with the TensorCore kernels and,
/// when the tape records and some input needs a gradient, append a node holding the inputs' indices
/// and a closure that maps the output's gradient to the inputs' gradients. Nodes are appended in
/// execution order, so `backward` walks them once from last to first (iteratively) and accumulates
/// gradients: into `gradient(of:)` for inputs, into `Parameter.grad` for trainable parameters.
///
/// A tape that does not record runs the same code as inference: no nodes, nothing kept.
/// `checkpoint` keeps only a segment's inputs and recomputes the segment during `backward`.
public final class Tape {
    struct Node {
        var inputs: [Int]
        var backward: ((Tensor) -> [Tensor?])?
        var parameter: Parameter?
    }

    /// Whether operations record nodes.
    public let isRecording: Bool
    private var nodes: [Node] = []
    private var parameterIDs: [ObjectIdentifier: Int] = [:]
    private var leafGradients: [Int: Tensor] = [:]
    private var consumed = false

    public init(recording: Bool = true) {
        isRecording = recording
    }

    /// Number of nodes recorded so far.
    public var nodeCount: Int { nodes.count }

    /// A value that needs no gradient.
    public func constant(_ t: Tensor) -> Var { Var(t, id: -1) }

    /// A leaf whose gradient `backward` keeps (see `gradient(of:)`); a constant when not recording.
    public func input(_ t: Tensor) -> Var {
        guard isRecording else { return Var(t, id: -1) }
        nodes.append(Node(inputs: [], backward: nil, parameter: nil))
        return Var(t, id: nodes.count - 1)
    }

    /// The parameter as a value; its gradient accumulates into `p.grad` when it is trainable and
    /// the tape records. A parameter used several times is one leaf.
    public func parameter(_ p: Parameter) -> Var {
        guard isRecording, p.trainable else { return Var(p.value, id: -1) }
        if let id = parameterIDs[ObjectIdentifier(p)] { return Var(p.value, id: id) }
        nodes.append(Node(inputs: [], backward: nil, parameter: p))
        parameterIDs[ObjectIdentifier(p)] = nodes.count - 1
        return Var(p.value, id: nodes.count - 1)
    }

    /// Records an operation's result. `backward` receives the gradient of `value` and returns one
    /// gradient (or nil for none) per input, in order; it is called only when some input needs one.
    /// With `always`, the result is recorded even when no input needs a gradient (for segments
    /// whose parameters are hidden in the closure, see `checkpoint`).
    public func record(_ value: Tensor, inputs: [Var], always: Bool = false, backward: @escaping (Tensor) -> [Tensor?]) -> Var {
        guard isRecording, always || inputs.contains(where: \.requiresGrad) else { return Var(value, id: -1) }
        precondition(!consumed, "Tape: recording after backward")
        nodes.append(Node(inputs: inputs.map(\.id), backward: backward, parameter: nil))
        return Var(value, id: nodes.count - 1)
    }

    /// Back-propagates `seeds` (value, gradient of the objective with respect to it). Runs once per
    /// tape: nodes release what they captured as soon as they have been visited.
    public func backward(_ seeds: [(Var, Tensor)]) {
        precondition(!consumed, "Tape: backward runs once")
        consumed = true
        var grads = [Tensor?](repeating: nil, count: nodes.count)
        func add(_ id: Int, _ g: Tensor) {
            if let old = grads[id] { grads[id] = Elementwise.add(old, g.reshaped(old.shape)) } else { grads[id] = g }
        }
        var top = -1
        for (v, g) in seeds where v.id >= 0 {
            precondition(g.count == v.value.count, "Tape.backward: seed of \(g.shape) for a value of \(v.shape)")
            add(v.id, g.reshaped(v.shape))
            top = max(top, v.id)
        }
        var i = top
        while i >= 0 {
            defer { i -= 1 }
            let node = nodes[i]
            guard let g = grads[i] else {
                nodes[i].backward = nil
                continue
            }
            if let bw = node.backward {
                grads[i] = nil
                nodes[i].backward = nil
                let inputGrads = bw(g)
                precondition(inputGrads.count == node.inputs.count, "Tape: backward returned \(inputGrads.count) gradients for \(node.inputs.count) inputs")
                for (j, ig) in zip(node.inputs, inputGrads) where j >= 0 {
                    if let ig { add(j, ig) }
                }
            } else if let p = node.parameter {
                grads[i] = nil
                p.accumulate(g)
            } else {
                leafGradients[i] = g
                grads[i] = nil
            }
        }
        nodes.removeAll()
    }

    /// Back-propagates from a scalar (a seed of 1).
    public func backward(_ loss: Var) {
        precondition(loss.value.count == 1, "Tape.backward: \(loss.shape) is not a scalar")
        backward([(loss, Tensor(repeating: 1, shape: loss.shape))])
    }

    /// The gradient accumulated for an `input` leaf (nil when nothing reached it).
    public func gradient(of v: Var) -> Tensor? {
        guard v.id >= 0, let g = leafGradients[v.id] else { return nil }
        return g.reshaped(v.shape)
    }

    /// Runs `body` on `inputs` and keeps only the inputs: during `backward`, the segment is run
    /// again on a recording tape and differentiated there (activation recomputation). `body` must
    /// be deterministic; the parameters it uses get their gradients during the recomputation.
    public func checkpoint(_ inputs: [Var], _ body: @escaping (Tape, [Var]) -> Var) -> Var {
        guard isRecording else { return body(self, inputs) }
        let outer = Tape(recording: false)
        let y = body(outer, inputs.map { Var($0.value, id: -1) })
        let values = inputs.map(\.value), needs = inputs.map(\.requiresGrad)
        return record(y.value, inputs: inputs, always: true) { g in
            let inner = Tape(recording: true)
            let leaves = zip(values, needs).map { $1 ? inner.input($0) : inner.constant($0) }
            let out = body(inner, leaves)
            inner.backward([(out, g)])
            return leaves.map { inner.gradient(of: $0) }
        }
    }
}
