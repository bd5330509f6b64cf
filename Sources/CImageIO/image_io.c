// PNG and JPEG through libpng and libjpeg(-turbo). Both libraries report errors by longjmp, which
// Swift cannot take part in: every setjmp/longjmp stays inside this file, and each function
// returns an alter_image_status with a message instead. Nothing here prints (libpng's warnings
// and libjpeg's messages go to handlers that only record them).
#include "image_io.h"
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

static void set_message(alter_image_info *info, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(info->message, sizeof info->message, format, args);
    va_end(args);
}

static int fail(alter_image_info *info, int status, const char *message) {
    set_message(info, "%s", message);
    return status;
}

/// Checks a declared size against the caller's bounds; ALTER_IMAGE_OK or the failure, with a message.
static int check_size(alter_image_info *info, uint32_t w, uint32_t h, uint32_t max_side, uint64_t max_pixels) {
    info->width = w;
    info->height = h;
    if (w == 0 || h == 0) {
        set_message(info, "declared size %ux%u has no pixels", w, h);
        return ALTER_IMAGE_ZERO_SIZE;
    }
    if (w > max_side || h > max_side || (uint64_t)w * h > max_pixels) {
        set_message(info, "declared size %ux%u exceeds the bounds (at most %u pixels a side and %llu pixels)",
                    w, h, max_side, (unsigned long long)max_pixels);
        return ALTER_IMAGE_TOO_LARGE;
    }
    return ALTER_IMAGE_OK;
}

void alter_image_free(void *p) { free(p); }

// MARK: PNG

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    alter_image_info *info;
    int status;
    uint8_t *out;     // RGB result
    uint8_t *native;  // decoded rows before conversion
    png_bytep *rows;
    // Encoder output.
    uint8_t *buf;
    size_t buf_size, buf_cap;
} png_context;

static void png_on_error(png_structp png, png_const_charp message) {
    png_context *c = (png_context *)png_get_error_ptr(png);
    if (c->status == ALTER_IMAGE_OK) {
        c->status = ALTER_IMAGE_CORRUPT;
        set_message(c->info, "%s", message);
    }
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

static void png_read_memory(png_structp png, png_bytep dst, size_t n) {
    png_context *c = (png_context *)png_get_io_ptr(png);
    if (n > c->size - c->pos) {
        c->status = ALTER_IMAGE_TRUNCATED;
        set_message(c->info, "the file ends early (%zu bytes; the image needs more)", c->size);
        png_error(png, "truncated");
    }
    memcpy(dst, c->data + c->pos, n);
    c->pos += n;
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/// One decoded PNG row (8 or 16 bits per sample, 1/2/4-bit samples unpacked to a byte each) to
/// RGB as Pillow converts it.
static void png_row_to_rgb(const uint8_t *in, uint8_t *out, uint32_t w, int color_type, int bit_depth,
                           const png_color *palette, int palette_size) {
    uint32_t x;
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
        if (bit_depth == 16) {
            // Pillow's mode I;16 to RGB clamps to 255.
            for (x = 0; x < w; x++) {
                uint8_t v = in[2 * x] == 0 ? in[2 * x + 1] : 255;
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = v;
            }
        } else {
            int scale = bit_depth == 1 ? 255 : bit_depth == 2 ? 85 : bit_depth == 4 ? 17 : 1;
            for (x = 0; x < w; x++) {
                uint8_t v = (uint8_t)(in[x] * scale);
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = v;
            }
        }
        break;
    case PNG_COLOR_TYPE_RGB:
        if (bit_depth == 16) {
            for (x = 0; x < w; x++) {
                out[3 * x] = in[6 * x];
                out[3 * x + 1] = in[6 * x + 2];
                out[3 * x + 2] = in[6 * x + 4];
            }
        } else {
            memcpy(out, in, (size_t)w * 3);
        }
        break;
    case PNG_COLOR_TYPE_PALETTE:
        for (x = 0; x < w; x++) {
            int i = in[x];
            if (i < palette_size) {
                out[3 * x] = palette[i].red;
                out[3 * x + 1] = palette[i].green;
                out[3 * x + 2] = palette[i].blue;
            } else {
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = 0;
            }
        }
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
        int step = bit_depth == 16 ? 4 : 2;
        for (x = 0; x < w; x++) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[step * x];
        break;
    }
    case PNG_COLOR_TYPE_RGB_ALPHA: {
        int step = bit_depth == 16 ? 2 : 1;
        for (x = 0; x < w; x++) {
            out[3 * x] = in[4 * step * x];
            out[3 * x + 1] = in[4 * step * x + step];
            out[3 * x + 2] = in[4 * step * x + 2 * step];
        }
        break;
    }
    }
}

