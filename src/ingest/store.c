/* The token store: where every sequence's tokens are, without copying
 * what need not be copied.
 *
 * Tokens live in *sources*. Binary inputs (Megatron .bin, llm.c and raw
 * token files) are sources themselves: a sequence is a reference (byte
 * offset, length) into the input file, which is mapped once ingest is
 * done, so a 100 GB corpus is never copied to plan or pack it. Tokens that
 * exist only after parsing (JSONL) go to source 0, an unlinked temporary
 * file written through a buffer, uint16 while every id fits, else uint32.
 * Per sequence the store keeps a byte offset and a length (12 bytes);
 * consecutive sequences of one source form a segment. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/error.h"
#include "ingest/store.h"
#include "ingest/tmpfile.h"

enum { WRITE_BUFFER = PP_TMPFILE_BUFFER, CHUNK_TOKENS = WRITE_BUFFER / 4 };

/* ---- the store ------------------------------------------------------------ */

typedef struct source {
    int fd;             /* owned */
    unsigned width;     /* bytes per token */
    int is_signed;      /* two's complement ids (checked >= 0 at ingest) */
    uint64_t size;      /* bytes */
    unsigned char *map; /* the whole file, mapped at finish */
    uint32_t max_id;
    size_t input; /* the input it belongs to, for messages */
    char *path;   /* the file, for a job's write tasks (NULL: source 0) */
    char *index;  /* its index file (Megatron .idx), or NULL */
} source;

struct prepack_store {
    prepack_allocator alloc_copy;   /* the caller's, when one was given */
    const prepack_allocator *alloc; /* &alloc_copy or NULL (libc) */
    char tmp_dir[4096];
    prepack_dtype forced; /* the caller's choice */
    int lengths_only;     /* tokens are checked, not kept */
    /* source 0: the temporary file, with its loss mask file beside it */
    pp_tmpfile tok, mask;
    unsigned tmp_width; /* 2 or 4 */
    int has_mask;
    uint64_t tmp_tokens; /* tokens in the temporary file */
    uint64_t open_len;   /* tokens in its open sequence */
    source *sources;
    size_t nsources, sources_cap;
    /* sequences */
    uint32_t *lengths;
    uint64_t *offsets; /* byte offset in its source */
    size_t count, cap;
    uint64_t tokens;
    /* segments: sequences seg_first[k] .. seg_first[k+1]-1 are in source
     * seg_source[k] */
    uint64_t *seg_first;
    uint32_t *seg_source;
    size_t nseg, seg_cap;
    uint64_t *doc_start;
    size_t docs, docs_cap;
    int doc_pending;
    prepack_input_info *inputs;
    size_t ninputs, inputs_cap;
    uint32_t max_id;
    prepack_dtype dtype; /* resolved at finish */
    int finished;
    uint8_t *mask_map;
    /* groups: the sequences that join the previous one's group, rising */
    uint64_t *joins;
    size_t njoins, joins_cap;
    uint64_t *group_first; /* built at finish when any sequence joins */
    char keep_prefix[64]; /* non-empty: token files keep their names */
    int tmp_dirfd; /* kept files: made relative to it (a job's directory) */
};

static const char *default_tmp_dir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

/* ---- growing arrays ---------------------------------------------------- */

static int add_source(prepack_store *s, int fd, unsigned width, int is_signed,
                      uint64_t size, size_t *index)
{
    if (pp_grow(s->alloc, (void **)&s->sources, &s->sources_cap,
                s->nsources + 1, sizeof *s->sources) != PREPACK_OK)
        return PREPACK_ENOMEM;
    source *src = &s->sources[s->nsources];
    memset(src, 0, sizeof *src);
    src->fd = fd;
    src->width = width;
    src->is_signed = is_signed;
    src->size = size;
    src->input = s->ninputs ? s->ninputs - 1 : 0;
    *index = s->nsources++;
    return PREPACK_OK;
}

static const char *kept_prefix(const prepack_store *s, const char *kind,
                               char buf[96]);

