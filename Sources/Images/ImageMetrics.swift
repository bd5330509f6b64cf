import Foundation

/// Full-reference fidelity of one 8-bit RGB image to another: PSNR and SSIM as the image
/// quality literature (and scikit-image) computes them, in double precision on the byte values.
public enum ImageMetrics {
    /// The peak value of 8-bit images (PSNR's MAX and SSIM's data range).
    public static let dataRange = 255.0
    /// SSIM's Gaussian window: standard deviation in pixels.
    public static let ssimSigma = 1.5
    /// SSIM's Gaussian window is cut at this many standard deviations (scipy's `truncate`).
    public static let ssimTruncate = 3.5
    /// SSIM's stabilising constants K1, K2 (Wang et al. 2004).
    public static let ssimK1 = 0.01, ssimK2 = 0.03
    /// The Gaussian window's radius: `Int(truncate * sigma + 0.5)` = 5 (an 11 x 11 window).
    public static let ssimRadius = Int(ssimTruncate * ssimSigma + 0.5)
    /// The smallest height and width SSIM accepts: the window's side, 11 (scikit-image refuses
    /// smaller images: "win_size exceeds image extent").
    public static let ssimMinimumSide = 2 * ssimRadius + 1

    /// Mean squared error over every R, G, B value.
    public static func meanSquaredError(_ a: RGBImage, _ b: RGBImage) throws(ImageMetricsError) -> Double {
        try sameSize(a, b)
        let n = a.pixels.count
        var sum = 0.0
        a.pixels.withUnsafeBufferPointer { pa in
            b.pixels.withUnsafeBufferPointer { pb in
                for i in 0..<n {
                    let d = Double(Int(pa[i]) - Int(pb[i]))
                    sum += d * d
                }
            }
        }
        return sum / Double(n)
    }

    /// Peak signal-to-noise ratio in dB, 10 log10(255^2 / MSE) over every R, G, B value
    /// (`skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255)`); `+infinity` for
    /// identical images.
    public static func psnr(_ a: RGBImage, _ b: RGBImage) throws(ImageMetricsError) -> Double {
        let mse = try meanSquaredError(a, b)
        return mse == 0 ? .infinity : 10 * log10(dataRange * dataRange / mse)
    }

    /// Mean structural similarity (Wang et al. 2004) as
    /// `skimage.metrics.structural_similarity(a, b, channel_axis=2, data_range=255,
    /// gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`: per channel, local means,
    /// variances and covariance under a normalised Gaussian window (sigma 1.5, radius 5; scipy's
    /// `gaussian_filter`, separable, rows then columns, borders mirrored as scipy's `reflect`:
    /// `d c b a | a b c d | d c b a`), the SSIM map
    /// ((2 ux uy + C1)(2 vxy + C2)) / ((ux^2 + uy^2 + C1)(vx + vy + C2)) with C1 = (0.01 * 255)^2,
    /// C2 = (0.03 * 255)^2, averaged over the pixels at least 5 from every border, then over the
    /// three channels. Both sides must be at least `ssimMinimumSide` (11) pixels.
    public static func ssim(_ a: RGBImage, _ b: RGBImage) throws(ImageMetricsError) -> Double {
        try sameSize(a, b)
        guard a.width >= ssimMinimumSide, a.height >= ssimMinimumSide else {
            throw .tooSmall(width: a.width, height: a.height, minimum: ssimMinimumSide)
        }
        let w = a.width, h = a.height, n = w * h
        let kernel = gaussianKernel()
        let c1 = (ssimK1 * dataRange) * (ssimK1 * dataRange), c2 = (ssimK2 * dataRange) * (ssimK2 * dataRange)
        // x, y, x*x, y*y, x*y of one channel, then each filtered; `scratch` holds the row pass.
        let planes = UnsafeMutablePointer<Double>.allocate(capacity: 10 * n)
        defer { planes.deallocate() }
        let scratch = UnsafeMutablePointer<Double>.allocate(capacity: n)
        defer { scratch.deallocate() }
        var total = 0.0
        a.pixels.withUnsafeBufferPointer { pa in
            b.pixels.withUnsafeBufferPointer { pb in
                for channel in 0..<3 {
                    let x = planes, y = planes + n, xx = planes + 2 * n, yy = planes + 3 * n, xy = planes + 4 * n
                    for i in 0..<n {
                        let u = Double(pa[3 * i + channel]), v = Double(pb[3 * i + channel])
                        x[i] = u; y[i] = v
                        xx[i] = u * u; yy[i] = v * v; xy[i] = u * v
                    }
                    for k in 0..<5 {
                        gaussianFilter(planes + k * n, into: planes + (5 + k) * n, scratch: scratch, width: w, height: h, kernel: kernel)
                    }
                    let ux = planes + 5 * n, uy = planes + 6 * n, uxx = planes + 7 * n, uyy = planes + 8 * n, uxy = planes + 9 * n
                    var sum = 0.0
                    for row in ssimRadius..<(h - ssimRadius) {
                        for col in ssimRadius..<(w - ssimRadius) {
                            let i = row * w + col
                            let mx = ux[i], my = uy[i]
                            let vx = uxx[i] - mx * mx, vy = uyy[i] - my * my, vxy = uxy[i] - mx * my
                            let a1 = 2 * mx * my + c1, a2 = 2 * vxy + c2
                            let b1 = mx * mx + my * my + c1, b2 = vx + vy + c2
                            sum += (a1 * a2) / (b1 * b2)
                        }
                    }
                    total += sum / Double((h - 2 * ssimRadius) * (w - 2 * ssimRadius))
                }
            }
        }
        return total / 3
    }

