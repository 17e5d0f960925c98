/* The job's own files (dir/.prepack-job, docs/SCALE.md): little-endian
 * records written in one pass through a hash and read back through a
 * bounded cursor. One visitor function per record type serves both
 * directions, so what is written and what is read cannot drift. */
#ifndef PP_STEPS_RECORD_H
#define PP_STEPS_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "prepack.h"

typedef struct pp_rec {
    int reading;
    /* writing: a temporary file and the running hash of what went in */
    FILE *out;
    int dirfd;
    const char *dir;
    char name[64];
    void *hash; /* XXH64_state_t */
    uint64_t written;
    /* reading: a whole file in memory */
    const unsigned char *in;
    size_t in_len, pos;
    int bad; /* read past the end, or a value out of range */
} pp_rec;

void pp_rec_u32(pp_rec *r, uint32_t *v);
void pp_rec_u64(pp_rec *r, uint64_t *v);
void pp_rec_i32(pp_rec *r, int32_t *v);
void pp_rec_f64(pp_rec *r, double *v);
void pp_rec_bytes(pp_rec *r, void *p, size_t n);
/* Bytes of any length, or none: *p (malloc'd when read; NULL = none, not
 * the same as empty) and *n. */
void pp_rec_blob(pp_rec *r, char **p, size_t *n);
/* A string up to cap - 1 bytes (NUL-terminated when read). */
void pp_rec_str(pp_rec *r, char *s, size_t cap);

/* Job files are named relative to the job directory's descriptor
 * (pp_job's job_fd), never by a path: a symbolic link planted in the
 * directory is neither followed nor written through. `dir` only names the
 * directory in messages. */

/* Writing: creates NAME.tmp (O_EXCL | O_NOFOLLOW, after removing a killed
 * run's); pp_rec_save appends the hash of everything written, fsyncs,
 * renames to NAME. pp_rec_abandon removes the temporary. */
int pp_rec_create(pp_rec *r, int dirfd, const char *dir, const char *name,
                  prepack_diag *diag);
int pp_rec_save(pp_rec *r, prepack_diag *diag);
void pp_rec_abandon(pp_rec *r);

/* Reading: the whole file (a regular file, not a link), its trailing hash
 * checked. PREPACK_EIO when it is missing (errno ENOENT: *missing set),
 * PREPACK_ECORRUPT when the hash fails. The caller frees r->in
 * (pp_rec_release). */
int pp_rec_load(pp_rec *r, int dirfd, const char *dir, const char *name,
                int *missing, prepack_diag *diag);
void pp_rec_release(pp_rec *r);

/* NAME opened read-only for reading back: a regular file, never through a
 * link (O_NOFOLLOW; a FIFO does not block); -1 otherwise. *size = its
 * size. */
int pp_rec_open(int dirfd, const char *name, uint64_t *size);

/* Streams a file written through pp_rec and checks its trailing hash:
 * 0 when good (*data_size = its bytes before the hash, *hash = their
 * xxh64), else -1. */
int pp_rec_verify(int dirfd, const char *name, uint64_t *data_size,
                  uint64_t *hash);

#endif