/* keep: NULL, or the kept files' name prefix, made relative to dirfd. */
static int store_create(prepack_store **out, const prepack_store_options *o,
                        const char *keep, int dirfd, prepack_diag *diag)
{
    if (!out)
        return PREPACK_EINVAL;
    *out = NULL;
    prepack_store_options none = {0};
    if (!o)
        o = &none;
    if (!prepack_dtype_name(o->dtype))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "unknown token dtype %d", (int)o->dtype);
    if (pp_check_allocator(o->allocator, diag) != PREPACK_OK)
        return PREPACK_EINVAL;
    prepack_store *s = pp_calloc(o->allocator, 1, sizeof *s);
    if (!s)
        return pp_out_of_memory(diag);
    s->alloc = pp_allocator_keep(&s->alloc_copy, o->allocator);
    s->tok.fd = s->mask.fd = -1;
    s->tmp_dirfd = -1;
    snprintf(s->tmp_dir, sizeof s->tmp_dir, "%s",
             o->tmp_dir ? o->tmp_dir : default_tmp_dir());
    s->forced = o->dtype;
    s->lengths_only = o->lengths_only;
    s->tmp_width = o->dtype == PREPACK_DTYPE_UINT32 ? 4 : 2;
    if (keep) {
        snprintf(s->keep_prefix, sizeof s->keep_prefix, "%s", keep);
        s->tmp_dirfd = dirfd;
    }
    size_t zero;
    char name[96];
    int rc = pp_tmpfile_open(&s->tok, s->tmp_dirfd, s->tmp_dir,
                             kept_prefix(s, "tokens", name), s->alloc, diag);
    if (rc == PREPACK_OK && add_source(s, -1, s->tmp_width, 0, 0, &zero))
        rc = pp_out_of_memory(diag);
    if (rc != PREPACK_OK) {
        prepack_store_free(s);
        return rc;
    }
    *out = s;
    return PREPACK_OK;
}

int prepack_store_create(prepack_store **out, const prepack_store_options *o,
                         prepack_diag *diag)
{
    return store_create(out, o, NULL, -1, diag);
}

void prepack_store_free(prepack_store *s)
{
    if (!s)
        return;
    const prepack_allocator *a = s->alloc;
    for (size_t i = 0; i < s->nsources; i++) {
        source *src = &s->sources[i];
        if (src->map)
            munmap(src->map, (size_t)src->size);
        if (i > 0 && src->fd >= 0)
            close(src->fd);
        pp_free(a, src->path);
        pp_free(a, src->index);
    }
    if (s->mask_map)
        munmap(s->mask_map, (size_t)s->mask.size);
    pp_tmpfile_close(&s->tok, a);
    pp_tmpfile_close(&s->mask, a);
    for (size_t i = 0; i < s->ninputs; i++)
        pp_free(a, (void *)s->inputs[i].path);
    pp_free(a, s->inputs);
    pp_free(a, s->sources);
    pp_free(a, s->lengths);
    pp_free(a, s->offsets);
    pp_free(a, s->seg_first);
    pp_free(a, s->seg_source);
    pp_free(a, s->doc_start);
    pp_free(a, s->joins);
    pp_free(a, s->group_first);
    prepack_allocator copy = s->alloc_copy; /* s itself goes with it */
    pp_free(a ? &copy : NULL, s);
}

/* ---- sequences ------------------------------------------------------------ */

static prepack_input_info *current_input(prepack_store *s)
{
    return s->ninputs ? &s->inputs[s->ninputs - 1] : NULL;
}

/* Records a finished sequence of `len` tokens at `offset` in `src`. */
static int push_sequence(prepack_store *s, size_t src, uint64_t offset,
                         uint32_t len, prepack_diag *diag)
{
    const prepack_allocator *a = s->alloc;
    size_t cap = s->cap;
    if (pp_grow(a, (void **)&s->lengths, &cap, s->count + 1,
                sizeof *s->lengths) != PREPACK_OK ||
        pp_grow(a, (void **)&s->offsets, &s->cap, s->count + 1,
                sizeof *s->offsets) != PREPACK_OK)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory for %zu sequences", s->count + 1);
    if (s->nseg == 0 || s->seg_source[s->nseg - 1] != src) {
        size_t seg_cap = s->seg_cap;
        if (pp_grow(a, (void **)&s->seg_first, &seg_cap, s->nseg + 1,
                    sizeof *s->seg_first) != PREPACK_OK ||
            pp_grow(a, (void **)&s->seg_source, &s->seg_cap, s->nseg + 1,
                    sizeof *s->seg_source) != PREPACK_OK)
            return pp_out_of_memory(diag);
        s->seg_first[s->nseg] = s->count;
        s->seg_source[s->nseg++] = (uint32_t)src;
    }
    prepack_input_info *in = current_input(s);
    if (s->doc_pending) {
        if (pp_grow(a, (void **)&s->doc_start, &s->docs_cap, s->docs + 1,
                    sizeof *s->doc_start) != PREPACK_OK)
            return pp_out_of_memory(diag);
        s->doc_start[s->docs++] = s->count;
        s->doc_pending = 0;
        if (in)
            in->documents++;
    }
    s->lengths[s->count] = len;
    s->offsets[s->count] = offset;
    s->count++;
    s->tokens += len;
    if (in) {
        in->sequences++;
        in->tokens += len;
    }
    return PREPACK_OK;
}