    /// scipy's `_gaussian_kernel1d(sigma, 0, radius)`: exp(-x^2 / (2 sigma^2)) for x in
    /// -radius...radius, divided by its sum. Index `radius` is the centre.
    static func gaussianKernel() -> [Double] {
        let r = ssimRadius
        let raw = (-r...r).map { x in exp(-0.5 / (ssimSigma * ssimSigma) * Double(x * x)) }
        let sum = raw.reduce(0, +)
        return raw.map { $0 / sum }
    }

    /// `src`, `dst`, `scratch`: [height, width]. The symmetric `kernel` along rows (axis 0:
    /// down each column) into `scratch`, then along columns (axis 1) into `dst`, as scipy's
    /// `gaussian_filter` (axis by axis, `correlate1d` in mode "reflect"). Needs height and width
    /// above the kernel's radius (one reflection suffices).
    static func gaussianFilter(_ src: UnsafePointer<Double>, into dst: UnsafeMutablePointer<Double>, scratch: UnsafeMutablePointer<Double>,
                               width w: Int, height h: Int, kernel: [Double]) {
        let r = kernel.count / 2
        // reflect: index -1 -> 0, -k -> k - 1; n -> n - 1, n + k -> n - 1 - k.
        @inline(__always) func reflect(_ i: Int, _ n: Int) -> Int { i < 0 ? -i - 1 : (i >= n ? 2 * n - i - 1 : i) }
        kernel.withUnsafeBufferPointer { k in
            // Axis 0: scratch[row, col] = sum_j k[r + j] * src[reflect(row + j), col].
            for row in 0..<h {
                let out = scratch + row * w
                let centre = src + row * w
                let kc = k[r]
                for col in 0..<w { out[col] = centre[col] * kc }
                for j in 1...r {
                    let above = src + reflect(row - j, h) * w, below = src + reflect(row + j, h) * w
                    let kj = k[r + j]
                    for col in 0..<w { out[col] += (above[col] + below[col]) * kj }
                }
            }
            // Axis 1: dst[row, col] = sum_j k[r + j] * scratch[row, reflect(col + j)].
            for row in 0..<h {
                let line = scratch + row * w, out = dst + row * w
                for col in 0..<w {
                    var s = line[col] * k[r]
                    if col >= r && col + r < w {
                        for j in 1...r { s += (line[col - j] + line[col + j]) * k[r + j] }
                    } else {
                        for j in 1...r { s += (line[reflect(col - j, w)] + line[reflect(col + j, w)]) * k[r + j] }
                    }
                    out[col] = s
                }
            }
        }
    }

    private static func sameSize(_ a: RGBImage, _ b: RGBImage) throws(ImageMetricsError) {
        guard a.width == b.width, a.height == b.height else {
            throw .sizeMismatch(a: [a.height, a.width], b: [b.height, b.width])
        }
    }
}

/// Images a metric cannot compare.
public enum ImageMetricsError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The two images differ in [height, width].
    case sizeMismatch(a: [Int], b: [Int])
    /// SSIM's window does not fit in the image.
    case tooSmall(width: Int, height: Int, minimum: Int)

    public var description: String {
        switch self {
        case .sizeMismatch(let a, let b): return "images of different sizes: \(a[1])x\(a[0]) and \(b[1])x\(b[0]) (width x height)"
        case .tooSmall(let w, let h, let m):
            return "image of \(w)x\(h) pixels: SSIM's \(m)x\(m) Gaussian window needs both sides at least \(m)"
        }
    }
}
