/* Flat token files: llm.c's .bin (a 256 x int32 header, then uint16 or
 * uint32 tokens) and nanoGPT's headerless uint16 files. Documents are told
 * apart by a delimiter token: llm.c writes it before each document, nanoGPT
 * after. The delimiter stays in its sequence. The file is read once to
 * find the delimiters, in runs of 2^18 tokens scanned on `threads`
 * workers; each sequence becomes a reference into it (see store.c),
 * never a copy, added in file order by the reading thread. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "common/tasks.h"
#include "ingest/readers.h"
#include "ingest/store.h"

enum { HEADER_BYTES = 1024, CHUNK_TOKENS = 1 << 18 };

typedef struct token_file {
    const char *path;
    int fd;
    uint64_t size;
    unsigned width;      /* bytes per token */
    uint64_t first_byte; /* where tokens start */
    uint32_t default_sep;
} token_file;

static int read_llmc_header(token_file *f, prepack_diag *diag)
{
    unsigned char h[HEADER_BYTES];
    char why[200];
    if (f->size < HEADER_BYTES)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: %llu bytes, shorter than the 1024-byte llm.c "
                       "header",
                       f->path, (unsigned long long)f->size);
    if (pp_read_at(f->fd, h, HEADER_BYTES, 0) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: cannot read the 1024-byte llm.c header: %s",
                       f->path, pp_read_why(f->fd, 0, HEADER_BYTES, why,
                                            sizeof why));
    uint32_t magic = pp_load_le32(h), version = pp_load_le32(h + 4),
             count = pp_load_le32(h + 8);
    if (magic == PP_LLMC_GPT2_MAGIC && version == 1) {
        f->width = 2;
        f->default_sep = 50256; /* GPT-2 <|endoftext|> */
    } else if (magic == PP_LLMC_LLAMA3_MAGIC && version == 7) {
        f->width = 4;
        f->default_sep = 128000; /* LLaMA-3 <|begin_of_text|> */
    } else if (magic == PP_LLMC_GPT2_MAGIC || magic == PP_LLMC_LLAMA3_MAGIC) {
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: llm.c magic %u with unknown version %u (known: "
                       "20240520 v1, 20240801 v7)",
                       f->path, magic, version);
    } else {
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: bad llm.c magic %u (expected 20240520 or "
                       "20240801)",
                       f->path, magic);
    }
    f->first_byte = HEADER_BYTES;
    uint64_t want = HEADER_BYTES + (uint64_t)count * f->width;
    if (count > INT32_MAX || want != f->size)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: header says %u tokens (%llu bytes with the "
                       "header) but the file has %llu bytes",
                       f->path, count, (unsigned long long)want,
                       (unsigned long long)f->size);
    return PREPACK_OK;
}

/* ---- finding delimiters -------------------------------------------------- */

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The index of the next `sep` in t[from, n), or n. 8 or 4 tokens a step
 * with SSE2; the scan is most of the work for these formats. */
static size_t find_sep(const void *t, unsigned width, size_t from, size_t n,
                       uint32_t sep)
{
    const unsigned char *p = t;
    size_t i = from;
#if defined(__SSE2__)
    __m128i want = width == 2 ? _mm_set1_epi16((short)(uint16_t)sep)
                              : _mm_set1_epi32((int)sep);
    size_t step = 16 / width;
    for (; i + step <= n; i += step) {
        __m128i v =
            _mm_loadu_si128((const __m128i *)(const void *)(p + i * width));
        __m128i eq =
            width == 2 ? _mm_cmpeq_epi16(v, want) : _mm_cmpeq_epi32(v, want);
        unsigned mask = (unsigned)_mm_movemask_epi8(eq);
        if (mask)
            return i + (size_t)__builtin_ctz(mask) / width;
    }
#endif
    for (; i < n; i++) {
        uint32_t v =
            width == 2 ? ((const uint16_t *)t)[i] : ((const uint32_t *)t)[i];
        if (v == sep)
            return i;
    }
    return n;
}

/* ---- splitting into sequences -------------------------------------------- */

typedef struct splitter {
    prepack_store *store;
    size_t source; /* the file, in the store */
    uint64_t first_byte;
    unsigned width;
    uint32_t sep;
    int before;     /* delimiter opens a document (llm.c) */
    int seen_sep;   /* a delimiter came already */
    uint64_t start; /* token index where the open piece starts */
} splitter;

