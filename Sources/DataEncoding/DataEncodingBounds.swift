/// Limits on what `alter encode-data` reads and writes, checked before anything is allocated.
public enum DataEncodingBounds {
    /// Samples in one file. The captions and image names travel in the safetensors header,
    /// which readers cap at 100 MiB; at SD2.1 sizes in F16 a sample takes 190 KB of tensors, so
    /// 1,000,000 samples are 190 GB: split larger data sets into several files.
    public static let maxSamples = 1_000_000
    /// Bytes of one caption's text (CLIP reads 77 tokens of it; the rest is kept in the metadata).
    public static let captionBytes = 16 << 10
    /// Bytes of the captions file.
    public static let captionFileBytes = 256 << 20
    /// Files and folders looked at under the images folder.
    public static let maxListedFiles = 4_000_000
    /// Image side after resizing and cropping, in pixels.
    public static let sizes = 8...2048
    /// Images encoded at once.
    public static let batches = 1...64
    /// Bytes of the metadata (image names and captions) in the header: the safetensors reader's
    /// 100 MiB header limit, less room for the tensor entries.
    public static let metadataBytes = 100 * 1024 * 1024 - (64 << 10)
}
