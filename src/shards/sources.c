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
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/bytes.h"
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
 * FIFO would block the open, a device has no size to check. Everything
 * after is checked and read through this one descriptor. */
static int open_regular(const char *path, const char *what, int *fd,
                        struct stat *st, prepack_diag *diag)
{
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    int rc = PREPACK_OK;
    if (*fd < 0 || fstat(*fd, st) != 0)
        rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                     "%s: cannot open the %s this set references: %s%s",
                     path, what, strerror(errno),
                     errno == EMFILE ? " (a reader holds each referenced "
                                       "file open: raise ulimit -n)"
                                     : "");
    else if (!S_ISREG(st->st_mode))
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "%s: the %s this set references is not a regular file",
                     path, what);
    if (rc != PREPACK_OK && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}

/* Megatron's dtype codes (megatron/core/datasets/indexed_dataset.py):
 * bytes per id, 0 for none or floats, and whether signed. */
static const struct {
    unsigned width;
    int is_signed;
} MEGATRON_DTYPES[9] = {{0, 0}, {1, 0}, {1, 1}, {2, 1}, {4, 1},
                        {8, 1}, {0, 0}, {0, 0}, {2, 0}};

static int width_contradicted(const pp_set_source *s, const char *file,
                              unsigned width, int is_signed,
                              prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                   "%s: the manifest says width %u%s, but %s says %u-byte "
                   "%s ids",
                   s->path, s->width, s->is_signed ? " signed" : "", file,
                   width, is_signed ? "signed" : "unsigned");
}

enum { IDX_HEADER = 34 }; /* magic, version, dtype, count, documents */

/* The width a Megatron index's header (hashed whole, so bound to the
 * identity) gives its .bin, against the manifest's; its entry count. */
static int check_index_width(const pp_set_source *s, int fd, uint64_t size,
                             uint64_t *count, prepack_diag *diag)
{
    unsigned char h[IDX_HEADER];
    *count = 0;
    if (pp_read_at(fd, h, sizeof h, 0) != 0 ||
        memcmp(h, "MMIDIDX\0\0", 9) != 0 || h[17] > 8 ||
        MEGATRON_DTYPES[h[17]].width == 0 ||
        (*count = pp_load_le(h + 18, 8)) > (size - IDX_HEADER) / 12)
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "%s: not a Megatron index of integer ids", s->index);
    if (!s->has_input)
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "%s: a Megatron source needs its input listed "
                       "(\"inputs\", one per source) to check its "
                       "references",
                       s->path);
    unsigned w = MEGATRON_DTYPES[h[17]].width;
    int sg = MEGATRON_DTYPES[h[17]].is_signed;
    if (w != s->width || sg != s->is_signed)
        return width_contradicted(s, s->index, w, sg, diag);
    return PREPACK_OK;
}

/* A file with no index: an llm.c header (inside the first sampled block)
 * decides its width; a raw file is as recorded, unsigned. */
static int check_file_width(const pp_set_source *s, int fd,
                            prepack_diag *diag)
{
    unsigned char h[8];
    if (s->bytes >= 1024 && pp_read_at(fd, h, sizeof h, 0) == 0) {
        uint32_t magic = pp_load_le32(h), version = pp_load_le32(h + 4);
        unsigned w = magic == 20240520 && version == 1   ? 2
                     : magic == 20240801 && version == 7 ? 4
                                                         : 0;
        if (w && (w != s->width || s->is_signed))
            return width_contradicted(s, "its llm.c header", w, 0, diag);
    }
    if (s->is_signed)
        return width_contradicted(s, "a file without an index", s->width,
                                  0, diag);
    return PREPACK_OK;
}

static const pp_mapped_source *same_file(const pp_mapped_source *m,
                                         size_t n, const struct stat *st)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].dev == (uint64_t)st->st_dev &&
            m[i].ino == (uint64_t)st->st_ino)
            return &m[i];
    return NULL;
}

