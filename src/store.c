/* The token store: tokens in an unlinked temporary file written through a
 * buffer and memory-mapped once finished; per-sequence lengths and offsets
 * in memory (12 bytes a sequence). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

enum { WRITE_BUFFER = 1 << 20 };

/* ---- temporary files --------------------------------------------------- */

typedef struct tmp_file {
    int fd;
    unsigned char *buf;
    size_t used;
    uint64_t size; /* bytes written, flushed or not */
} tmp_file;

/* Creates and at once unlinks a file in dir: it vanishes with its last
 * descriptor, whatever way the process ends. */
static int tmp_open(tmp_file *f, const char *dir, const prepack_allocator *a,
                    prepack_diag *diag)
{
    char path[4096];
    int len = snprintf(path, sizeof path, "%s/prepack-tokens-XXXXXX", dir);
    if (len < 0 || (size_t)len >= sizeof path)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "temporary directory name too long: %s", dir);
    f->buf = pp_alloc(a, WRITE_BUFFER, 1);
    if (!f->buf)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    f->fd = mkstemp(path);
    if (f->fd < 0) {
        int e = errno;
        pp_free(a, f->buf);
        f->buf = NULL;
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot create a temporary file in %s: %s", dir,
                       strerror(e));
    }
    unlink(path);
    f->used = 0;
    f->size = 0;
    return PREPACK_OK;
}

static void tmp_close(tmp_file *f, const prepack_allocator *a)
{
    if (f->fd >= 0)
        close(f->fd);
    pp_free(a, f->buf);
    f->fd = -1;
    f->buf = NULL;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int tmp_flush(tmp_file *f, prepack_diag *diag)
{
    if (f->used && write_all(f->fd, f->buf, f->used) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "writing the token store failed: %s",
                       strerror(errno));
    f->used = 0;
    return PREPACK_OK;
}

/* Room for `bytes` more in the buffer (bytes <= WRITE_BUFFER). */
static unsigned char *tmp_reserve(tmp_file *f, size_t bytes,
                                  prepack_diag *diag)
{
    if (f->used + bytes > WRITE_BUFFER && tmp_flush(f, diag) != PREPACK_OK)
        return NULL;
    unsigned char *p = f->buf + f->used;
    f->used += bytes;
    f->size += bytes;
    return p;
}

/* ---- the store ------------------------------------------------------------ */

struct prepack_store {
    prepack_allocator alloc;
    const prepack_allocator *allocp;
    char tmp_dir[4096];
    prepack_dtype forced;    /* the caller's choice */
    prepack_dtype dtype;     /* the width now: UINT16 or UINT32 */
    tmp_file tok, mask;
    int has_mask;
    uint64_t tokens;         /* all tokens added */
    uint64_t open_len;       /* tokens in the open sequence */
    uint32_t *lengths;
    uint64_t *offsets;
    size_t count, cap;
    uint64_t *doc_start;
    size_t docs, docs_cap;
    int doc_pending;
    prepack_input_info *inputs;
    size_t ninputs, inputs_cap;
    int finished;
    void *tok_map;
    uint8_t *mask_map;
};

const char *prepack_dtype_name(prepack_dtype dtype)
{
    switch (dtype) {
    case PREPACK_DTYPE_AUTO: return "auto";
    case PREPACK_DTYPE_UINT16: return "uint16";
    case PREPACK_DTYPE_UINT32: return "uint32";
    default: return NULL;
    }
}

int prepack_dtype_parse(const char *name, prepack_dtype *out)
{
    for (int d = 0; d <= 2; d++)
        if (name && strcmp(name, prepack_dtype_name((prepack_dtype)d)) == 0) {
            *out = (prepack_dtype)d;
            return PREPACK_OK;
        }
    return PREPACK_EINVAL;
}

static const char *default_tmp_dir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

int prepack_store_create(prepack_store **out, const prepack_store_options *o,
                         prepack_diag *diag)
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
    prepack_store *s = pp_calloc(o->allocator, 1, sizeof *s);
    if (!s)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    if (o->allocator) {
        s->alloc = *o->allocator;
        s->allocp = &s->alloc;
    }
    s->tok.fd = s->mask.fd = -1;
    snprintf(s->tmp_dir, sizeof s->tmp_dir, "%s",
             o->tmp_dir ? o->tmp_dir : default_tmp_dir());
    s->forced = o->dtype;
    s->dtype = o->dtype == PREPACK_DTYPE_UINT32 ? PREPACK_DTYPE_UINT32
                                                : PREPACK_DTYPE_UINT16;
    int rc = tmp_open(&s->tok, s->tmp_dir, s->allocp, diag);
    if (rc != PREPACK_OK) {
        prepack_store_free(s);
        return rc;
    }
    *out = s;
    return PREPACK_OK;
}