int alter_png_decode_rgb(const uint8_t *data, size_t size, uint32_t max_side, uint64_t max_pixels,
                         uint8_t **pixels, alter_image_info *info) {
    memset(info, 0, sizeof *info);
    *pixels = NULL;
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size < 8 || memcmp(data, signature, 8) != 0) return fail(info, ALTER_IMAGE_CORRUPT, "no PNG signature");
    // IHDR read by hand first, so the size is refused before libpng allocates anything for it.
    if (size < 8 + 8 + 13 + 4) return fail(info, ALTER_IMAGE_TRUNCATED, "the file ends inside the PNG header (IHDR)");
    if (be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0)
        return fail(info, ALTER_IMAGE_CORRUPT, "the first chunk is not a 13-byte IHDR");
    info->bit_depth = data[24];
    info->color_type = data[25];
    info->interlaced = data[28] != 0;
    int status = check_size(info, be32(data + 16), be32(data + 20), max_side, max_pixels);
    if (status != ALTER_IMAGE_OK) return status;

    png_context c;
    memset(&c, 0, sizeof c);
    c.data = data;
    c.size = size;
    c.info = info;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_on_error, png_on_warning);
    if (!png) return fail(info, ALTER_IMAGE_NO_MEMORY, "cannot create the PNG reader");
    png_infop pinfo = png_create_info_struct(png);
    if (!pinfo) {
        png_destroy_read_struct(&png, NULL, NULL);
        return fail(info, ALTER_IMAGE_NO_MEMORY, "cannot create the PNG reader");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &pinfo, NULL);
        free(c.out);
        free(c.native);
        free(c.rows);
        return c.status == ALTER_IMAGE_OK ? ALTER_IMAGE_CORRUPT : c.status;
    }
    png_set_read_fn(png, &c, png_read_memory);
    // Every CRC is checked: a bad one is an error in ancillary chunks too.
    png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    png_read_info(png, pinfo);
    png_uint_32 w, h;
    int bit_depth, color_type, interlace;
    png_get_IHDR(png, pinfo, &w, &h, &bit_depth, &color_type, &interlace, NULL, NULL);
    info->has_trns = png_get_valid(png, pinfo, PNG_INFO_tRNS) != 0;
    png_colorp palette = NULL;
    int palette_size = 0;
    if (color_type == PNG_COLOR_TYPE_PALETTE && !png_get_PLTE(png, pinfo, &palette, &palette_size))
        png_error(png, "palette image without a PLTE chunk");
    png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, pinfo);
    size_t rowbytes = png_get_rowbytes(png, pinfo);
    c.out = (uint8_t *)malloc((size_t)w * h * 3);
    if (!c.out) {
        c.status = ALTER_IMAGE_NO_MEMORY;
        png_error(png, "out of memory");
    }
    if (passes > 1) {
        c.native = (uint8_t *)malloc(rowbytes * h);
        c.rows = (png_bytep *)malloc(sizeof(png_bytep) * h);
        if (!c.native || !c.rows) {
            c.status = ALTER_IMAGE_NO_MEMORY;
            png_error(png, "out of memory");
        }
        for (png_uint_32 y = 0; y < h; y++) c.rows[y] = c.native + rowbytes * y;
        png_read_image(png, c.rows);
        for (png_uint_32 y = 0; y < h; y++)
            png_row_to_rgb(c.rows[y], c.out + (size_t)y * w * 3, w, color_type, bit_depth, palette, palette_size);
    } else {
        c.native = (uint8_t *)malloc(rowbytes);
        if (!c.native) {
            c.status = ALTER_IMAGE_NO_MEMORY;
            png_error(png, "out of memory");
        }
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(png, c.native, NULL);
            png_row_to_rgb(c.native, c.out + (size_t)y * w * 3, w, color_type, bit_depth, palette, palette_size);
        }
    }
    // Reads to IEND, checking the CRC of every chunk after the image data.
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &pinfo, NULL);
    free(c.native);
    free(c.rows);
    *pixels = c.out;
    return ALTER_IMAGE_OK;
}

