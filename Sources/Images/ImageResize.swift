import Foundation

/// Resizing and cropping as torchvision's `Resize` and `CenterCrop` do it on PIL images, with
/// Pillow's resampling (`Image.resize`): separable, antialiased filters whose support widens with
/// the downscale factor, 8-bit fixed-point coefficients (22 fraction bits, rounded as Pillow
/// rounds them), a horizontal pass over the rows the vertical pass needs, then a vertical pass
/// (the other order when the height shrinks much more than the width, as Pillow 13 does it),
/// each pass skipped when its side keeps its size. The result is byte-identical to Pillow's on
/// the fixtures (docs/images.md).
public enum ImageResize {
    /// Pillow's resampling filters (`Image.Resampling`).
    public enum Filter: String, Sendable, CaseIterable {
        /// Triangle filter, support 1 (`Image.BILINEAR`; torchvision's default, as diffusers'
        /// train_text_to_image.py uses it).
        case bilinear
        /// Keys cubic with a = -0.5, support 2 (`Image.BICUBIC`).
        case bicubic
        /// Lanczos, 3 lobes, support 3 (`Image.LANCZOS`).
        case lanczos

        var support: Double {
            switch self {
            case .bilinear: 1
            case .bicubic: 2
            case .lanczos: 3
            }
        }

        func weight(_ t: Double) -> Double {
            switch self {
            case .bilinear:
                let x = abs(t)
                return x < 1 ? 1 - x : 0
            case .bicubic:
                let a = -0.5, x = abs(t)
                if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
                if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
                return 0
            case .lanczos:
                return -3 <= t && t < 3 ? Self.sinc(t) * Self.sinc(t / 3) : 0
            }
        }

        private static func sinc(_ x: Double) -> Double {
            if x == 0 { return 1 }
            let p = x * Double.pi
            return sin(p) / p
        }
    }

    /// Fraction bits of the fixed-point coefficients (Pillow's PRECISION_BITS).
    static let precisionBits: Int32 = 32 - 8 - 2

    /// One axis' filter taps: output `i` reads `count[i]` inputs from `first[i]` with the weights
    /// `weights[i * taps ..< i * taps + count[i]]`.
    struct Taps {
        var taps: Int
        var first: [Int]
        var count: [Int]
        var weights: [Int32]

        /// The taps for resampling `inSize` samples to `outSize` (Pillow's precompute_coeffs and
        /// normalize_coeffs_8bpc).
        init(inSize: Int, outSize: Int, filter: Filter) {
            let scale = Double(inSize) / Double(outSize)
            let filterScale = max(scale, 1)
            let support = filter.support * filterScale
            taps = Int(support.rounded(.up)) * 2 + 1
            first = []
            count = []
            weights = [Int32](repeating: 0, count: outSize * taps)
            var k = [Double](repeating: 0, count: taps)
            let one = Double(1 << ImageResize.precisionBits)
            for i in 0..<outSize {
                let center = (Double(i) + 0.5) * scale
                let ss = 1 / filterScale
                let lo = max(Int(center - support + 0.5), 0)
                let n = min(Int(center + support + 0.5), inSize) - lo
                var sum = 0.0
                for x in 0..<n {
                    k[x] = filter.weight((Double(x + lo) - center + 0.5) * ss)
                    sum += k[x]
                }
                for x in 0..<n {
                    if sum != 0 { k[x] /= sum }
                    weights[i * taps + x] = Int32(k[x] < 0 ? -0.5 + k[x] * one : 0.5 + k[x] * one)
                }
                first.append(lo)
                count.append(n)
            }
        }
    }

