/* Whole reads and writes over descriptors, retrying short transfers and
 * interrupted calls: the loops every file-handling piece needs. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>

#include "common/io.h"

int pp_write_all(int fd, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0)
            errno = EIO; /* no progress and no reason given */
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int pp_read_at(int fd, void *buf, size_t n, uint64_t at)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t)at);
        if (got < 0 && errno == EINTR)
            continue;
        if (got == 0)
            errno = 0; /* the file ends first: pp_read_why says so */
        if (got <= 0)
            return -1;
        p += got;
        at += (uint64_t)got;
        n -= (size_t)got;
    }
    return 0;
}

enum { WHY_COUNT_MAX = 1 << 20 }; /* bytes read to find where a file ends */

/* Where fd's data ends, from `at` on, up to at + n (a read past its
 * size); at + n and beyond when it could not be told within
 * WHY_COUNT_MAX bytes. */
static uint64_t data_end(int fd, uint64_t at, uint64_t n)
{
    unsigned char buf[4096];
    uint64_t end = at, stop = at + (n < WHY_COUNT_MAX ? n : WHY_COUNT_MAX);
    while (end < stop) {
        size_t k = stop - end < sizeof buf ? (size_t)(stop - end) : sizeof buf;
        ssize_t got = pread(fd, buf, k, (off_t)end);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return end;
        end += (uint64_t)got;
    }
    return end;
}

const char *pp_read_why(int fd, uint64_t at, uint64_t n, char *buf,
                        size_t cap)
{
    if (errno) {
        snprintf(buf, cap, "%s", strerror(errno));
        return buf;
    }
    struct stat st;
    unsigned long long size =
        fstat(fd, &st) == 0 ? (unsigned long long)st.st_size : 0;
    uint64_t end = data_end(fd, at, n);
    if (end < at + n)
        snprintf(buf, cap, "the file ended after %llu bytes, its size says "
                           "%llu (a file that changed while read, or a /proc "
                           "or /sys file whose size is not its contents)",
                 (unsigned long long)end, size);
    else
        snprintf(buf, cap, "the file ended before byte %llu, its size says "
                           "%llu (a file that changed while read)",
                 (unsigned long long)(at + n), size);
    return buf;
}

int pp_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

const char *pp_dir_path(const char *dir, char *buf, size_t cap)
{
    /* one pass over the parts between slashes: empty and "." parts
     * dropped, the rest kept as given (".." too: the kernel resolves it
     * through what the part before it is, link or not) */
    size_t n = 0, last = 0;
    const char *p = dir;
    if (*p == '/')
        buf[n++] = '/';
    while (*p) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0 || (len == 1 && p[0] == '.')) {
            p += len;
            continue;
        }
        size_t sep = n > 0 && buf[n - 1] != '/';
        if (n + sep + len >= cap) {
            errno = ENAMETOOLONG;
            return NULL;
        }
        if (sep)
            buf[n++] = '/';
        last = n;
        memcpy(buf + n, p, len);
        n += len;
        p += len;
    }
    if (n == 0) /* "." and "./": the working directory */
        buf[n++] = '.';
    buf[n] = 0;
    if (!strcmp(buf + last, "..")) {
        errno = ELOOP;
        return NULL;
    }
    return buf;
}

int pp_open_sized(const char *path, uint64_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        fd = -1;
    }
    *size = fd >= 0 ? (uint64_t)st.st_size : 0;
    return fd;
}

enum { HASH_BUFFER = 1 << 20 };

int pp_hash_fd(int fd, uint64_t n, uint64_t *hash)
{
    XXH64_state_t h;
    unsigned char *buf = malloc(HASH_BUFFER);
    if (!buf)
        return -1;
    XXH64_reset(&h, 0);
    int rc = 0;
    for (uint64_t done = 0; rc == 0 && done < n;) {
        size_t k = n - done > HASH_BUFFER ? HASH_BUFFER : (size_t)(n - done);
        rc = pp_read_at(fd, buf, k, done);
        if (rc == 0)
            XXH64_update(&h, buf, k);
        done += k;
    }
    if (rc == 0)
        *hash = XXH64_digest(&h);
    free(buf);
    return rc;
}

int pp_hash_file(const char *path, uint64_t *hash, uint64_t *size)
{
    *hash = 0;
    int fd = pp_open_sized(path, size);
    if (fd < 0)
        return -1;
    int rc = pp_hash_fd(fd, *size, hash);
    close(fd);
    return rc;
}

int pp_sample_hash_fd(int fd, uint64_t size, uint64_t *hash)
{
    const uint64_t block = PP_SAMPLE_BLOCK, blocks = PP_SAMPLE_BLOCKS;
    if (size <= block * blocks)
        return pp_hash_fd(fd, size, hash);
    XXH64_state_t h;
    unsigned char buf[PP_SAMPLE_BLOCK];
    XXH64_reset(&h, 0);
    for (uint64_t b = 0; b < blocks; b++) {
        /* b x (size - block) stays below 2^64 for any file under 2^58 B */
        uint64_t at = b * (size - block) / (blocks - 1);
        if (pp_read_at(fd, buf, sizeof buf, at) != 0)
            return -1;
        XXH64_update(&h, buf, sizeof buf);
    }
    *hash = XXH64_digest(&h);
    return 0;
}
