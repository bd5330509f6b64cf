#define _GNU_SOURCE
#include "file_copy.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

ssize_t alter_copy_file_range(int in_fd, int64_t *in_off, int out_fd, size_t len) {
#if defined(__linux__)
    loff_t off = (loff_t)*in_off;
    ssize_t r = copy_file_range(in_fd, &off, out_fd, NULL, len, 0);
    if (r > 0) *in_off = (int64_t)off;
    return r;
#else
    (void)in_fd; (void)in_off; (void)out_fd; (void)len;
    errno = ENOSYS;
    return -1;
#endif
}

void alter_start_writeback(int fd, int64_t offset, int64_t len) {
#if defined(__linux__)
    (void)sync_file_range(fd, (off64_t)offset, (off64_t)len, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)len;
#endif
}
