#ifndef ALTER_IMAGE_IO_H
#define ALTER_IMAGE_IO_H
#include <stddef.h>
#include <stdint.h>

/// Outcome of a decode or encode. libpng and libjpeg report errors by longjmp; these functions
/// catch them internally and return one of these codes with a message instead.
enum alter_image_status {
    ALTER_IMAGE_OK = 0,
    /// The data breaks the format (bad CRC, bad marker, bad compressed data...).
    ALTER_IMAGE_CORRUPT = 1,
    /// The data ends before the image does.
    ALTER_IMAGE_TRUNCATED = 2,
    /// The declared width or height is zero.
    ALTER_IMAGE_ZERO_SIZE = 3,
    /// The declared size exceeds the caller's bounds (refused before any pixel buffer is allocated).
    ALTER_IMAGE_TOO_LARGE = 4,
    /// A valid image of a kind that is not converted (CMYK JPEG...).
    ALTER_IMAGE_UNSUPPORTED = 5,
    /// Memory allocation failed.
    ALTER_IMAGE_NO_MEMORY = 6,
};

/// What a decoder learnt about the image and, on failure, why it failed.
typedef struct {
    /// Declared size (0 until the header is read).
    uint32_t width, height;
    /// PNG: colour type (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA); JPEG: libjpeg's
    /// J_COLOR_SPACE of the file (1 gray, 2 RGB, 3 YCbCr, 4 CMYK, 5 YCCK).
    int color_type;
    /// PNG: bits per sample (1, 2, 4, 8, 16); JPEG: 8.
    int bit_depth;
    /// PNG: 1 when Adam7-interlaced; JPEG: 1 when progressive.
    int interlaced;
    /// PNG: 1 when a tRNS chunk is present (ignored, as Pillow's convert("RGB") ignores it).
    int has_trns;
    /// NUL-terminated reason when the status is not ALTER_IMAGE_OK.
    char message[200];
} alter_image_info;

/// Decodes a whole PNG held in memory to 8-bit RGB as Pillow's `Image.open(f).convert("RGB")`
/// does: gray replicated (1/2/4-bit gray scaled to 0..255), 16-bit gray clamped to 255, other
/// 16-bit samples reduced to their high byte, palette looked up (indexes past the palette give
/// black), alpha and tRNS dropped. Gamma, ICC and other ancillary chunks are ignored.
/// The size is checked against `max_side` and `max_pixels` from IHDR before anything is
/// allocated. Every CRC (critical and ancillary chunks) is checked. On success `*pixels` holds
/// width*height*3 bytes (free with `alter_image_free`).
int alter_png_decode_rgb(const uint8_t *data, size_t size, uint32_t max_side, uint64_t max_pixels,
                         uint8_t **pixels, alter_image_info *info);

/// Decodes a whole JPEG held in memory to 8-bit RGB with libjpeg's defaults (islow IDCT, fancy
/// upsampling), as Pillow does: YCbCr converted by libjpeg, gray replicated; CMYK and YCCK are
/// refused (ALTER_IMAGE_UNSUPPORTED). Any libjpeg warning (corrupt data, premature end) is an
/// error. The size is checked from the frame header before decoding. On success `*pixels`
/// holds width*height*3 bytes (free with `alter_image_free`).
int alter_jpeg_decode_rgb(const uint8_t *data, size_t size, uint32_t max_side, uint64_t max_pixels,
                          uint8_t **pixels, alter_image_info *info);

/// Encodes width*height*3 bytes of 8-bit RGB as a non-interlaced PNG with zlib level
/// `level` (0-9), libpng's default filter choice and no ancillary chunks: the same input gives
/// the same bytes. On success `*png` holds `*png_size` bytes (free with `alter_image_free`).
int alter_png_encode_rgb(const uint8_t *pixels, uint32_t width, uint32_t height, int level,
                         uint8_t **png, size_t *png_size, alter_image_info *info);

/// Frees a buffer returned by the functions above.
void alter_image_free(void *p);

#endif