void prepack_store_free(prepack_store *s)
{
    if (!s)
        return;
    const prepack_allocator *a = s->allocp;
    if (s->tok_map)
        munmap(s->tok_map, (size_t)s->tok.size);
    if (s->mask_map)
        munmap(s->mask_map, (size_t)s->mask.size);
    tmp_close(&s->tok, a);
    tmp_close(&s->mask, a);
    for (size_t i = 0; i < s->ninputs; i++)
        pp_free(a, (void *)s->inputs[i].path);
    pp_free(a, s->inputs);
    pp_free(a, s->lengths);
    pp_free(a, s->offsets);
    pp_free(a, s->doc_start);
    pp_free(a, s);
}

/* ---- growing arrays ---------------------------------------------------- */

static int grow(const prepack_allocator *a, void **arr, size_t *cap,
                size_t need, size_t elem)
{
    if (need <= *cap)
        return PREPACK_OK;
    size_t n = *cap ? *cap + *cap / 2 : 1024;
    if (n < need)
        n = need;
    void *p = pp_realloc(a, *arr, n, elem);
    if (!p)
        return PREPACK_ENOMEM;
    *arr = p;
    *cap = n;
    return PREPACK_OK;
}

/* ---- widening uint16 to uint32 -------------------------------------------- */

/* The first id over 65535 under AUTO: rewrite what was stored as uint32
 * into a new file. Happens at most once per store. */
static int widen(prepack_store *s, prepack_diag *diag)
{
    int rc = tmp_flush(&s->tok, diag);
    tmp_file wide;
    if (rc == PREPACK_OK)
        rc = tmp_open(&wide, s->tmp_dir, s->allocp, diag);
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
        unsigned char *out = tmp_reserve(&wide, n * 4, diag);
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
        tmp_close(&wide, s->allocp);
        return rc;
    }
    tmp_close(&s->tok, s->allocp);
    s->tok = wide;
    s->dtype = PREPACK_DTYPE_UINT32;
    return PREPACK_OK;
}

/* ---- adding ----------------------------------------------------------------- */

static int check_sequence_length(prepack_store *s, size_t n,
                                 prepack_diag *diag)
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
    if (!mask && !s->has_mask)
        return PREPACK_OK;
    if (mask && !s->has_mask) { /* first mask: earlier tokens were trained */
        int rc = tmp_open(&s->mask, s->tmp_dir, s->allocp, diag);
        if (rc != PREPACK_OK)
            return rc;
        s->has_mask = 1;
        for (uint64_t left = s->tokens; left > 0;) {
            size_t k = left > WRITE_BUFFER ? WRITE_BUFFER : (size_t)left;
            unsigned char *p = tmp_reserve(&s->mask, k, diag);
            if (!p)
                return PREPACK_EIO;
            memset(p, 1, k);
            left -= k;
        }
    }
    for (size_t done = 0; done < n;) {
        size_t k = n - done > WRITE_BUFFER ? WRITE_BUFFER : n - done;
        unsigned char *p = tmp_reserve(&s->mask, k, diag);
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

static void put_u32(unsigned char *out, const uint32_t *t, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, t, n * 4);
#else
    for (size_t i = 0; i < n; i++) {
        out[4 * i] = (unsigned char)t[i];
        out[4 * i + 1] = (unsigned char)(t[i] >> 8);
        out[4 * i + 2] = (unsigned char)(t[i] >> 16);
        out[4 * i + 3] = (unsigned char)(t[i] >> 24);
    }
#endif
}

static void put_u16(unsigned char *out, const uint16_t *t, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, t, n * 2);
#else
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = (unsigned char)t[i];
        out[2 * i + 1] = (unsigned char)(t[i] >> 8);
    }
#endif
}

/* Appends at most a buffer's worth of tokens. */
static int add_chunk(prepack_store *s, const uint32_t *t, size_t n,
                     prepack_diag *diag)
{
    if (s->dtype == PREPACK_DTYPE_UINT16) {
        uint32_t max = 0;
        for (size_t i = 0; i < n; i++)
            max = t[i] > max ? t[i] : max;
        if (max > UINT16_MAX) {
            if (s->forced == PREPACK_DTYPE_UINT16)
                return pp_fail(diag, PREPACK_ERANGE, s->count,
                               "token id %u in sequence %zu does not fit "
                               "the uint16 token dtype",
                               max, s->count);
            int rc = widen(s, diag);
            if (rc != PREPACK_OK)
                return rc;
        }
    }
    if (s->dtype == PREPACK_DTYPE_UINT32) {
        unsigned char *p = tmp_reserve(&s->tok, n * 4, diag);
        if (!p)
            return PREPACK_EIO;
        put_u32(p, t, n);
    } else {
        unsigned char *p = tmp_reserve(&s->tok, n * 2, diag);
        if (!p)
            return PREPACK_EIO;
        for (size_t i = 0; i < n; i++) {
            uint16_t v = (uint16_t)t[i];
            put_u16(p + 2 * i, &v, 1);
        }
    }
    return PREPACK_OK;
}