    /// `image` resized to `width` x `height` with `filter`, as Pillow's
    /// `image.resize((width, height), filter)`. Throws when the result (or the intermediate
    /// image of the horizontal pass) is outside `ImageBounds`.
    public static func resize(_ image: RGBImage, width: Int, height: Int, filter: Filter = .bilinear) throws(ImageError) -> RGBImage {
        try ImageBounds.check(width: width, height: height, file: nil)
        if width == image.width && height == image.height { return image }
        let horizontal = Taps(inSize: image.width, outSize: width, filter: filter)
        let vertical = Taps(inSize: image.height, outSize: height, filter: filter)
        if height == image.height { return horizontalPass(image, taps: horizontal, rows: 0..<image.height) }
        guard width != image.width else { return verticalPass(image, taps: vertical, rowOffset: 0) }
        // Pillow 13 runs the vertical pass first when the height shrinks, by more than twice as
        // many pixels as the width (python-pillow/Pillow#9549; checked on 1,166 random sizes).
        if height < image.height && image.height - height > 2 * (image.width - width) {
            guard ImageBounds.allows(width: image.width, height: height) else {
                throw ImageError(file: nil, .tooLarge(width: image.width, height: height))
            }
            return horizontalPass(verticalPass(image, taps: vertical, rowOffset: 0), taps: horizontal, rows: 0..<height)
        }
        // The horizontal pass covers only the rows the vertical pass reads.
        let rows = vertical.first[0]..<(vertical.first[height - 1] + vertical.count[height - 1])
        guard ImageBounds.allows(width: width, height: rows.count) else {
            throw ImageError(file: nil, .tooLarge(width: width, height: rows.count))
        }
        let temporary = horizontalPass(image, taps: horizontal, rows: rows)
        return verticalPass(temporary, taps: vertical, rowOffset: rows.lowerBound)
    }