static const pp_mapped_source *same_index(const pp_mapped_source *m,
                                          size_t n, const struct stat *st)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].has_index && m[i].index_dev == (uint64_t)st->st_dev &&
            m[i].index_ino == (uint64_t)st->st_ino)
            return &m[i];
    return NULL;
}

/* Source i's index: hashed once per file (an earlier entry naming the
 * same index lends its hash and descriptor), its size, hash and dtype
 * checked; held open for the references' checks. */
static int check_index(const pp_set_source *s, pp_mapped_source *m,
                       size_t i, prepack_diag *diag)
{
    char why[200];
    struct stat st;
    int fd;
    int rc = open_regular(s->index, "index", &fd, &st, diag);
    if (rc != PREPACK_OK)
        return rc;
    uint64_t size = (uint64_t)st.st_size;
    const pp_mapped_source *seen = same_index(m, i, &st);
    m[i].index_hash = seen ? seen->index_hash : 0;
    m[i].index_fd = fd;
    m[i].owns_index_fd = 1;
    if (size != s->index_bytes)
        rc = changed(diag, s->index, "bytes", size, s->index_bytes);
    else if (!seen && pp_hash_fd(fd, size, &m[i].index_hash) != 0)
        rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                     "%s: cannot read the index this set references: %s",
                     s->index, pp_read_why(fd, 0, size, why, sizeof why));
    else if (m[i].index_hash != s->index_xxh64)
        rc = changed(diag, s->index, "xxh64", m[i].index_hash,
                     s->index_xxh64);
    else
        rc = check_index_width(s, fd, size, &m[i].index_count, diag);
    if (seen) { /* one descriptor an index */
        close(fd);
        m[i].index_fd = seen->index_fd;
        m[i].owns_index_fd = 0;
    }
    m[i].has_index = 1;
    m[i].index_dev = (uint64_t)st.st_dev;
    m[i].index_ino = (uint64_t)st.st_ino;
    return rc;
}

/* The token file's size and sampled hash (hashed once per file). */
static int check_identity(const pp_set_source *s, pp_mapped_source *m,
                          size_t i, const struct stat *st, prepack_diag *diag)
{
    char why[200];
    uint64_t size = (uint64_t)st->st_size;
    const pp_mapped_source *seen = same_file(m, i, st);
    if (size != s->bytes)
        return changed(diag, s->path, "bytes", size, s->bytes);
    if (seen)
        m[i].sample = seen->sample;
    else if (pp_sample_hash_fd(m[i].fd, size, &m[i].sample) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: cannot read: %s", s->path,
                       pp_read_why(m[i].fd, 0, size, why, sizeof why));
    if (m[i].sample != s->sample_xxh64)
        return changed(diag, s->path, "sampled xxh64", m[i].sample,
                       s->sample_xxh64);
    if (size % s->width)
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "%s: %llu bytes is not a whole number of the "
                       "manifest's %u-byte tokens (width)",
                       s->path, (unsigned long long)size, s->width);
    return PREPACK_OK;
}

/* Source i opened and checked; a file an earlier entry already opened
 * keeps that entry's descriptor. */
static int open_one(const pp_set_source *s, pp_mapped_source *m, size_t i,
                    prepack_diag *diag)
{
    struct stat st;
    pp_mapped_source *o = &m[i];
    o->path = s->path;
    o->width = s->width;
    o->is_signed = s->is_signed;
    o->first_sequence = s->first_sequence;
    o->sequences = s->sequences;
    int rc = open_regular(s->path, "input", &o->fd, &st, diag);
    if (rc != PREPACK_OK)
        return rc;
    o->owns_fd = 1;
    o->size = (uint64_t)st.st_size;
    rc = check_identity(s, m, i, &st, diag);
    if (rc == PREPACK_OK)
        rc = s->index ? check_index(s, m, i, diag)
                      : check_file_width(s, o->fd, diag);
    const pp_mapped_source *seen = same_file(m, i, &st);
    if (seen) { /* one descriptor a file, whatever the entries */
        close(o->fd);
        o->fd = seen->fd;
        o->owns_fd = 0;
    }
    o->dev = (uint64_t)st.st_dev;
    o->ino = (uint64_t)st.st_ino;
    return rc;
}