/* The source holding sequence i: the last segment starting at or before
 * it. */
static const source *source_of(const prepack_store *s, size_t i)
{
    size_t lo = 0, hi = s->nseg;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (s->seg_first[mid] <= i)
            lo = mid;
        else
            hi = mid;
    }
    return &s->sources[s->seg_source[lo]];
}

/* ---- kept token files (a job's scan tasks) ---------------------------------- */

/* The name prefix of a kept file of this kind (into buf), or NULL: the
 * file is unlinked at once. */
static const char *kept_prefix(const prepack_store *s, const char *kind,
                               char buf[96])
{
    if (!s->keep_prefix[0])
        return NULL;
    snprintf(buf, 96, "%s%s-", s->keep_prefix, kind);
    return buf;
}

int pp_store_create_kept(prepack_store **out, const prepack_store_options *o,
                         const char *prefix, int dirfd, prepack_diag *diag)
{
    if (!prefix || dirfd < 0)
        return PREPACK_EINVAL;
    return store_create(out, o, prefix, dirfd, diag);
}

void pp_store_take_files(prepack_store *s, char *tokens, char *mask,
                         size_t cap)
{
    pp_tmpfile_take_name(&s->tok, tokens, cap);
    if (s->has_mask)
        pp_tmpfile_take_name(&s->mask, mask, cap);
    else
        snprintf(mask, cap, "%s", "");
}

/* ---- the temporary file: widening uint16 to uint32 -------------------------- */

/* The first id over 65535 under AUTO: rewrite what was stored as uint32
 * into a new file, and double the offsets of the sequences in it. Happens
 * at most once per store. */
static int widen(prepack_store *s, prepack_diag *diag)
{
    int rc = pp_tmpfile_flush(&s->tok, diag);
    pp_tmpfile wide;
    char name[96];
    if (rc == PREPACK_OK)
        rc = pp_tmpfile_open(&wide, s->tmp_dirfd, s->tmp_dir,
                             kept_prefix(s, "tokens", name), s->alloc, diag);
    if (rc != PREPACK_OK)
        return rc;
    uint16_t chunk[4096];
    for (uint64_t pos = 0; pos < s->tok.size && rc == PREPACK_OK;) {
        size_t want = sizeof chunk;
        if (s->tok.size - pos < want)
            want = (size_t)(s->tok.size - pos);
        ssize_t got = pread(s->tok.fd, chunk, want, (off_t)pos);
        if (got <= 0) {
            rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                         "reading the token store back failed");
            break;
        }
        size_t n = (size_t)got / 2;
        unsigned char *out = pp_tmpfile_reserve(&wide, n * 4, diag);
        if (!out) {
            rc = PREPACK_EIO;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t v = chunk[i];
            memcpy(out + 4 * i, &v, 4);
        }
        pos += (uint64_t)got;
    }
    if (rc != PREPACK_OK) {
        pp_tmpfile_close(&wide, s->alloc);
        return rc;
    }
    pp_tmpfile_close(&s->tok, s->alloc);
    s->tok = wide;
    s->tmp_width = 4;
    s->sources[0].width = 4;
    for (size_t k = 0; k < s->nseg; k++) {
        if (s->seg_source[k] != 0)
            continue;
        uint64_t end = k + 1 < s->nseg ? s->seg_first[k + 1] : s->count;
        for (uint64_t i = s->seg_first[k]; i < end; i++)
            s->offsets[i] *= 2;
    }
    return PREPACK_OK;
}

/* ---- adding tokens to the temporary file ------------------------------------ */