/* Closes the piece [start, end) as a sequence (empty pieces are none). */
static int close_piece(splitter *sp, uint64_t end, prepack_diag *diag)
{
    int rc = PREPACK_OK;
    if (end > sp->start)
        rc = pp_store_add_ref(sp->store, sp->source,
                              sp->first_byte + sp->start * sp->width,
                              end - sp->start, diag);
    sp->start = end;
    return rc;
}

/* The largest id of a chunk of uint32 tokens (uint16 ones fit anyway). */
static uint32_t chunk_max(const void *t, unsigned width, size_t n)
{
    if (width == 2)
        return 0;
    const uint32_t *u = t;
    uint32_t max = 0;
    for (size_t i = 0; i < n; i++)
        max = u[i] > max ? u[i] : max;
    return max;
}

/* Tokens are read little-endian; on a big-endian host they are swapped. */
static void to_host_order(void *t, unsigned width, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    unsigned char *p = t;
    for (size_t i = 0; i < n; i++, p += width)
        for (unsigned a = 0, b = width - 1; a < b; a++, b--) {
            unsigned char c = p[a];
            p[a] = p[b];
            p[b] = c;
        }
#else
    (void)t;
    (void)width;
    (void)n;
#endif
}

/* A run of tokens read and scanned on a worker: its largest id and where
 * its delimiters are. The reading thread then closes pieces at them, run
 * after run in file order, so the store is the same for any thread
 * count. */
typedef struct tok_chunk {
    uint64_t first; /* the run's first token, in the file */
    size_t n;
    void *buf; /* CHUNK_TOKENS tokens */
    uint32_t *seps; /* delimiter indices in the run, rising */
    size_t nseps, seps_cap;
    uint32_t max;
    int rc;
    prepack_diag diag;
} tok_chunk;

typedef struct chunk_scan {
    const token_file *f;
    uint32_t sep;
    const prepack_allocator *alloc;
} chunk_scan;

static void scan_chunk(void *ctx, void *task, size_t worker)
{
    (void)worker;
    const chunk_scan *c = ctx;
    const token_file *f = c->f;
    tok_chunk *t = task;
    t->nseps = 0;
    t->max = 0;
    uint64_t at = f->first_byte + t->first * f->width;
    if (pp_read_at(f->fd, t->buf, t->n * f->width, at) != 0) {
        char why[200];
        t->rc = pp_fail(&t->diag, PREPACK_EIO, PREPACK_NO_RECORD,
                        "%s: read failed at byte %llu: %s", f->path,
                        (unsigned long long)at,
                        pp_read_why(f->fd, at, t->n * f->width, why,
                                    sizeof why));
        return;
    }
    to_host_order(t->buf, f->width, t->n);
    t->max = chunk_max(t->buf, f->width, t->n);
    t->rc = PREPACK_OK;
    for (size_t i = find_sep(t->buf, f->width, 0, t->n, c->sep); i < t->n;
         i = find_sep(t->buf, f->width, i + 1, t->n, c->sep)) {
        if (pp_grow(c->alloc, (void **)&t->seps, &t->seps_cap, t->nseps + 1,
                    sizeof *t->seps) != PREPACK_OK) {
            t->rc = pp_out_of_memory(&t->diag);
            return;
        }
        t->seps[t->nseps++] = (uint32_t)i;
    }
}

/* Closes a piece at each delimiter of a scanned run: pieces end before
 * each delimiter (before mode) or after it (after mode). The piece before
 * the first delimiter in before mode is cut (llm.c shards start
 * mid-document) and counted partial. */
static int split_chunk(splitter *sp, const tok_chunk *t, prepack_diag *diag)
{
    int rc = PREPACK_OK;
    for (size_t j = 0; j < t->nseps && rc == PREPACK_OK; j++) {
        uint64_t end = t->first + t->seps[j] + (sp->before ? 0 : 1);
        if (sp->before && !sp->seen_sep && end > sp->start)
            prepack_store_count_partial(sp->store);
        sp->seen_sep = 1;
        rc = close_piece(sp, end, diag);
    }
    return rc;
}

static void free_chunks(const prepack_allocator *a, tok_chunk *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        pp_free(a, t[i].buf);
        pp_free(a, t[i].seps);
    }
    pp_free(a, t);
}

