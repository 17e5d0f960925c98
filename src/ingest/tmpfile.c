/* The token store's temporary files: created in a directory and unlinked
 * at once, written through a buffer. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/error.h"
#include "common/io.h"
#include "ingest/tmpfile.h"

/* Creates and at once unlinks a file in dir: it vanishes with its last
 * descriptor, whatever way the process ends. */
int pp_tmpfile_open(pp_tmpfile *f, const char *dir, const char *prefix,
                    const prepack_allocator *a, prepack_diag *diag)
{
    char path[4096];
    int len = snprintf(path, sizeof path, "%s/%sXXXXXX", dir,
                       prefix ? prefix : "prepack-tokens-");
    if (len < 0 || (size_t)len >= sizeof path)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "temporary directory name too long: %s", dir);
    f->buf = pp_alloc(a, PP_TMPFILE_BUFFER, 1);
    if (!f->buf)
        return pp_out_of_memory(diag);
    f->fd = mkstemp(path);
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
        memcpy(f->path, path, (size_t)len + 1);
    else
        unlink(path);
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
        unlink(f->path);
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
