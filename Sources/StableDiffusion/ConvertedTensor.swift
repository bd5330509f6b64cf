import SafeTensors

/// One tensor a conversion writes: its name, dtype and shape in the target layout, and the pieces
/// its bytes are made of, in order (a whole stored tensor; a row range of a fused projection; the
/// three projections fused into one; zeros).
struct ConvertedTensor {
    enum Piece {
        /// `count` elements of a stored tensor, from element `offset`.
        case stored(TensorStore.Location, offset: Int, count: Int)
        /// `count` zero elements.
        case zeros(count: Int)

        /// The whole of a stored tensor.
        static func whole(_ loc: TensorStore.Location) -> Piece {
            .stored(loc, offset: 0, count: loc.info.shape.reduce(1, *))
        }

        var count: Int {
            switch self {
            case .stored(_, _, let n), .zeros(let n): return n
            }
        }
    }

    var name: String
    var dtype: DType
    var shape: [Int]
    var pieces: [Piece]

    var spec: TensorSpec { TensorSpec(name: name, dtype: dtype, shape: shape) }

    /// Writes `tensors` to the safetensors file `path` one at a time (atomically: on an error the
    /// file is not created), converting each piece to the tensor's dtype; a whole stored tensor of
    /// the same dtype is copied in the kernel. `progress` gets the bytes of each tensor written.
    /// Returns the bytes of tensor data written.
    static func write(_ tensors: [ConvertedTensor], to path: String, progress: (Int) -> Void) throws(SafeTensorsError) -> Int {
        var byName: [String: ConvertedTensor] = [:]
        for t in tensors {
            precondition(t.pieces.reduce(0) { $0 + $1.count } == t.spec.elementCount, "ConvertedTensor \(t.name): pieces do not fill the shape")
            byName[t.name] = t
        }
        let writer = try SafeTensorsWriter(path: path, tensors: tensors.map(\.spec), metadata: ["format": "pt"])
        let maxBytes = tensors.map(\.spec.byteCount).max() ?? 0
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxBytes, 1), alignment: 64)
        defer { scratch.deallocate() }
        var total = 0
        do {
            for spec in writer.order {
                guard let t = byName[spec.name] else { preconditionFailure("ConvertedTensor: \(spec.name) has no plan") }
                if t.pieces.count == 1, case .stored(let loc, 0, let n) = t.pieces[0], n * loc.info.dtype.byteSize == loc.info.byteCount,
                   loc.info.dtype == spec.dtype {
                    try writer.write(spec.name, copying: loc.info, from: loc.file)
                    loc.file.release(loc.info)
                } else {
                    var at = 0
                    for piece in t.pieces {
                        let n = piece.count * spec.dtype.byteSize
                        let dst = UnsafeMutableRawBufferPointer(rebasing: scratch[at..<(at + n)])
                        switch piece {
                        case .stored(let loc, let offset, let count):
                            let size = loc.info.dtype.byteSize
                            let src = loc.file.rawBytes(loc.info)
                            precondition((offset + count) * size <= src.count, "ConvertedTensor: \(loc.info.name) is shorter than its checked shape")
                            DTypeConversion.convert(UnsafeRawBufferPointer(rebasing: src[(offset * size)..<((offset + count) * size)]),
                                                    from: loc.info.dtype, to: spec.dtype, into: dst)
                        case .zeros:
                            dst.initializeMemory(as: UInt8.self, repeating: 0)
                        }
                        at += n
                    }
                    try writer.write(spec.name, bytes: UnsafeRawBufferPointer(rebasing: scratch[0..<at]))
                    for case .stored(let loc, _, _) in t.pieces { loc.file.release(loc.info) }
                }
                total += spec.byteCount
                progress(spec.byteCount)
            }
            try writer.finish()
        } catch {
            writer.abort()
            throw error
        }
        return total
    }
}
