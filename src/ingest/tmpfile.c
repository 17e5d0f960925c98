/* The token store's temporary files: created in a directory and unlinked
 * at once, written through a buffer. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/error.h"
#include "common/io.h"
#include "ingest/tmpfile.h"

/* A fresh name: prefix and PP_TMPFILE_RANDOM characters, from the clock,
 * the process and the attempt (mkstemp's idea, but relative to dirfd). */
static void random_name(char *out, size_t cap, const char *head,
                        const void *salt, unsigned attempt)
{
    static const char abc[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                 ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)salt ^
                 ((uint64_t)attempt * 0x9E3779B97F4A7C15u);
    char r[PP_TMPFILE_RANDOM + 1];
    for (int i = 0; i < PP_TMPFILE_RANDOM; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        r[i] = abc[(x >> 33) % (sizeof abc - 1)];
    }
    r[PP_TMPFILE_RANDOM] = '\0';
    size_t n = strlen(head);
    if (n + sizeof r > cap) /* the caller leaves room: never */
        n = cap - sizeof r;
    memcpy(out, head, n);
    memcpy(out + n, r, sizeof r);
}

/* Creates and at once unlinks a file in dir: it vanishes with its last
 * descriptor, whatever way the process ends. */
int pp_tmpfile_open(pp_tmpfile *f, int dirfd, const char *dir,
                    const char *prefix, const prepack_allocator *a,
                    prepack_diag *diag)
{
    char head[4096];
    int len = dirfd >= 0 ? snprintf(head, sizeof head, "%s",
                                    prefix ? prefix : "prepack-tokens-")
                         : snprintf(head, sizeof head, "%s/%s", dir,
                                    prefix ? prefix : "prepack-tokens-");
    if (len < 0 || (size_t)len + PP_TMPFILE_RANDOM >= sizeof head)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "temporary directory name too long: %s", dir);
    f->buf = pp_alloc(a, PP_TMPFILE_BUFFER, 1);
    if (!f->buf)
        return pp_out_of_memory(diag);
    f->dirfd = dirfd >= 0 ? dirfd : AT_FDCWD;
    char path[4096];
    f->fd = -1;
    for (unsigned i = 0; f->fd < 0 && i < 100; i++) {
        random_name(path, sizeof path, head, f, i);
        f->fd = openat(f->dirfd, path,
                       O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600);
        if (f->fd < 0 && errno != EEXIST)
            break;
    }
    if (f->fd < 0) {
        int e = errno;
        pp_free(a, f->buf);
        f->buf = NULL;
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot create a temporary file in %s: %s", dir,
                       strerror(e));
    }
    f->path[0] = '\0';
    if (prefix)
        snprintf(f->path, sizeof f->path, "%s", path);
    else
        unlinkat(f->dirfd, path, 0);
    f->used = 0;
    f->size = 0;
    return PREPACK_OK;
}

void pp_tmpfile_take_name(pp_tmpfile *f, char *out, size_t cap)
{
    snprintf(out, cap, "%s", f->path);
    f->path[0] = '\0';
}

void pp_tmpfile_close(pp_tmpfile *f, const prepack_allocator *a)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->fd >= 0 && f->path[0])
        unlinkat(f->dirfd, f->path, 0);
    f->path[0] = '\0';
    pp_free(a, f->buf);
    f->fd = -1;
    f->buf = NULL;
}

int pp_tmpfile_flush(pp_tmpfile *f, prepack_diag *diag)
{
    if (f->used && pp_write_all(f->fd, f->buf, f->used) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "writing the token store failed: %s", strerror(errno));
    f->used = 0;
    return PREPACK_OK;
}

/* Room for `bytes` more in the buffer (bytes <= PP_TMPFILE_BUFFER). */
unsigned char *pp_tmpfile_reserve(pp_tmpfile *f, size_t bytes,
                                  prepack_diag *diag)
{
    if (f->used + bytes > PP_TMPFILE_BUFFER &&
        pp_tmpfile_flush(f, diag) != PREPACK_OK)
        return NULL;
    unsigned char *p = f->buf + f->used;
    f->used += bytes;
    f->size += bytes;
    return p;
}