enum { CHUNK_TOKENS = WRITE_BUFFER / 4 };

int prepack_store_add(prepack_store *s, const uint32_t *tokens, size_t n,
                      const uint8_t *loss_mask, prepack_diag *diag)
{
    int rc = check_sequence_length(s, n, diag);
    for (size_t done = 0; rc == PREPACK_OK && done < n;) {
        size_t k = n - done > CHUNK_TOKENS ? CHUNK_TOKENS : n - done;
        rc = add_chunk(s, tokens + done, k, diag);
        done += k;
    }
    if (rc == PREPACK_OK)
        rc = add_mask(s, loss_mask, n, diag);
    if (rc == PREPACK_OK) {
        s->open_len += n;
        s->tokens += n;
    }
    return rc;
}

/* Large little-endian uint16 runs skip the buffer: one copy into the file
 * instead of two. */
static int write_u16(prepack_store *s, const uint16_t *t, size_t n,
                     prepack_diag *diag)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (s->dtype == PREPACK_DTYPE_UINT16 && n * 2 >= WRITE_BUFFER / 4) {
        int rc = tmp_flush(&s->tok, diag);
        if (rc != PREPACK_OK)
            return rc;
        if (write_all(s->tok.fd, (const unsigned char *)t, n * 2) != 0)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "writing the token store failed: %s",
                           strerror(errno));
        s->tok.size += n * 2;
        return PREPACK_OK;
    }
#endif
    int rc = PREPACK_OK;
    for (size_t done = 0; rc == PREPACK_OK && done < n;) {
        size_t k = n - done > CHUNK_TOKENS ? CHUNK_TOKENS : n - done;
        if (s->dtype == PREPACK_DTYPE_UINT16) {
            unsigned char *p = tmp_reserve(&s->tok, k * 2, diag);
            if (!p)
                return PREPACK_EIO;
            put_u16(p, t + done, k);
        } else {
            uint32_t wide[1024];
            for (size_t i = 0; i < k && rc == PREPACK_OK; i += 1024) {
                size_t m = k - i < 1024 ? k - i : 1024;
                for (size_t j = 0; j < m; j++)
                    wide[j] = t[done + i + j];
                rc = add_chunk(s, wide, m, diag);
            }
        }
        done += k;
    }
    return rc;
}

int prepack_store_add_u16(prepack_store *s, const uint16_t *tokens, size_t n,
                          prepack_diag *diag)
{
    size_t end = 0;
    return pp_store_add_ends(s, tokens, 2, n, &end, 0, NULL, 0, diag);
}

static int write_u32(prepack_store *s, const uint32_t *t, size_t n,
                     prepack_diag *diag)
{
    int rc = PREPACK_OK;
    for (size_t done = 0; rc == PREPACK_OK && done < n;) {
        size_t k = n - done > CHUNK_TOKENS ? CHUNK_TOKENS : n - done;
        rc = add_chunk(s, t + done, k, diag);
        done += k;
    }
    return rc;
}

int pp_store_add_ends(prepack_store *s, const void *t, unsigned width,
                      size_t n, const size_t *ends, size_t nends,
                      const uint8_t *starts_doc, int keep_empty,
                      prepack_diag *diag)
{
    /* Check every sequence's length before writing anything: the first
     * continues the open sequence, the others start afresh. */
    int rc = check_sequence_length(s, 0, diag);
    size_t prev = 0;
    for (size_t k = 0; rc == PREPACK_OK && k <= nends; k++) {
        size_t end = k < nends ? ends[k] : n;
        uint64_t len = (k == 0 ? s->open_len : 0) + (end - prev);
        if (len > UINT32_MAX)
            rc = pp_fail(diag, PREPACK_ERANGE, s->count + k,
                         "sequence %zu is longer than %u tokens",
                         s->count + k, UINT32_MAX);
        prev = end;
    }
    if (rc != PREPACK_OK)
        return rc;
    rc = width == 2 ? write_u16(s, t, n, diag) : write_u32(s, t, n, diag);
    if (rc == PREPACK_OK)
        rc = add_mask(s, NULL, n, diag);
    prev = 0;
    for (size_t k = 0; rc == PREPACK_OK && k < nends; k++) {
        s->open_len += ends[k] - prev;
        s->tokens += ends[k] - prev;
        if (starts_doc && starts_doc[k])
            s->doc_pending = 1;
        rc = pp_store_end_sequence(s, keep_empty, diag);
        prev = ends[k];
    }
    if (rc == PREPACK_OK) {
        s->open_len += n - prev;
        s->tokens += n - prev;
    }
    return rc;
}

