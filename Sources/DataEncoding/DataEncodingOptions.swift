import Images
import SafeTensors

/// How `TrainingDataEncoder` turns images and captions into a training-data file.
public struct DataEncodingOptions: Sendable {
    /// How a latent is taken from the VAE's latent distribution.
    public enum LatentMode: Sendable, Equatable {
        /// The distribution's mean (diffusers: `latent_dist.mode()`); deterministic.
        case mean
        /// mean + std * eps, eps standard normal from `SeededGenerator(seed: seed, stream:
        /// "encode-data latent I")` for sample I (its row in the file), in element order: the
        /// same seed gives the same latents whatever the batch size.
        case sample(seed: UInt64)

        /// `mean` or `sample` (the `latent_mode` metadata value).
        public var name: String {
            switch self {
            case .mean: return "mean"
            case .sample: return "sample"
            }
        }
    }

    /// Side of the square image, in pixels: the shorter side is resized to it, then the centre is
    /// cropped (torchvision `Resize(size)` + `CenterCrop(size)`); a multiple of the VAE's
    /// downsampling factor.
    public var size = 512
    /// Images (and captions) encoded at once.
    public var batch = 4
    /// Storage dtype of `latents`, `context` and `uncond`: F32, F16 or BF16.
    public var dtype: DType = .f16
    public var latentMode: LatentMode = .mean
    /// The resampling filter of the resize (bilinear, as diffusers' train_text_to_image.py).
    public var filter: ImageResize.Filter = .bilinear
    /// Leave out images without a caption, captions without an image and unreadable images
    /// (listed in the report) instead of refusing the data set.
    public var skipBad = false
    /// Free text for the `source` metadata (default: a sentence naming the folder and the size).
    public var source: String?

    public init() {}

    /// Checks the numbers against `DataEncodingBounds` and the dtype.
    public func validate() throws(DataEncodingError) {
        guard DataEncodingBounds.sizes.contains(size) else {
            throw .bounds("size \(size): expected \(DataEncodingBounds.sizes.lowerBound)...\(DataEncodingBounds.sizes.upperBound) pixels")
        }
        guard DataEncodingBounds.batches.contains(batch) else {
            throw .bounds("batch \(batch): expected \(DataEncodingBounds.batches.lowerBound)...\(DataEncodingBounds.batches.upperBound)")
        }
        guard [.f32, .f16, .bf16].contains(dtype) else {
            throw .bounds("dtype \(dtype.rawValue): training data is stored as F32, F16 or BF16")
        }
    }
}

/// Where an encoding run is: `phase`, and `done` of `total` images or captions.
public struct DataEncodingProgress: Sendable, Equatable {
    public enum Phase: String, Sendable {
        /// Reading every image once to find the unreadable ones (before the header is written).
        case checking
        /// Tokenizing and encoding the captions.
        case captions
        /// Reading, resizing and VAE-encoding the images.
        case images
    }

    public var phase: Phase
    public var done: Int
    public var total: Int
}