    /// in: [H, W, 3] uint8, out: [rows, outW, 3] uint8.
    static func horizontalPass(_ image: RGBImage, taps: Taps, rows: Range<Int>) -> RGBImage {
        let outW = taps.first.count, inW = image.width, n = taps.taps
        let half = Int32(1) << (precisionBits - 1)
        return image.pixels.withUnsafeBufferPointer { src in
            taps.weights.withUnsafeBufferPointer { kk in
                RGBImage.make(width: outW, height: rows.count) { out in
                    for (r, y) in rows.enumerated() {
                        let row = src.baseAddress! + y * inW * 3
                        let o = out + r * outW * 3
                        for i in 0..<outW {
                            let k = kk.baseAddress! + i * n
                            var p = row + taps.first[i] * 3
                            var s0 = half, s1 = half, s2 = half
                            for t in 0..<taps.count[i] {
                                let w = k[t]
                                s0 &+= Int32(p[0]) &* w
                                s1 &+= Int32(p[1]) &* w
                                s2 &+= Int32(p[2]) &* w
                                p += 3
                            }
                            o[i * 3] = clip8(s0)
                            o[i * 3 + 1] = clip8(s1)
                            o[i * 3 + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
    }

    /// in: [H, W, 3] uint8 (row `rowOffset` of the taps is its row 0), out: [outH, W, 3] uint8;
    /// 8 bytes of a row at a time.
    static func verticalPass(_ image: RGBImage, taps: Taps, rowOffset: Int) -> RGBImage {
        let outH = taps.first.count, rowBytes = image.width * 3, n = taps.taps
        let half = Int32(1) << (precisionBits - 1)
        return image.pixels.withUnsafeBufferPointer { src in
            taps.weights.withUnsafeBufferPointer { kk in
                RGBImage.make(width: image.width, height: outH) { out in
                    for j in 0..<outH {
                        let k = kk.baseAddress! + j * n
                        let top = src.baseAddress! + (taps.first[j] - rowOffset) * rowBytes
                        let o = out + j * rowBytes
                        let count = taps.count[j]
                        var c = 0
                        while c + 8 <= rowBytes {
                            var s = SIMD8<Int32>(repeating: half)
                            var p = top + c
                            for t in 0..<count {
                                let v = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt8>.self)
                                s &+= SIMD8<Int32>(truncatingIfNeeded: v) &* k[t]
                                p += rowBytes
                            }
                            let clipped = (s &>> precisionBits).clamped(lowerBound: .zero, upperBound: SIMD8(repeating: 255))
                            UnsafeMutableRawPointer(o + c).storeBytes(of: SIMD8<UInt8>(truncatingIfNeeded: clipped), as: SIMD8<UInt8>.self)
                            c += 8
                        }
                        while c < rowBytes {
                            var s = half
                            for t in 0..<count { s &+= Int32(top[t * rowBytes + c]) &* k[t] }
                            o[c] = clip8(s)
                            c += 1
                        }
                    }
                }
            }
        }
    }

    @inline(__always)
    static func clip8(_ s: Int32) -> UInt8 { UInt8(clamping: s >> precisionBits) }

    /// The size torchvision's `Resize(size)` gives a `width` x `height` PIL image: the shorter
    /// side becomes `size`, the longer `int(size * long / short)` (truncated).
    public static func shorterSideSize(width: Int, height: Int, to size: Int) -> (width: Int, height: Int) {
        precondition(width >= 1 && height >= 1 && size >= 1, "shorterSideSize: \(width)x\(height) to \(size)")
        let (short, long) = width <= height ? (width, height) : (height, width)
        let newLong = Int(Double(size * long) / Double(short))
        return width <= height ? (size, newLong) : (newLong, size)
    }

    /// torchvision's `Resize(size, interpolation)` on a PIL image: the shorter side to `size`
    /// (`shorterSideSize`), resampled with `filter`; an image already that size is returned as is.
    public static func resizeShorterSide(_ image: RGBImage, to size: Int, filter: Filter = .bilinear) throws(ImageError) -> RGBImage {
        guard size >= 1 else { throw ImageError(file: nil, .zeroSize(width: size, height: size)) }
        guard size <= ImageBounds.maxSide else { throw ImageError(file: nil, .tooLarge(width: size, height: size)) }
        let target = shorterSideSize(width: image.width, height: image.height, to: size)
        return try resize(image, width: target.width, height: target.height, filter: filter)
    }

    /// torchvision's `CenterCrop((height, width))`: the offsets are `round((side - crop) / 2)`
    /// with Python's round-half-to-even; a crop larger than the image pads it with black first,
    /// `(crop - side) // 2` before it.
    public static func centerCrop(_ image: RGBImage, width: Int, height: Int) throws(ImageError) -> RGBImage {
        try ImageBounds.check(width: width, height: height, file: nil)
        let left = offset(side: image.width, crop: width), top = offset(side: image.height, crop: height)
        if left == 0 && top == 0 && width == image.width && height == image.height { return image }
        return image.pixels.withUnsafeBufferPointer { src in
            RGBImage.make(width: width, height: height) { out in
                out.initialize(repeating: 0, count: width * height * 3)
                // Source columns [x0, x1) and rows [y0, y1) that land inside the crop.
                let x0 = max(left, 0), x1 = min(left + width, image.width)
                let y0 = max(top, 0), y1 = min(top + height, image.height)
                guard x0 < x1 else { return }
                for y in max(y0, 0)..<max(y1, y0) {
                    (out + ((y - top) * width + (x0 - left)) * 3)
                        .update(from: src.baseAddress! + (y * image.width + x0) * 3, count: (x1 - x0) * 3)
                }
            }
        }
    }

    /// Where the crop starts in the image (negative: the image starts inside the crop).
    static func offset(side: Int, crop: Int) -> Int {
        if crop > side { return -((crop - side) / 2) }
        return Int((Double(side - crop) / 2).rounded(.toNearestOrEven))
    }

    /// `Resize(size)` then `CenterCrop(size)`: the training-image transform of diffusers'
    /// train_text_to_image.py (with `--center_crop`), giving a `size` x `size` image.
    public static func resizeAndCenterCrop(_ image: RGBImage, to size: Int, filter: Filter = .bilinear) throws(ImageError) -> RGBImage {
        try centerCrop(resizeShorterSide(image, to: size, filter: filter), width: size, height: size)
    }
}
