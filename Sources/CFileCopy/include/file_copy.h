#ifndef ALTER_FILE_COPY_H
#define ALTER_FILE_COPY_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// copy_file_range(2) from `in_fd` at `*in_off` to the current position of `out_fd`;
/// returns bytes copied, or -1 with errno set (ENOSYS where the call does not exist).
ssize_t alter_copy_file_range(int in_fd, int64_t *in_off, int out_fd, size_t len);

/// Starts writeback of a written range without waiting (sync_file_range WRITE on Linux, no-op
/// elsewhere), so that a final fsync has less left to do.
void alter_start_writeback(int fd, int64_t offset, int64_t len);

#endif
