/* Whole reads and writes over descriptors, retrying short transfers and
 * interrupted calls: the loops every file-handling piece needs. */
#ifndef PP_COMMON_IO_H
#define PP_COMMON_IO_H

#include <stddef.h>
#include <stdint.h>

/* All n bytes, retrying short and interrupted calls; 0 or -1 (errno). */
int pp_write_all(int fd, const void *data, size_t n);
/* n bytes at offset `at`; -1 on an error or when the file ends first. */
int pp_read_at(int fd, void *buf, size_t n, uint64_t at);
/* fsync of a directory, which makes the renames in it durable; 0 or -1. */
int pp_sync_dir(const char *dir);

#endif
