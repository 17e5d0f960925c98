/* The input files a plan-only set references: measured by the writer,
 * checked and mapped by the reader. A file's identity is its size, a
 * sampled hash (pp_sample_hash_fd: 256 KiB whatever its size, so opening
 * a set over terabytes stays cheap) and, where an index file located its
 * sequences (Megatron's .idx), that file's size and whole hash: the index
 * is small beside its tokens and decides every row's offsets. */
#define _DEFAULT_SOURCE /* realpath */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/error.h"
#include "common/io.h"
#include "ingest/store.h"
#include "shards/sources.h"

static int absolute_copy(const prepack_allocator *a, const char *path,
                         char **out, prepack_diag *diag)
{
    char buf[PATH_MAX];
    if (!realpath(path, buf))
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "%s: %s", path,
                       strerror(errno));
    *out = pp_strndup(a, buf, strlen(buf));
    return *out ? PREPACK_OK : pp_out_of_memory(diag);
}

static int describe_one(const pp_store_source *in, const prepack_allocator *a,
                        pp_set_source *out, prepack_diag *diag)
{
    out->width = in->width;
    out->is_signed = in->is_signed;
    out->bytes = in->size;
    int rc = absolute_copy(a, in->path, &out->path, diag);
    if (rc != PREPACK_OK)
        return rc;
    char why[200];
    if (pp_sample_hash_fd(in->fd, in->size, &out->sample_xxh64) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: cannot read: %s", in->path,
                       pp_read_why(in->fd, 0, in->size, why, sizeof why));
    if (!in->index)
        return PREPACK_OK;
    rc = absolute_copy(a, in->index, &out->index, diag);
    if (rc != PREPACK_OK)
        return rc;
    if (pp_hash_file(out->index, &out->index_xxh64, &out->index_bytes) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: cannot read: %s", in->index,
                       errno ? strerror(errno)
                             : "it ended before the size fstat gave");
    return PREPACK_OK;
}

int pp_sources_describe(const prepack_store *s, const prepack_allocator *a,
                        pp_set_source **out, size_t *n, prepack_diag *diag)
{
    size_t count = pp_store_source_count(s) - 1; /* source 0: text tokens */
    pp_set_source *list = pp_calloc(a, count ? count : 1, sizeof *list);
    if (!list)
        return pp_out_of_memory(diag);
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < count; i++) {
        pp_store_source src;
        pp_store_source_get(s, i + 1, &src);
        rc = describe_one(&src, a, &list[i], diag);
    }
    if (rc != PREPACK_OK) {
        pp_sources_free(a, list, count);
        return rc;
    }
    *out = list;
    *n = count;
    return PREPACK_OK;
}

void pp_sources_free(const prepack_allocator *a, pp_set_source *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++) {
        pp_free(a, s[i].path);
        pp_free(a, s[i].index);
    }
    pp_free(a, s);
}

static int changed(prepack_diag *diag, const char *path, const char *what,
                   uint64_t now, uint64_t then)
{
    return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                   "%s: changed since the set was packed (%s %llu, the "
                   "manifest records %llu); pack it again",
                   path, what, (unsigned long long)now,
                   (unsigned long long)then);
}

/* A path from a manifest opened (*fd) only if it is a regular file: a
 * FIFO would block the open, a device has no size to check. */
static int open_regular(const char *path, const char *what, int *fd,
                        uint64_t *size, prepack_diag *diag)
{
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    int rc = PREPACK_OK;
    if (*fd < 0 || fstat(*fd, &st) != 0)
        rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                     "%s: cannot open the %s this set references: %s", path,
                     what, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "%s: the %s this set references is not a regular file",
                     path, what);
    if (rc != PREPACK_OK) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        return rc;
    }
    *size = (uint64_t)st.st_size;
    return PREPACK_OK;
}

static int check_index(const pp_set_source *s, prepack_diag *diag)
{
    uint64_t hash, size;
    int fd;
    int rc = open_regular(s->index, "index", &fd, &size, diag);
    if (rc != PREPACK_OK)
        return rc;
    char why[200];
    int bad = pp_hash_fd(fd, size, &hash);
    if (bad)
        pp_read_why(fd, 0, size, why, sizeof why);
    close(fd);
    if (bad)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: cannot read the index this set references: %s",
                       s->index, why);
    if (size != s->index_bytes)
        return changed(diag, s->index, "bytes", size, s->index_bytes);
    if (hash != s->index_xxh64)
        return changed(diag, s->index, "xxh64", hash, s->index_xxh64);
    return PREPACK_OK;
}

static int map_one(const pp_set_source *s, pp_mapped_source *m,
                   prepack_diag *diag)
{
    uint64_t size, hash = 0;
    int fd;
    char why[200];
    int rc = open_regular(s->path, "input", &fd, &size, diag);
    if (rc != PREPACK_OK)
        return rc;
    if (size != s->bytes)
        rc = changed(diag, s->path, "bytes", size, s->bytes);
    else if (pp_sample_hash_fd(fd, size, &hash) != 0)
        rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                     "%s: cannot read: %s", s->path,
                     pp_read_why(fd, 0, size, why, sizeof why));
    else if (hash != s->sample_xxh64)
        rc = changed(diag, s->path, "sampled xxh64", hash, s->sample_xxh64);
    if (rc == PREPACK_OK && s->index)
        rc = check_index(s, diag);
    if (rc == PREPACK_OK && size > 0) {
        void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                         "%s: cannot map: %s", s->path, strerror(errno));
        else
            m->data = p;
    }
    close(fd);
    m->size = size;
    m->width = s->width;
    m->is_signed = s->is_signed;
    return rc;
}

int pp_sources_map(const pp_set_source *s, size_t n, pp_mapped_source *out,
                   prepack_diag *diag)
{
    memset(out, 0, n * sizeof *out);
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < n; i++)
        rc = map_one(&s[i], &out[i], diag);
    if (rc != PREPACK_OK)
        pp_sources_unmap(out, n);
    return rc;
}

void pp_sources_unmap(pp_mapped_source *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) {
        if (m[i].data)
            munmap((void *)m[i].data, (size_t)m[i].size);
        m[i].data = NULL;
    }
}