static int check_open(prepack_store *s, size_t n, prepack_diag *diag)
{
    if (s->finished)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the store is finished");
    if (s->open_len + n > UINT32_MAX)
        return pp_fail(diag, PREPACK_ERANGE, s->count,
                       "sequence %zu is longer than %u tokens", s->count,
                       UINT32_MAX);
    return PREPACK_OK;
}

static int add_mask(prepack_store *s, const uint8_t *mask, size_t n,
                    prepack_diag *diag)
{
    if ((!mask && !s->has_mask) || s->lengths_only)
        return PREPACK_OK;
    if (mask && !s->has_mask) { /* first mask: earlier tokens were trained */
        char name[96];
        int rc = pp_tmpfile_open(&s->mask, s->tmp_dirfd, s->tmp_dir,
                                 kept_prefix(s, "mask", name), s->alloc, diag);
        if (rc != PREPACK_OK)
            return rc;
        s->has_mask = 1;
        for (uint64_t left = s->tmp_tokens; left > 0;) {
            size_t k = left > WRITE_BUFFER ? WRITE_BUFFER : (size_t)left;
            unsigned char *p = pp_tmpfile_reserve(&s->mask, k, diag);
            if (!p)
                return PREPACK_EIO;
            memset(p, 1, k);
            left -= k;
        }
    }
    for (size_t done = 0; done < n;) {
        size_t k = n - done > WRITE_BUFFER ? WRITE_BUFFER : n - done;
        unsigned char *p = pp_tmpfile_reserve(&s->mask, k, diag);
        if (!p)
            return PREPACK_EIO;
        if (mask)
            memcpy(p, mask + done, k);
        else
            memset(p, 1, k);
        done += k;
    }
    return PREPACK_OK;
}