static tok_chunk *new_chunks(const prepack_allocator *a, size_t n)
{
    tok_chunk *t = pp_calloc(a, n, sizeof *t);
    int ok = t != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = (t[i].buf = pp_alloc(a, CHUNK_TOKENS, 4)) != NULL;
    if (!ok) {
        free_chunks(a, t, t ? n : 0);
        return NULL;
    }
    return t;
}

/* The oldest run in flight, split into pieces here; progress reported. */
static int take_chunk(token_file *f, splitter *sp, pp_tasks *tasks,
                      const prepack_ingest_options *o, uint32_t *max,
                      prepack_diag *diag)
{
    const tok_chunk *t = pp_tasks_take(tasks, 1);
    if (t->rc != PREPACK_OK) {
        if (diag)
            *diag = t->diag;
        return t->rc;
    }
    *max = t->max > *max ? t->max : *max;
    int rc = split_chunk(sp, t, diag);
    if (rc == PREPACK_OK && o->progress)
        o->progress(o->progress_opaque, "ingest",
                    f->first_byte + (t->first + t->n) * f->width, f->size);
    return rc;
}

/* Reads and scans tokens [from, to) on o->threads workers and splits
 * them here, in order. */
static int split_runs(token_file *f, splitter *sp,
                      const prepack_ingest_options *o,
                      const prepack_allocator *a, uint64_t from, uint64_t to,
                      uint32_t *max, prepack_diag *diag)
{
    chunk_scan ctx = {f, sp->sep, a};
    pp_tasks *tasks = NULL;
    if (pp_tasks_create(&tasks, o->threads, scan_chunk, &ctx, a) != PREPACK_OK)
        return pp_out_of_memory(diag);
    size_t cap = pp_tasks_capacity(tasks), submitted = 0;
    tok_chunk *chunks = new_chunks(a, cap);
    int rc = chunks ? PREPACK_OK : pp_out_of_memory(diag);
    for (uint64_t tok = from; rc == PREPACK_OK && tok < to;
         tok += CHUNK_TOKENS) {
        if (pp_tasks_full(tasks))
            rc = take_chunk(f, sp, tasks, o, max, diag);
        tok_chunk *t = &chunks[submitted++ % cap];
        t->first = tok;
        t->n = to - tok < CHUNK_TOKENS ? (size_t)(to - tok) : CHUNK_TOKENS;
        if (rc == PREPACK_OK)
            rc = pp_tasks_submit(tasks, t);
    }
    while (rc == PREPACK_OK && !pp_tasks_empty(tasks))
        rc = take_chunk(f, sp, tasks, o, max, diag);
    pp_tasks_free(tasks); /* waits for runs still in flight */
    free_chunks(a, chunks, cap);
    return rc;
}

/* Splits tokens [from, to) of the file; the last piece is the file's
 * when at_end, else it ends where the next part's first piece starts. */
static int stream_tokens(token_file *f, splitter *sp,
                         const prepack_ingest_options *o,
                         const prepack_allocator *a, uint64_t from,
                         uint64_t to, int at_end, prepack_diag *diag)
{
    uint32_t max = f->width == 2 ? UINT16_MAX : 0;
    sp->start = from;
    int rc = split_runs(f, sp, o, a, from, to, &max, diag);
    if (rc != PREPACK_OK)
        return rc;
    pp_store_source_max_id(sp->store, sp->source, max);
    /* The last piece: complete in llm.c files (a document runs to the end)
     * unless no delimiter came at all; in raw files it lacks its closing
     * delimiter, so it was cut. */
    if (at_end && to > sp->start && (!sp->before || !sp->seen_sep))
        prepack_store_count_partial(sp->store);
    return close_piece(sp, to, diag);
}

/* The first piece start at or after token `tok`: token 0, and each
 * delimiter (before mode) or the token after one (after mode). Scan tasks
 * cut a file here, so each sequence belongs to the part it starts in. */