static void png_write_memory(png_structp png, png_bytep src, size_t n) {
    png_context *c = (png_context *)png_get_io_ptr(png);
    if (n > c->buf_cap - c->buf_size) {
        size_t cap = c->buf_cap ? c->buf_cap : 65536;
        while (cap - c->buf_size < n) cap *= 2;
        uint8_t *grown = (uint8_t *)realloc(c->buf, cap);
        if (!grown) {
            c->status = ALTER_IMAGE_NO_MEMORY;
            png_error(png, "out of memory");
        }
        c->buf = grown;
        c->buf_cap = cap;
    }
    memcpy(c->buf + c->buf_size, src, n);
    c->buf_size += n;
}

static void png_flush_memory(png_structp png) { (void)png; }

int alter_png_encode_rgb(const uint8_t *pixels, uint32_t width, uint32_t height, int level,
                         uint8_t **png_out, size_t *png_size, alter_image_info *info) {
    memset(info, 0, sizeof *info);
    *png_out = NULL;
    *png_size = 0;
    info->width = width;
    info->height = height;
    png_context c;
    memset(&c, 0, sizeof c);
    c.info = info;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c, png_on_error, png_on_warning);
    if (!png) return fail(info, ALTER_IMAGE_NO_MEMORY, "cannot create the PNG writer");
    png_infop pinfo = png_create_info_struct(png);
    if (!pinfo) {
        png_destroy_write_struct(&png, NULL);
        return fail(info, ALTER_IMAGE_NO_MEMORY, "cannot create the PNG writer");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &pinfo);
        free(c.buf);
        return c.status == ALTER_IMAGE_OK ? ALTER_IMAGE_CORRUPT : c.status;
    }
    png_set_write_fn(png, &c, png_write_memory, png_flush_memory);
    png_set_compression_level(png, level);
    png_set_IHDR(png, pinfo, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, pinfo);
    for (uint32_t y = 0; y < height; y++) png_write_row(png, pixels + (size_t)y * width * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &pinfo);
    *png_out = c.buf;
    *png_size = c.buf_size;
    return ALTER_IMAGE_OK;
}

// MARK: JPEG

typedef struct {
    struct jpeg_error_mgr pub;  // first: libjpeg's err pointer is cast to this struct
    jmp_buf jump;
    alter_image_info *info;
    int status;
    int created;
    uint8_t *out;
    uint8_t *row;
} jpeg_context;

static void jpeg_record(j_common_ptr cinfo, int status) {
    jpeg_context *c = (jpeg_context *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    if (c->status == ALTER_IMAGE_OK) {
        c->status = status;
        set_message(c->info, "%s", text);
    }
}

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_context *c = (jpeg_context *)cinfo->err;
    int code = cinfo->err->msg_code;
    int status = code == JERR_EMPTY_IMAGE ? ALTER_IMAGE_ZERO_SIZE
               : code == JERR_IMAGE_TOO_BIG ? ALTER_IMAGE_TOO_LARGE
               : code == JERR_OUT_OF_MEMORY ? ALTER_IMAGE_NO_MEMORY
               : code == JERR_INPUT_EOF || code == JERR_INPUT_EMPTY ? ALTER_IMAGE_TRUNCATED
               : ALTER_IMAGE_CORRUPT;
    jpeg_record(cinfo, status);
    longjmp(c->jump, 1);
}