/* Appends at most CHUNK_TOKENS tokens. */
static int add_chunk(prepack_store *s, const uint32_t *t, size_t n,
                     prepack_diag *diag)
{
    uint32_t max = 0;
    for (size_t i = 0; i < n; i++)
        max = t[i] > max ? t[i] : max;
    if (max > UINT16_MAX && s->tmp_width == 2) {
        if (s->forced == PREPACK_DTYPE_UINT16) {
            const prepack_input_info *in = current_input(s);
            return pp_fail(diag, PREPACK_ERANGE, s->count,
                           "%s: sequence %llu of this input (%zu overall): "
                           "token id %u does not fit the uint16 token dtype "
                           "(--token-dtype uint32 or auto keeps it)",
                           in ? in->path : "input",
                           (unsigned long long)(in ? s->count -
                                                         in->first_sequence
                                                   : s->count),
                           s->count, max);
        }
        int rc = s->lengths_only ? PREPACK_OK : widen(s, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    s->max_id = max > s->max_id ? max : s->max_id;
    if (s->lengths_only)
        return PREPACK_OK;
    unsigned w = s->tmp_width;
    unsigned char *p = pp_tmpfile_reserve(&s->tok, n * w, diag);
    if (!p)
        return PREPACK_EIO;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (w == 4) {
        memcpy(p, t, n * 4);
        return PREPACK_OK;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t v = (uint16_t)t[i];
        memcpy(p + 2 * i, &v, 2);
    }
#else
    for (size_t i = 0; i < n; i++)
        for (unsigned b = 0; b < w; b++)
            p[w * i + b] = (unsigned char)(t[i] >> (8 * b));
#endif
    return PREPACK_OK;
}

int prepack_store_add(prepack_store *s, const uint32_t *tokens, size_t n,
                      const uint8_t *loss_mask, prepack_diag *diag)
{
    int rc = check_open(s, n, diag);
    for (size_t done = 0; rc == PREPACK_OK && done < n;) {
        size_t k = n - done > CHUNK_TOKENS ? CHUNK_TOKENS : n - done;
        rc = add_chunk(s, tokens + done, k, diag);
        done += k;
    }
    if (rc == PREPACK_OK)
        rc = add_mask(s, loss_mask, n, diag);
    if (rc == PREPACK_OK) {
        s->open_len += n;
        s->tmp_tokens += n;
    }
    return rc;
}

int prepack_store_add_u16(prepack_store *s, const uint16_t *tokens, size_t n,
                          prepack_diag *diag)
{
    uint32_t wide[1024];
    int rc = PREPACK_OK;
    for (size_t done = 0; rc == PREPACK_OK && done < n;) {
        size_t k = n - done < 1024 ? n - done : 1024;
        for (size_t i = 0; i < k; i++)
            wide[i] = tokens[done + i];
        rc = prepack_store_add(s, wide, k, NULL, diag);
        done += k;
    }
    return rc;
}

const prepack_allocator *pp_store_allocator(const prepack_store *s)
{
    return s->alloc;
}

int prepack_store_add_sequences(prepack_store *s, const uint32_t *tokens,
                                const uint64_t *offsets, size_t n,
                                const uint8_t *loss_mask, prepack_diag *diag)
{
    if (!s || (n && (!tokens || !offsets)))
        return pp_invalid_argument(diag);
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < n; i++) {
        uint64_t lo = offsets[i], hi = offsets[i + 1];
        if (hi < lo)
            return pp_fail(diag, PREPACK_EINVAL, i,
                           "offsets[%zu] = %llu comes after offsets[%zu] = "
                           "%llu",
                           i, (unsigned long long)lo, i + 1,
                           (unsigned long long)hi);
        rc = prepack_store_add(s, tokens + lo, (size_t)(hi - lo),
                               loss_mask ? loss_mask + lo : NULL, diag);
        /* an empty sequence keeps its id, as a JSONL line's does */
        if (rc == PREPACK_OK)
            rc = pp_store_end_sequence(s, 1, diag);
        if (rc != PREPACK_OK && diag)
            diag->record = i;
    }
    return rc;
}

int prepack_store_end_sequence(prepack_store *s, prepack_diag *diag)
{
    return pp_store_end_sequence(s, 0, diag);
}

int pp_store_end_sequence(prepack_store *s, int keep_empty, prepack_diag *diag)
{
    if (s->open_len == 0 && !keep_empty)
        return PREPACK_OK;
    uint64_t first = s->tmp_tokens - s->open_len;
    int rc =
        push_sequence(s, 0, first * s->tmp_width, (uint32_t)s->open_len, diag);
    s->open_len = 0;
    return rc;
}

/* ---- referencing input files -------------------------------------------------- */

int pp_store_add_file(prepack_store *s, const char *path, int fd,
                      unsigned width, int is_signed, uint64_t size,
                      size_t *index, prepack_diag *diag)
{
    if (s->open_len)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "a sequence is open");
    char *name = pp_strndup(s->alloc, path, strlen(path));
    if (!name)
        return pp_out_of_memory(diag);
    int copy = dup(fd);
    if (copy < 0) {
        pp_free(s->alloc, name);
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot keep the input open: %s", strerror(errno));
    }
    if (add_source(s, copy, width, is_signed, size, index) != PREPACK_OK) {
        close(copy);
        pp_free(s->alloc, name);
        return pp_out_of_memory(diag);
    }
    s->sources[*index].path = name;
    return PREPACK_OK;
}

void pp_store_location(const prepack_store *s, size_t i, uint32_t *src,
                       uint64_t *offset)
{
    *src = (uint32_t)(source_of(s, i) - s->sources);
    *offset = s->offsets[i];
}

size_t pp_store_source_count(const prepack_store *s)
{
    return s->nsources;
}

void pp_store_source_get(const prepack_store *s, size_t i,
                         pp_store_source *out)
{
    const source *src = &s->sources[i];
    out->path = src->path;
    out->width = src->width;
    out->is_signed = src->is_signed;
    out->size = src->size;
    out->max_id = i == 0 ? 0 : src->max_id;
    out->data = src->map;
    out->mask = i == 0 ? s->mask_map : NULL;
    out->index = src->index;
    out->fd = src->fd;
}

int pp_store_source_index(prepack_store *s, size_t src, const char *path,
                          prepack_diag *diag)
{
    char *copy = pp_strndup(s->alloc, path, strlen(path));
    if (!copy)
        return pp_out_of_memory(diag);
    pp_free(s->alloc, s->sources[src].index);
    s->sources[src].index = copy;
    return PREPACK_OK;
}

uint32_t pp_store_max_id(const prepack_store *s)
{
    return s->max_id;
}

int pp_store_add_ref(prepack_store *s, size_t src, uint64_t offset,
                     uint64_t len, prepack_diag *diag)
{
    if (len > UINT32_MAX)
        return pp_fail(diag, PREPACK_ERANGE, s->count,
                       "sequence %zu is longer than %u tokens", s->count,
                       UINT32_MAX);
    return push_sequence(s, src, offset, (uint32_t)len, diag);
}

