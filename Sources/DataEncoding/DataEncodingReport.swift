/// What `alter encode-data --json` prints (formats/cli-json.md): the file written, its samples and
/// shapes, how they were made, and what was left out.
public struct DataEncodingReport: Encodable, Sendable {
    public var output: String
    /// The images folder and the captions file, as given.
    public var imageFolder: String
    public var captionFile: String
    /// Where the tokenizer, text encoder and VAE came from.
    public var sources: [String: String]
    /// Samples written (rows of `latents` and `context`).
    public var sampleCount: Int
    /// Entries left out (`skip_bad`), in folder then captions order.
    public var skipped: [DataEncodingSkip]
    public var size: Int
    public var resample: String
    /// `mean` or `sample`; `seed` only for `sample`.
    public var latentMode: String
    public var seed: UInt64?
    public var vaeScalingFactor: Double
    /// F32, F16 or BF16.
    public var dtype: String
    public var latentsShape: [Int]
    public var contextShape: [Int]
    public var uncondShape: [Int]
    /// Captions longer than the tokenizer's maximum length (cut to it).
    public var truncatedCaptionCount: Int
    /// Size of the file written.
    public var bytes: Int
    /// Wall time of the checking, caption and image passes.
    public var checkSeconds: Double
    public var captionSeconds: Double
    public var imageSeconds: Double

    enum CodingKeys: String, CodingKey {
        case output
        case imageFolder = "image_folder"
        case captionFile = "caption_file"
        case sources
        case sampleCount = "sample_count"
        case skipped
        case size
        case resample
        case latentMode = "latent_mode"
        case seed
        case vaeScalingFactor = "vae_scaling_factor"
        case dtype
        case latentsShape = "latents_shape"
        case contextShape = "context_shape"
        case uncondShape = "uncond_shape"
        case truncatedCaptionCount = "truncated_caption_count"
        case bytes
        case checkSeconds = "check_seconds"
        case captionSeconds = "caption_seconds"
        case imageSeconds = "image_seconds"
    }
}
