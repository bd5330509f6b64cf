import TensorCore

extension TrainingData {
    /// The samples at `indices` (each in 0..<count; repeats allowed, order kept) as in-memory
    /// training data, with this data's `uncond` and metadata; `path` labels it in errors
    /// (default: this data's path with the sample range or count). Used to hold samples out of
    /// training for evaluation.
    public func subset(_ indices: [Int], path: String? = nil) throws(TrainingDataError) -> TrainingData {
        guard !indices.isEmpty else {
            throw .wrongShape(file: path ?? self.path, tensor: Self.latentsName, shape: [0] + latentShape.dropFirst(),
                              expected: "at least one sample (N >= 1)")
        }
        let (latents, context) = batch(indices: indices)
        let label: String
        if let path {
            label = path
        } else if let first = indices.first, let last = indices.last, indices == Array(first...last) {
            label = "\(self.path)[\(first)..<\(last + 1)]"
        } else {
            label = "\(self.path)[\(indices.count) samples]"
        }
        return try TrainingData(latents: latents, context: context, uncond: uncond, metadata: metadata, path: label)
    }

    /// Samples `range` (within 0..<count) as in-memory training data.
    public func subset(_ range: Range<Int>, path: String? = nil) throws(TrainingDataError) -> TrainingData {
        try subset(Array(range), path: path)
    }

    /// Splits off the last `heldOut` samples: `train` holds samples 0..<count-heldOut, `heldOut`
    /// the rest. Both must be non-empty.
    public func split(heldOut: Int) throws(TrainingDataError) -> (train: TrainingData, heldOut: TrainingData) {
        precondition(heldOut >= 1 && heldOut < count, "TrainingData.split: held out \(heldOut) of \(count) samples; both parts must be non-empty")
        return (try subset(0..<(count - heldOut)), try subset((count - heldOut)..<count))
    }
}