void pp_store_source_max_id(prepack_store *s, size_t src, uint32_t max_id)
{
    s->sources[src].max_id = max_id;
    s->max_id = max_id > s->max_id ? max_id : s->max_id;
}

/* ---- groups ------------------------------------------------------------------ */

int prepack_store_join_sequences(prepack_store *s, const uint64_t *ids,
                                 size_t k, prepack_diag *diag)
{
    const prepack_input_info *in = current_input(s);
    uint64_t first = in ? in->first_sequence : 0;
    for (size_t i = 0; i < k; i++) {
        uint64_t id = ids[i];
        uint64_t last = s->njoins ? s->joins[s->njoins - 1] : 0;
        if (id <= first || id >= s->count || (s->njoins && id <= last))
            return pp_fail(diag, PREPACK_EINVAL, id,
                           "sequence %llu cannot join the one before it: "
                           "joins go in rising order, within one input",
                           (unsigned long long)id);
        if (pp_grow(s->alloc, (void **)&s->joins, &s->joins_cap,
                    s->njoins + 1, sizeof *s->joins) != PREPACK_OK)
            return pp_out_of_memory(diag);
        s->joins[s->njoins++] = id;
    }
    return PREPACK_OK;
}

const uint64_t *pp_store_joins(const prepack_store *s, size_t *n)
{
    *n = s->njoins;
    return s->joins;
}

const uint64_t *prepack_store_group_first(const prepack_store *s,
                                          size_t *groups)
{
    *groups = s->count - s->njoins;
    return s->group_first;
}

/* group_first from the joins: every sequence not joining starts a group. */
static int build_groups(prepack_store *s, prepack_diag *diag)
{
    if (!s->njoins)
        return PREPACK_OK;
    size_t groups = s->count - s->njoins;
    s->group_first = pp_alloc(s->alloc, groups + 1, sizeof *s->group_first);
    if (!s->group_first)
        return pp_out_of_memory(diag);
    size_t g = 0, j = 0;
    for (uint64_t i = 0; i < s->count; i++) {
        if (j < s->njoins && s->joins[j] == i) {
            j++;
            continue;
        }
        s->group_first[g++] = i;
    }
    s->group_first[g] = s->count;
    return PREPACK_OK;
}

int prepack_store_begin_document(prepack_store *s)
{
    s->doc_pending = 1;
    return PREPACK_OK;
}

int prepack_store_begin_input(prepack_store *s, const char *path,
                              prepack_format format)
{
    if (pp_grow(s->alloc, (void **)&s->inputs, &s->inputs_cap, s->ninputs + 1,
                sizeof *s->inputs) != PREPACK_OK)
        return PREPACK_ENOMEM;
    size_t len = strlen(path);
    char *copy = pp_alloc(s->alloc, len + 1, 1);
    if (!copy)
        return PREPACK_ENOMEM;
    memcpy(copy, path, len + 1);
    prepack_input_info *in = &s->inputs[s->ninputs++];
    memset(in, 0, sizeof *in);
    in->path = copy;
    in->format = format;
    in->first_sequence = s->count;
    return PREPACK_OK;
}

void prepack_store_count_partial(prepack_store *s)
{
    prepack_input_info *in = current_input(s);
    if (in)
        in->partial_sequences++;
}

/* ---- finishing ------------------------------------------------------------------ */

static void *map_whole(int fd, uint64_t size)
{
    if (size == 0)
        return NULL;
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* The token dtype: forced, or uint16 while every id fits. */
static int resolve_dtype(prepack_store *s, prepack_diag *diag)
{
    if (s->forced == PREPACK_DTYPE_UINT16 && s->max_id > UINT16_MAX) {
        for (size_t i = 1; i < s->nsources; i++)
            if (s->sources[i].max_id > UINT16_MAX)
                return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                               "%s: token id %u does not fit the uint16 "
                               "token dtype",
                               s->inputs[s->sources[i].input].path,
                               s->sources[i].max_id);
    }
    s->dtype = s->forced != PREPACK_DTYPE_AUTO ? s->forced
               : s->max_id > UINT16_MAX        ? PREPACK_DTYPE_UINT32
                                               : PREPACK_DTYPE_UINT16;
    return PREPACK_OK;
}