int pp_sources_open(const pp_set_source *s, size_t n, pp_mapped_source *out,
                    prepack_diag *diag)
{
    memset(out, 0, n * sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i].fd = out[i].index_fd = -1;
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < n; i++)
        rc = open_one(&s[i], out, i, diag);
    if (rc != PREPACK_OK)
        pp_sources_close(out, n);
    return rc;
}

void pp_sources_close(pp_mapped_source *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) {
        if (m[i].owns_fd && m[i].fd >= 0)
            close(m[i].fd);
        if (m[i].owns_index_fd && m[i].index_fd >= 0)
            close(m[i].index_fd);
        m[i].fd = m[i].index_fd = -1;
        m[i].owns_fd = m[i].owns_index_fd = 0;
    }
}

int pp_set_source_check_entry(const pp_mapped_source *m, uint64_t id,
                              uint64_t at, uint32_t start, uint32_t len,
                              const char **why)
{
    uint64_t e = id - m->first_sequence;
    if (id < m->first_sequence || e >= m->sequences || e >= m->index_count) {
        *why = "its sequence id is not one of this input's";
        return 1;
    }
    unsigned char size[4], ptr[8];
    if (pp_read_at(m->index_fd, size, 4, IDX_HEADER + 4 * e) != 0 ||
        pp_read_at(m->index_fd, ptr, 8,
                   IDX_HEADER + 4 * m->index_count + 8 * e) != 0)
        return -1;
    uint64_t first = pp_load_le(ptr, 8), tokens = pp_load_le32(size);
    if ((uint64_t)start + len > tokens) {
        *why = "its tokens run past its index entry's length";
        return 1;
    }
    if (first > UINT64_MAX - (uint64_t)start * m->width ||
        at != first + (uint64_t)start * m->width) {
        *why = "its offset is not where its index entry puts it";
        return 1;
    }
    return 0;
}

/* Each id decoded (sign-extended when signed) and checked to fit
 * out_width: an id the set's token_dtype cannot hold is never narrowed. */
static int convert_checked(const unsigned char *p, unsigned w, int is_signed,
                           uint32_t n, unsigned out_width, void *out,
                           uint32_t *bad, int64_t *value)
{
    uint64_t most = out_width == 2 ? UINT16_MAX : UINT32_MAX;
    for (uint32_t k = 0; k < n; k++, p += w) {
        uint64_t v = pp_load_le(p, w);
        int negative = is_signed && (v >> (8 * w - 1)) & 1;
        if (negative || v > most) {
            *bad = k;
            *value = negative && w < 8 ? (int64_t)(v | ~0ULL << (8 * w))
                                       : (int64_t)v;
            return PP_SET_SOURCE_RANGE;
        }
        if (out_width == 2)
            ((uint16_t *)out)[k] = (uint16_t)v;
        else
            ((uint32_t *)out)[k] = (uint32_t)v;
    }
    return PP_SET_SOURCE_OK;
}

int pp_set_source_read(const pp_mapped_source *m, uint64_t at, uint32_t len,
                   unsigned out_width, void *out, unsigned char *scratch,
                   uint32_t *bad, int64_t *value)
{
    size_t n = (size_t)len * m->width;
    if (n == 0)
        return PP_SET_SOURCE_OK;
    int direct = m->width == out_width && !m->is_signed;
    if (pp_read_at(m->fd, direct ? out : scratch, n, at) != 0)
        return PP_SET_SOURCE_SHORT;
    if (direct)
        return PP_SET_SOURCE_OK;
    return convert_checked(scratch, m->width, m->is_signed, len, out_width,
                           out, bad, value);
}