/// Warnings (level -1: corrupt data, premature end) are errors; trace messages are dropped.
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    jpeg_context *c = (jpeg_context *)cinfo->err;
    jpeg_record(cinfo, cinfo->err->msg_code == JWRN_JPEG_EOF ? ALTER_IMAGE_TRUNCATED : ALTER_IMAGE_CORRUPT);
    longjmp(c->jump, 1);
}

static void jpeg_on_output(j_common_ptr cinfo) { (void)cinfo; }

int alter_jpeg_decode_rgb(const uint8_t *data, size_t size, uint32_t max_side, uint64_t max_pixels,
                          uint8_t **pixels, alter_image_info *info) {
    memset(info, 0, sizeof *info);
    *pixels = NULL;
    struct jpeg_decompress_struct cinfo;
    jpeg_context c;
    memset(&c, 0, sizeof c);
    c.info = info;
    cinfo.err = jpeg_std_error(&c.pub);
    c.pub.error_exit = jpeg_on_error;
    c.pub.emit_message = jpeg_on_message;
    c.pub.output_message = jpeg_on_output;
    if (setjmp(c.jump)) {
        if (c.created) jpeg_destroy_decompress(&cinfo);
        free(c.out);
        free(c.row);
        return c.status == ALTER_IMAGE_OK ? ALTER_IMAGE_CORRUPT : c.status;
    }
    jpeg_create_decompress(&cinfo);
    c.created = 1;
    // Progressive images keep every coefficient in memory; the size bound keeps this finite.
    cinfo.mem->max_memory_to_use = 1L << 30;
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        c.status = ALTER_IMAGE_CORRUPT;
        set_message(info, "holds tables only, no image");
        longjmp(c.jump, 1);
    }
    info->bit_depth = cinfo.data_precision;
    info->color_type = cinfo.jpeg_color_space;
    info->interlaced = cinfo.progressive_mode ? 1 : 0;
    c.status = check_size(info, cinfo.image_width, cinfo.image_height, max_side, max_pixels);
    if (c.status != ALTER_IMAGE_OK) longjmp(c.jump, 1);
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo.out_color_space = JCS_GRAYSCALE;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        c.status = ALTER_IMAGE_UNSUPPORTED;
        set_message(info, "is a %s JPEG; only gray, YCbCr and RGB JPEGs are read (convert it to RGB first)",
                    cinfo.jpeg_color_space == JCS_CMYK ? "CMYK" : "YCCK");
        longjmp(c.jump, 1);
    default:
        c.status = ALTER_IMAGE_UNSUPPORTED;
        set_message(info, "is a JPEG with %d components in an unknown colour space", cinfo.num_components);
        longjmp(c.jump, 1);
    }
    jpeg_start_decompress(&cinfo);
    uint32_t w = cinfo.output_width, h = cinfo.output_height;
    int channels = cinfo.output_components;
    c.out = (uint8_t *)malloc((size_t)w * h * 3);
    c.row = (uint8_t *)malloc((size_t)w * channels);
    if (!c.out || !c.row) {
        c.status = ALTER_IMAGE_NO_MEMORY;
        set_message(info, "out of memory");
        longjmp(c.jump, 1);
    }
    while (cinfo.output_scanline < h) {
        uint32_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {c.row};
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) {
            c.status = ALTER_IMAGE_TRUNCATED;
            set_message(info, "the image data ends at row %u of %u", y, h);
            longjmp(c.jump, 1);
        }
        uint8_t *o = c.out + (size_t)y * w * 3;
        if (channels == 1) {
            for (uint32_t x = 0; x < w; x++) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = c.row[x];
        } else {
            memcpy(o, c.row, (size_t)w * 3);
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(c.row);
    *pixels = c.out;
    return ALTER_IMAGE_OK;
}
