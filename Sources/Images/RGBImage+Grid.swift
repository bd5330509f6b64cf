extension RGBImage {
    /// `images` laid out in `rows` x `cols` cells, row by row, as diffusers' `make_image_grid`
    /// does: every cell has the first image's size, each image is pasted at its cell's top-left
    /// corner (cropped to the grid where it is larger, black around it where it is smaller), and
    /// `images.count` must equal `rows * cols`.
    public static func grid(_ images: [RGBImage], rows: Int, cols: Int) throws(ImageError) -> RGBImage {
        guard rows >= 1, cols >= 1, rows <= images.count, cols <= images.count, images.count == rows * cols else {
            throw ImageError(file: nil, .invalid("a \(rows) x \(cols) grid takes exactly \(rows) x \(cols) images, not \(images.count)"))
        }
        let (cellW, cellH) = (images[0].width, images[0].height)
        let (width, height) = (cols * cellW, rows * cellH)
        try ImageBounds.check(width: width, height: height, file: nil)
        return make(width: width, height: height) { out in
            out.initialize(repeating: 0, count: width * height * 3)
            for (i, image) in images.enumerated() {
                let (x0, y0) = (i % cols * cellW, i / cols * cellH)
                let w = min(image.width, width - x0), h = min(image.height, height - y0)
                image.pixels.withUnsafeBufferPointer { src in
                    for y in 0..<h {
                        (out + ((y0 + y) * width + x0) * 3).update(from: src.baseAddress! + y * image.width * 3, count: w * 3)
                    }
                }
            }
        }
    }
}
