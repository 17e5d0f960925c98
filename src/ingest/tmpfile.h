/* The token store's temporary files: unlinked the moment they are made,
 * so they vanish with the process however it ends, and written through a
 * buffer. Used by store.c alone. */
#ifndef PP_INGEST_TMPFILE_H
#define PP_INGEST_TMPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

enum { PP_TMPFILE_BUFFER = 1 << 20, PP_TMPFILE_RANDOM = 6 };

typedef struct pp_tmpfile {
    int fd;             /* -1 when closed */
    unsigned char *buf; /* PP_TMPFILE_BUFFER bytes */
    size_t used;
    uint64_t size;   /* bytes written, flushed or not */
    int dirfd;       /* what path is relative to (AT_FDCWD: a path) */
    char path[4096]; /* a kept file's name; "" once unlinked */
} pp_tmpfile;

/* Creates (O_EXCL | O_NOFOLLOW: never through a planted link) and at
 * once unlinks a file in dir, or, with dirfd >= 0, in the directory
 * behind dirfd (dir then only names it in messages). With a name prefix
 * instead, the file keeps its name (prefix and PP_TMPFILE_RANDOM
 * characters) for its owner to take (pp_tmpfile_take_name): a scan task's
 * token file, written once. */
int pp_tmpfile_open(pp_tmpfile *f, int dirfd, const char *dir,
                    const char *prefix, const prepack_allocator *a,
                    prepack_diag *diag);
/* The kept file's name into out (relative to dirfd when one was given);
 * closing no longer removes it. */
void pp_tmpfile_take_name(pp_tmpfile *f, char *out, size_t cap);
/* Closes it (fd -1 is fine; a kept file is removed) and frees its
 * buffer. */
void pp_tmpfile_close(pp_tmpfile *f, const prepack_allocator *a);
int pp_tmpfile_flush(pp_tmpfile *f, prepack_diag *diag);
/* Room for `bytes` more in the buffer (bytes <= PP_TMPFILE_BUFFER),
 * flushing first if needed; NULL (diag says why) when a flush fails. */
unsigned char *pp_tmpfile_reserve(pp_tmpfile *f, size_t bytes,
                                  prepack_diag *diag);

#endif
