/* Whole reads and writes over descriptors, retrying short transfers and
 * interrupted calls: the loops every file-handling piece needs. */
#ifndef PP_COMMON_IO_H
#define PP_COMMON_IO_H

#include <stddef.h>
#include <stdint.h>

/* All n bytes, retrying short and interrupted calls; 0 or -1 (errno). */
int pp_write_all(int fd, const void *data, size_t n);
/* n bytes at offset `at`; -1 on an error (errno) or when the file ends
 * first (errno 0: say why with pp_read_why, never strerror). */
int pp_read_at(int fd, void *buf, size_t n, uint64_t at);
/* Why a read of bytes [at, at + n) of fd failed (pp_read_at, or a hash
 * over it), in buf: strerror(errno) for an error; for errno 0, where the
 * file ended and the size fstat said, e.g. "the file ended after 22
 * bytes, its size says 4096" (a file that shrank while read, or a /proc
 * or /sys file whose size is not its contents). Returns buf. */
const char *pp_read_why(int fd, uint64_t at, uint64_t n, char *buf,
                        size_t cap);
/* A directory's path as one to open with O_NOFOLLOW and to name things
 * beside, in buf: the one spelling of a user's path that everything
 * derived from it uses. Empty and "." parts are dropped ("out/",
 * "out//", "./out", "a/./out", "out/." give "out", "." and "./" give
 * "."); ".." parts stay, for the kernel to resolve ("a/../out": through
 * a as it is). "link/" and "link/." would resolve the link, so
 * O_NOFOLLOW would not see it: the result never ends in "/" or "/.".
 * NULL (errno ENAMETOOLONG) when it does not fit, or (errno ELOOP) when
 * its last part is "..", which names what is beyond the part before it:
 * no link check could hold there. */
const char *pp_dir_path(const char *dir, char *buf, size_t cap);
/* fsync of a directory, which makes the renames in it durable; 0 or -1. */
int pp_sync_dir(const char *dir);

/* path opened read-only, and its size; -1 when it cannot be (errno). */
int pp_open_sized(const char *path, uint64_t *size);
/* XXH64 (seed 0) of the first n bytes of fd; 0, or -1 on a read error. */
int pp_hash_fd(int fd, uint64_t n, uint64_t *hash);
/* The xxh64 and size of a whole file (a shard); 0, or -1 when it cannot
 * be read. */
int pp_hash_file(const char *path, uint64_t *hash, uint64_t *size);

/* A file's sampled hash: enough of a large file to notice a change
 * without reading it all. Files of at most PP_SAMPLE_BLOCKS blocks are
 * hashed whole; larger ones as the PP_SAMPLE_BLOCKS blocks of
 * PP_SAMPLE_BLOCK bytes starting at floor(b x (size - PP_SAMPLE_BLOCK) /
 * (PP_SAMPLE_BLOCKS - 1)), b = 0 .. PP_SAMPLE_BLOCKS - 1, concatenated
 * (the first and the last block among them). docs/FORMAT.md, version 2. */
enum { PP_SAMPLE_BLOCK = 4096, PP_SAMPLE_BLOCKS = 64 };
int pp_sample_hash_fd(int fd, uint64_t size, uint64_t *hash);

#endif