int prepack_store_finish(prepack_store *s, prepack_diag *diag)
{
    if (s->finished)
        return PREPACK_OK;
    int rc = pp_store_end_sequence(s, 0, diag);
    if (rc == PREPACK_OK)
        rc = pp_tmpfile_flush(&s->tok, diag);
    if (rc == PREPACK_OK && s->has_mask)
        rc = pp_tmpfile_flush(&s->mask, diag);
    if (rc == PREPACK_OK)
        rc = resolve_dtype(s, diag);
    if (rc == PREPACK_OK)
        rc = build_groups(s, diag);
    if (rc != PREPACK_OK)
        return rc;
    pp_free(s->alloc, s->tok.buf);
    pp_free(s->alloc, s->mask.buf);
    s->tok.buf = s->mask.buf = NULL;
    s->sources[0].fd = s->tok.fd;
    s->sources[0].size = s->tok.size;
    for (size_t i = 0; i < s->nsources; i++) {
        source *src = &s->sources[i];
        src->map = map_whole(src->fd, src->size);
        if (src->size && !src->map)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "cannot map the tokens of %s: %s",
                           i ? s->inputs[src->input].path : "the store",
                           strerror(errno));
    }
    s->mask_map = s->has_mask ? map_whole(s->mask.fd, s->mask.size) : NULL;
    if (s->has_mask && s->mask.size && !s->mask_map)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot map the loss mask: %s", strerror(errno));
    s->finished = 1;
    return PREPACK_OK;
}

/* ---- reading ---------------------------------------------------------------- */

size_t prepack_store_input_count(const prepack_store *s)
{
    return s->ninputs;
}

void prepack_store_input(const prepack_store *s, size_t i,
                         prepack_input_info *out)
{
    *out = s->inputs[i];
}

const prepack_input_info *pp_store_inputs(const prepack_store *s, size_t *n)
{
    *n = s->ninputs;
    return s->inputs;
}

size_t prepack_store_sequence_count(const prepack_store *s)
{
    return s->count;
}

uint64_t prepack_store_token_count(const prepack_store *s)
{
    return s->tokens;
}

prepack_dtype prepack_store_dtype(const prepack_store *s)
{
    return s->dtype;
}

const uint32_t *prepack_store_lengths(const prepack_store *s)
{
    return s->lengths;
}

int prepack_store_has_loss_mask(const prepack_store *s)
{
    return s->has_mask;
}

const uint8_t *prepack_store_loss_mask(const prepack_store *s, size_t i)
{
    const source *src = source_of(s, i);
    if (!s->mask_map || src != &s->sources[0])
        return NULL;
    return s->mask_map + s->offsets[i] / src->width;
}

void prepack_store_copy(const prepack_store *s, size_t i, uint32_t *out)
{
    pp_store_copy_range(s, i, 0, s->lengths[i], 4, out);
}

void pp_store_copy_range(const prepack_store *s, size_t i, uint32_t first,
                         uint32_t n, unsigned out_width, void *out)
{
    if (n == 0)
        return; /* an empty sequence may sit in an empty, unmapped file */
    const source *src = source_of(s, i);
    unsigned w = src->width;
    const unsigned char *p = src->map + s->offsets[i] + (uint64_t)first * w;
    pp_tokens_convert(p, w, src->is_signed, n, out_width, out);
}

void pp_tokens_convert(const unsigned char *p, unsigned w, int is_signed,
                       uint32_t n, unsigned out_width, void *out)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (w == out_width && !is_signed) { /* the common case */
        memcpy(out, p, (size_t)n * w);
        return;
    }
#endif
    for (uint32_t k = 0; k < n; k++, p += w) {
        uint32_t v = 0;
        for (unsigned b = 0; b < w && b < 4; b++)
            v |= (uint32_t)p[b] << (8 * b);
        /* ids were checked at ingest: non-negative, within 32 bits, and
         * within 16 when the output is uint16 */
        if (out_width == 2)
            ((uint16_t *)out)[k] = (uint16_t)v;
        else
            ((uint32_t *)out)[k] = v;
    }
}

size_t prepack_store_document_count(const prepack_store *s)
{
    return s->docs;
}

uint64_t prepack_store_document_start(const prepack_store *s, size_t d)
{
    return s->doc_start[d];
}
