import NN
import SafeTensors
import TensorCore

extension UNetCheckpoint: ParameterSource {
    /// The parameter `name` (canonical) as an F32 tensor; F16/BF16 are converted. The file's pages
    /// are released after the copy, so building a model does not keep the checkpoint resident.
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let loc = location(name) else {
            throw CheckpointError.safetensors(SafeTensorsError(file: source.path, tensor: name, .noSuchTensor))
        }
        guard loc.info.shape == shape else { throw ParameterError.shape(name, expected: shape, actual: loc.info.shape) }
        let t = Tensor(uninitialized: shape)
        DTypeConversion.convert(loc.file.rawBytes(loc.info), from: loc.info.dtype, to: .f32,
                                into: UnsafeMutableRawBufferPointer(start: t.data, count: t.count * 4))
        loc.file.release(loc.info)
        return t
    }
}
