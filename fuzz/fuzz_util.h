/* Helpers the fuzz targets share: writing the input to files in a fresh
 * temporary directory and removing them again. Header-only. */
#ifndef PREPACK_FUZZ_UTIL_H
#define PREPACK_FUZZ_UTIL_H

#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "prepack.h"

typedef struct fuzz_dir {
    char path[64];
    char names[4][32];
    int count;
} fuzz_dir;

/* 0 on success: a new empty directory under /tmp. */
static inline int fuzz_dir_make(fuzz_dir *d)
{
    memset(d, 0, sizeof *d);
    strcpy(d->path, "/tmp/prepack-fuzz-XXXXXX");
    return mkdtemp(d->path) ? 0 : -1;
}

/* Writes n bytes to dir/name (remembered for removal); the full path goes
 * to out (when not NULL). */
static inline void fuzz_dir_put(fuzz_dir *d, const char *name, const void *p,
                                size_t n, char *out, size_t out_size)
{
    char full[128];
    snprintf(full, sizeof full, "%s/%s", d->path, name);
    FILE *f = fopen(full, "wb");
    if (f) {
        if (n)
            fwrite(p, 1, n, f);
        fclose(f);
    }
    if (d->count < 4)
        snprintf(d->names[d->count++], sizeof d->names[0], "%s", name);
    if (out)
        snprintf(out, out_size, "%s", full);
}

static inline void fuzz_dir_remove(fuzz_dir *d)
{
    char full[128];
    for (int i = 0; i < d->count; i++) {
        snprintf(full, sizeof full, "%s/%s", d->path, d->names[i]);
        unlink(full);
    }
    rmdir(d->path);
}

/* Opens the set in dir and, when it opens, verifies it and reads its
 * first max_rows rows: every outcome but a crash or a sanitizer report
 * is fine (the targets that take a manifest). */
static inline void fuzz_read_set(const char *dir, size_t max_rows)
{
    prepack_reader *r = NULL;
    prepack_diag d;
    if (prepack_reader_open(&r, dir, NULL, &d) == PREPACK_OK) {
        prepack_reader_verify(r, NULL, NULL);
        size_t rows = prepack_reader_row_count(r);
        prepack_row row;
        for (size_t i = 0; i < rows && i < max_rows; i++)
            prepack_reader_row(r, i, &row, &d);
    }
    prepack_reader_free(r);
}

/* Removes a directory of plain files (what a writer leaves). */
static inline void fuzz_remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    char full[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' &&
            (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0)))
            continue;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        unlink(full);
    }
    closedir(d);
    rmdir(path);
}

#endif