static prepack_input_info *current_input(prepack_store *s)
{
    return s->ninputs ? &s->inputs[s->ninputs - 1] : NULL;
}

const prepack_allocator *pp_store_allocator(const prepack_store *s)
{
    return s->allocp;
}

int prepack_store_end_sequence(prepack_store *s, prepack_diag *diag)
{
    return pp_store_end_sequence(s, 0, diag);
}

int pp_store_end_sequence(prepack_store *s, int keep_empty,
                          prepack_diag *diag)
{
    if (s->open_len == 0 && !keep_empty)
        return PREPACK_OK;
    const prepack_allocator *a = s->allocp;
    size_t cap = s->cap;
    if (grow(a, (void **)&s->lengths, &cap, s->count + 1,
             sizeof *s->lengths) != PREPACK_OK ||
        grow(a, (void **)&s->offsets, &s->cap, s->count + 1,
             sizeof *s->offsets) != PREPACK_OK)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory for %zu sequences", s->count + 1);
    prepack_input_info *in = current_input(s);
    if (s->doc_pending) {
        if (grow(a, (void **)&s->doc_start, &s->docs_cap, s->docs + 1,
                 sizeof *s->doc_start) != PREPACK_OK)
            return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                           "out of memory");
        s->doc_start[s->docs++] = s->count;
        s->doc_pending = 0;
        if (in)
            in->documents++;
    }
    s->lengths[s->count] = (uint32_t)s->open_len;
    s->offsets[s->count] = s->tokens - s->open_len;
    s->count++;
    if (in) {
        in->sequences++;
        in->tokens += s->open_len;
    }
    s->open_len = 0;
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
    if (grow(s->allocp, (void **)&s->inputs, &s->inputs_cap, s->ninputs + 1,
             sizeof *s->inputs) != PREPACK_OK)
        return PREPACK_ENOMEM;
    size_t len = strlen(path);
    char *copy = pp_alloc(s->allocp, len + 1, 1);
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

static void *map_file(tmp_file *f)
{
    if (f->size == 0)
        return NULL;
    void *p = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, f->fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

int prepack_store_finish(prepack_store *s, prepack_diag *diag)
{
    if (s->finished)
        return PREPACK_OK;
    int rc = pp_store_end_sequence(s, 0, diag);
    if (rc == PREPACK_OK)
        rc = tmp_flush(&s->tok, diag);
    if (rc == PREPACK_OK && s->has_mask)
        rc = tmp_flush(&s->mask, diag);
    if (rc != PREPACK_OK)
        return rc;
    pp_free(s->allocp, s->tok.buf);
    pp_free(s->allocp, s->mask.buf);
    s->tok.buf = s->mask.buf = NULL;
    s->tok_map = map_file(&s->tok);
    s->mask_map = s->has_mask ? map_file(&s->mask) : NULL;
    if ((s->tok.size && !s->tok_map) || (s->mask.size && !s->mask_map))
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot map the token store: %s", strerror(errno));
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

uint64_t prepack_store_offset(const prepack_store *s, size_t i)
{
    return s->offsets[i];
}

const void *prepack_store_tokens(const prepack_store *s)
{
    return s->tok_map;
}

const uint8_t *prepack_store_loss_mask(const prepack_store *s)
{
    return s->mask_map;
}

void prepack_store_copy(const prepack_store *s, size_t i, uint32_t *out)
{
    const unsigned char *p = s->tok_map;
    uint64_t first = s->offsets[i];
    for (uint32_t k = 0; k < s->lengths[i]; k++) {
        if (s->dtype == PREPACK_DTYPE_UINT16) {
            const unsigned char *q = p + 2 * (first + k);
            out[k] = (uint32_t)q[0] | (uint32_t)q[1] << 8;
        } else {
            const unsigned char *q = p + 4 * (first + k);
            out[k] = (uint32_t)q[0] | (uint32_t)q[1] << 8 |
                     (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        }
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