static int piece_start_at(token_file *f, const splitter *sp, void *buf,
                          uint64_t tok, uint64_t ntok, uint64_t *out,
                          prepack_diag *diag)
{
    *out = ntok;
    if (tok == 0 || tok >= ntok) {
        *out = tok == 0 ? 0 : ntok;
        return PREPACK_OK;
    }
    uint64_t i = sp->before ? tok : tok - 1; /* where a delimiter counts */
    while (i < ntok) {
        size_t n = ntok - i < CHUNK_TOKENS ? (size_t)(ntok - i) : CHUNK_TOKENS;
        uint64_t at = f->first_byte + i * f->width;
        char why[200];
        if (pp_read_at(f->fd, buf, n * f->width, at) != 0)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "%s: read failed at byte %llu: %s", f->path,
                           (unsigned long long)at,
                           pp_read_why(f->fd, at, n * f->width, why,
                                       sizeof why));
        to_host_order(buf, f->width, n);
        size_t k = find_sep(buf, f->width, 0, n, sp->sep);
        if (k < n) {
            *out = i + k + (sp->before ? 0 : 1);
            return PREPACK_OK;
        }
        i += n;
    }
    return PREPACK_OK;
}

static int open_token_file(token_file *f, const char *path,
                           prepack_format format, prepack_diag *diag)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd = open(path, O_RDONLY);
    if (f->fd < 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "%s: %s", path,
                       strerror(errno));
    f->size = (uint64_t)st.st_size;
    if (format == PREPACK_FORMAT_LLMC)
        return read_llmc_header(f, diag);
    f->width = 2;
    if (f->size % 2)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: %llu bytes, an odd size for uint16 tokens", path,
                       (unsigned long long)f->size);
    return PREPACK_OK;
}

int pp_ingest_tokens(prepack_store *s, const char *path, prepack_format format,
                     const prepack_ingest_options *o, prepack_diag *diag)
{
    pp_input_part whole = {.whole = 1, .end = UINT64_MAX};
    return pp_ingest_tokens_part(s, path, format, o, &whole, diag);
}

int pp_ingest_tokens_part(prepack_store *s, const char *path,
                          prepack_format format,
                          const prepack_ingest_options *o, pp_input_part *part,
                          prepack_diag *diag)
{
    token_file f;
    int rc = open_token_file(&f, path, format, diag);
    splitter sp = {.store = s};
    if (rc == PREPACK_OK) {
        int raw = format == PREPACK_FORMAT_RAW_U16;
        if (raw && !o->has_doc_sep)
            rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                         "%s: raw token files need a document delimiter "
                         "(--doc-sep ID, 50256 for GPT-2)",
                         path);
        sp.sep = o->has_doc_sep ? o->doc_sep : f.default_sep;
        sp.before = o->sep_position == PREPACK_SEP_DEFAULT
                        ? !raw
                        : o->sep_position == PREPACK_SEP_BEFORE;
        if (rc == PREPACK_OK && f.width == 2 && sp.sep > UINT16_MAX)
            rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                         "%s: delimiter %u cannot occur in uint16 tokens", path,
                         sp.sep);
    }
    if (rc == PREPACK_OK) {
        sp.width = f.width;
        sp.first_byte = f.first_byte;
        rc = pp_store_add_file(s, path, f.fd, f.width, 0, f.size, &sp.source, diag);
    }
    if (rc == PREPACK_OK) {
        const prepack_allocator *a = pp_store_allocator(s);
        uint64_t ntok = (f.size - f.first_byte) / f.width, from = 0, to = ntok;
        if (!part->whole) { /* bytes -> tokens -> pieces */
            uint64_t b = part->begin > f.first_byte
                             ? (part->begin - f.first_byte + f.width - 1) / f.width
                             : 0;
            uint64_t e = part->end >= f.size ? ntok
                         : part->end > f.first_byte
                             ? (part->end - f.first_byte + f.width - 1) / f.width
                             : 0;
            void *buf = pp_alloc(a, CHUNK_TOKENS, 4); /* the search's */
            rc = buf ? PREPACK_OK : pp_out_of_memory(diag);
            if (rc == PREPACK_OK)
                rc = piece_start_at(&f, &sp, buf, b, ntok, &from, diag);
            if (rc == PREPACK_OK)
                rc = piece_start_at(&f, &sp, buf, e, ntok, &to, diag);
            pp_free(a, buf);
            if (to < from)
                to = from;
        }
        if (rc == PREPACK_OK)
            rc = stream_tokens(&f, &sp, o, a, from, to, to == ntok, diag);
    }
    if (f.fd >= 0)
        close(f.fd);
    return rc;
}
