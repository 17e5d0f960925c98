/* Megatron-LM indexed datasets: X.idx (header, sequence lengths, byte
 * pointers into X.bin, document index) and X.bin (the tokens), as
 * Megatron's IndexedDatasetBuilder writes them.
 *
 * The .idx arrays follow a 34-byte header, so they are not aligned to
 * their width: every value is decoded from bytes, never read through a
 * cast pointer. The .idx is read in blocks of 65,536 entries with pread,
 * each checked on one of `threads` workers and added to the store in
 * order by the reading thread. The .bin is not copied: each sequence
 * becomes a reference into it (see store.c). Only signed dtypes are read,
 * through a sliding 64 MiB mapping per block, to check that every id is a
 * valid token (non-negative); uint8 and uint16 ids always are, so for
 * them ingest reads the .idx alone. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "common/tasks.h"
#include "ingest/readers.h"
#include "ingest/store.h"

enum {
    HEADER = 34,      /* 9 magic + 8 version + 1 dtype + 8 + 8 */
    BLOCK = 1 << 16,  /* index entries read at a time */
    RUN = 4 << 20,    /* .bin bytes stored at a time */
    WINDOW = 64 << 20 /* .bin bytes mapped at a time */
};

static const unsigned char MAGIC[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

typedef enum { KIND_UNSIGNED, KIND_SIGNED, KIND_FLOAT } dtype_kind;

typedef struct mg_dtype {
    unsigned width;
    dtype_kind kind;
    const char *name;
} mg_dtype;

/* Megatron's dtype codes (megatron/core/datasets/indexed_dataset.py). */
static const mg_dtype DTYPES[9] = {
    {0, KIND_UNSIGNED, NULL},    {1, KIND_UNSIGNED, "uint8"},
    {1, KIND_SIGNED, "int8"},    {2, KIND_SIGNED, "int16"},
    {4, KIND_SIGNED, "int32"},   {8, KIND_SIGNED, "int64"},
    {8, KIND_FLOAT, "float64"},  {4, KIND_FLOAT, "float32"},
    {2, KIND_UNSIGNED, "uint16"}};

typedef struct mg_file {
    char path[4112];
    int fd;
    uint64_t size;
} mg_file;

/* A read-only mapping of part of the .bin: one per task checking ids. */
typedef struct bin_window {
    unsigned char *map;
    uint64_t start, len;
} bin_window;

typedef struct megatron {
    mg_file idx, bin;
    mg_dtype dtype;
    uint64_t sequences, doc_entries;
    uint64_t lengths_at, pointers_at, docs_at; /* byte offsets in .idx */
    prepack_store *store;
    const prepack_ingest_options *opts;
    size_t source;        /* the .bin in the store */
    uint64_t bin_reached; /* the furthest .bin byte a sequence reaches */
    /* a scan task's part: sequences [first, end); whole = all of them */
    uint64_t first, end;
    int whole;
    uint32_t max_id;
    const prepack_allocator *alloc;
} megatron;

static int open_file(mg_file *f, const char *prefix, const char *ext,
                     prepack_diag *diag)
{
    snprintf(f->path, sizeof f->path, "%s%s", prefix, ext);
    f->fd = open(f->path, O_RDONLY);
    struct stat st;
    if (f->fd < 0 || fstat(f->fd, &st) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", f->path, strerror(errno));
    f->size = (uint64_t)st.st_size;
    return PREPACK_OK;
}

static int read_at(const mg_file *f, void *buf, size_t n, uint64_t at,
                   prepack_diag *diag)
{
    char why[200];
    if (pp_read_at(f->fd, buf, n, at) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: read failed at byte %llu: %s", f->path,
                       (unsigned long long)at,
                       pp_read_why(f->fd, at, n, why, sizeof why));
    return PREPACK_OK;
}

/* ---- the header --------------------------------------------------------- */

static int check_sizes(megatron *m, prepack_diag *diag)
{
    uint64_t n = m->sequences, d = m->doc_entries;
    /* Guard the arithmetic: counts past the file cannot be right. */
    if (n > m->idx.size / 12 || d > m->idx.size / 8)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: header counts (%llu sequences, %llu document "
                       "indices) do not fit its %llu bytes",
                       m->idx.path, (unsigned long long)n,
                       (unsigned long long)d, (unsigned long long)m->idx.size);
    uint64_t want = HEADER + 12 * n + 8 * d;
    /* Multimodal indexes add one int8 mode a sequence; only the size
     * tells. */
    if (m->idx.size != want && m->idx.size != want + n)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: %llu bytes, but its header (%llu sequences, "
                       "%llu document indices) needs %llu",
                       m->idx.path, (unsigned long long)m->idx.size,
                       (unsigned long long)n, (unsigned long long)d,
                       (unsigned long long)want);
    if (d == 0)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: no document index (it holds documents + 1 "
                       "entries, at least 1)",
                       m->idx.path);
    m->lengths_at = HEADER;
    m->pointers_at = HEADER + 4 * n;
    m->docs_at = HEADER + 12 * n;
    return PREPACK_OK;
}

static int read_header(megatron *m, prepack_diag *diag)
{
    unsigned char h[HEADER];
    if (m->idx.size < HEADER)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: %llu bytes, shorter than the 34-byte header",
                       m->idx.path, (unsigned long long)m->idx.size);
    int rc = read_at(&m->idx, h, HEADER, 0, diag);
    if (rc != PREPACK_OK)
        return rc;
    if (memcmp(h, MAGIC, sizeof MAGIC) != 0)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: bad magic (not a Megatron MMIDIDX index)",
                       m->idx.path);
    uint64_t version = pp_load_le(h + 9, 8);
    if (version != 1)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: index version %llu, only version 1 is known",
                       m->idx.path, (unsigned long long)version);
    unsigned code = h[17];
    if (code == 0 || code > 8)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: unknown dtype code %u", m->idx.path, code);
    m->dtype = DTYPES[code];
    if (m->dtype.kind == KIND_FLOAT)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: dtype %s (code %u): token ids must be integers",
                       m->idx.path, m->dtype.name, code);
    m->sequences = pp_load_le(h + 18, 8);
    m->doc_entries = pp_load_le(h + 26, 8);
    return check_sizes(m, diag);
}

/* ---- tokens --------------------------------------------------------------- */

/* The id at p, sign-extended for signed dtypes. */
static int64_t id_at(const megatron *m, const unsigned char *p)
{
    unsigned w = m->dtype.width;
    uint64_t u = pp_load_le(p, w);
    if (m->dtype.kind == KIND_SIGNED && w < 8 && (u >> (8 * w - 1)))
        u |= ~UINT64_C(0) << (8 * w);
    return m->dtype.kind == KIND_SIGNED || u <= INT64_MAX ? (int64_t)u
                                                          : INT64_MAX;
}

/* Makes bytes [at, at + n) (n <= RUN) of the .bin addressable through w;
 * returns them. */
static const unsigned char *window(const megatron *m, bin_window *w,
                                   uint64_t at, size_t n, prepack_diag *diag)
{
    if (w->map && at >= w->start && at + n <= w->start + w->len)
        return w->map + (at - w->start);
    if (w->map)
        munmap(w->map, (size_t)w->len);
    w->map = NULL;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    w->start = at - at % page;
    w->len = m->bin.size - w->start < WINDOW ? m->bin.size - w->start : WINDOW;
    if (n == 0 || w->len == 0)
        return (const unsigned char *)"";
    void *p = mmap(NULL, (size_t)w->len, PROT_READ, MAP_PRIVATE, m->bin.fd,
                   (off_t)w->start);
    if (p == MAP_FAILED) {
        pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                "%s: cannot map bytes %llu..%llu: %s", m->bin.path,
                (unsigned long long)w->start,
                (unsigned long long)(w->start + w->len), strerror(errno));
        return NULL;
    }
    w->map = p;
    return w->map + (at - w->start);
}

static void close_window(bin_window *w)
{
    if (w->map)
        munmap(w->map, (size_t)w->len);
    w->map = NULL;
}

/* k signed ids of one width at p: their largest (as unsigned), and in
 * *bad any bit that makes one invalid (negative, or past 2^32 - 1).
 * One loop a width with constant-width loads, so the compiler keeps it
 * branch-free and vectorises it: the id check is all the work of a
 * signed .bin. */
#define PP_RUN_MAX(type, load, bad_bits)                                   \
    do {                                                                   \
        type mx = 0, any = 0;                                              \
        for (size_t i = 0; i < k; i++) {                                   \
            type v = (type)load;                                           \
            any |= v;                                                      \
            mx = v > mx ? v : mx;                                          \
        }                                                                  \
        *bad = (any & (bad_bits)) != 0;                                    \
        return (uint32_t)(mx > UINT32_MAX ? UINT32_MAX : mx);              \
    } while (0)

static uint32_t run_max(const unsigned char *p, size_t k, unsigned w,
                        int *bad)
{
    switch (w) {
    case 1:
        PP_RUN_MAX(uint32_t, p[i], 0x80u);
    case 2:
        PP_RUN_MAX(uint32_t, pp_load_le(p + 2 * i, 2), 0x8000u);
    case 4:
        PP_RUN_MAX(uint32_t, pp_load_le(p + 4 * i, 4), 0x80000000u);
    default:
        PP_RUN_MAX(uint64_t, pp_load_le(p + 8 * i, 8),
                   ~(uint64_t)UINT32_MAX);
    }
}
#undef PP_RUN_MAX

/* Checks that sequence `seq`'s ids are in 0..2^32-1, raising *max. A run
 * with a bad id is read again id by id to name the first. */
static int check_ids(const megatron *m, bin_window *win, uint64_t seq,
                     uint64_t ptr, uint64_t len, uint32_t *max,
                     prepack_diag *diag)
{
    unsigned w = m->dtype.width;
    size_t per_run = RUN / w;
    for (uint64_t done = 0; done < len;) {
        size_t k = len - done < per_run ? (size_t)(len - done) : per_run;
        const unsigned char *p = window(m, win, ptr + done * w, k * w, diag);
        if (!p)
            return PREPACK_EIO;
        int bad = 0;
        uint32_t run = run_max(p, k, w, &bad);
        if (!bad) {
            *max = run > *max ? run : *max;
            done += k;
            continue;
        }
        for (size_t i = 0; i < k; i++, p += w) {
            int64_t v = id_at(m, p);
            if (v < 0 || v > (int64_t)UINT32_MAX)
                return pp_fail(diag, PREPACK_EFORMAT, seq,
                               "%s: sequence %llu, token %llu: id %lld is "
                               "not in 0..4294967295",
                               m->bin.path, (unsigned long long)seq,
                               (unsigned long long)(done + i), (long long)v);
            *max = (uint32_t)v > *max ? (uint32_t)v : *max;
        }
        done += k;
    }
    return PREPACK_OK;
}

/* ---- the index, block by block --------------------------------------------- */

/* The document index: entries e_0 = 0 <= e_1 <= ... <= e_{d-1} = n;
 * document j holds sequences e_j .. e_{j+1} - 1. Read in blocks. */
typedef struct doc_cursor {
    uint64_t entry;     /* next entry to consume */
    uint64_t prev;      /* the last entry consumed */
    unsigned char *buf; /* BLOCK entries */
    uint64_t buf_first, buf_count;
} doc_cursor;

static int doc_value(megatron *m, doc_cursor *c, uint64_t j, uint64_t *v,
                     prepack_diag *diag)
{
    if (j < c->buf_first || j >= c->buf_first + c->buf_count) {
        c->buf_first = j;
        c->buf_count = m->doc_entries - j < BLOCK ? m->doc_entries - j : BLOCK;
        int rc = read_at(&m->idx, c->buf, (size_t)(8 * c->buf_count),
                         m->docs_at + 8 * j, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    *v = pp_load_le(c->buf + 8 * (j - c->buf_first), 8);
    return PREPACK_OK;
}

static int bad_doc_entry(const megatron *m, uint64_t j, uint64_t v,
                         prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_EFORMAT, j,
                   "%s: document index entry %llu is %llu; entries must "
                   "rise from 0 to the number of sequences (%llu)",
                   m->idx.path, (unsigned long long)j, (unsigned long long)v,
                   (unsigned long long)m->sequences);
}

/* Consumes the entries equal to sequence i (more than one: empty
 * documents) and sets *starts when there were any: i starts a document.
 * The last entry closes the last document and is left to
 * finish_documents. */
static int documents_at(megatron *m, doc_cursor *c, uint64_t i, uint8_t *starts,
                        prepack_diag *diag)
{
    *starts = 0;
    while (c->entry + 1 < m->doc_entries) {
        uint64_t v;
        int rc = doc_value(m, c, c->entry, &v, diag);
        if (rc != PREPACK_OK)
            return rc;
        if (v > i)
            break;
        if (v < i || v < c->prev || (c->entry == 0 && v != 0))
            return bad_doc_entry(m, c->entry, v, diag);
        c->prev = v;
        c->entry++;
        *starts = 1;
    }
    return PREPACK_OK;
}

/* After the last sequence every remaining entry must equal n. */
static int finish_documents(megatron *m, doc_cursor *c, prepack_diag *diag)
{
    for (; c->entry < m->doc_entries; c->entry++) {
        uint64_t v;
        int rc = doc_value(m, c, c->entry, &v, diag);
        if (rc != PREPACK_OK)
            return rc;
        if (v != m->sequences)
            return bad_doc_entry(m, c->entry, v, diag);
    }
    return PREPACK_OK;
}

static int check_entry(const megatron *m, uint64_t i, int64_t len, int64_t ptr,
                       prepack_diag *diag)
{
    if (len < 0)
        return pp_fail(diag, PREPACK_EFORMAT, i,
                       "%s: sequence %llu has negative length %lld",
                       m->idx.path, (unsigned long long)i, (long long)len);
    uint64_t bytes = (uint64_t)len * m->dtype.width;
    if (ptr >= 0 && (uint64_t)ptr % m->dtype.width != 0)
        return pp_fail(diag, PREPACK_EFORMAT, i,
                       "%s: sequence %llu points at byte %lld, not a "
                       "multiple of its %s tokens' %u bytes",
                       m->idx.path, (unsigned long long)i, (long long)ptr,
                       m->dtype.name, m->dtype.width);
    if (ptr < 0 || (uint64_t)ptr > m->bin.size ||
        bytes > m->bin.size - (uint64_t)ptr)
        return pp_fail(diag, PREPACK_EFORMAT, i,
                       "%s: sequence %llu points at bytes %lld..%lld, "
                       "outside %s (%llu bytes)",
                       m->idx.path, (unsigned long long)i, (long long)ptr,
                       (long long)ptr + (long long)bytes, m->bin.path,
                       (unsigned long long)m->bin.size);
    return PREPACK_OK;
}

/* A block of index entries, checked on a worker (entries, and for signed
 * dtypes every id they point at) and then added to the store, documents
 * and all, on the reading thread in block order. A check that fails
 * stops the block at sequence `bad`; the reading thread reports it when
 * it gets there, after the document entries the single-threaded order
 * checks first, so the message is the same for any thread count. */
typedef struct idx_block {
    uint64_t first;
    size_t count;
    unsigned char *lens, *ptrs; /* BLOCK entries each, as read */
    size_t bad;                 /* count: none failed */
    int bad_ids;                /* bad's entry is fine, its ids are not */
    int rc;
    prepack_diag diag;
    uint32_t max_id;  /* of the ids checked */
    uint64_t reached; /* the furthest .bin byte the block's sequences reach */
} idx_block;

static int64_t entry_len(const idx_block *b, size_t k)
{
    return (int32_t)(uint32_t)pp_load_le(b->lens + 4 * k, 4);
}

static int64_t entry_ptr(const idx_block *b, size_t k)
{
    return (int64_t)pp_load_le(b->ptrs + 8 * k, 8);
}

static void check_block(void *ctx, void *task, size_t worker)
{
    (void)worker;
    const megatron *m = ctx;
    idx_block *b = task;
    bin_window win = {0};
    b->max_id = 0;
    b->reached = 0;
    b->bad = 0;
    b->bad_ids = 0;
    b->rc = read_at(&m->idx, b->lens, 4 * b->count,
                    m->lengths_at + 4 * b->first, &b->diag);
    if (b->rc == PREPACK_OK)
        b->rc = read_at(&m->idx, b->ptrs, 8 * b->count,
                        m->pointers_at + 8 * b->first, &b->diag);
    int scan = m->dtype.kind == KIND_SIGNED;
    for (; b->rc == PREPACK_OK && b->bad < b->count; b->bad++) {
        uint64_t i = b->first + b->bad;
        int64_t len = entry_len(b, b->bad), ptr = entry_ptr(b, b->bad);
        b->rc = check_entry(m, i, len, ptr, &b->diag);
        if (b->rc == PREPACK_OK && scan) {
            b->rc = check_ids(m, &win, i, (uint64_t)ptr, (uint64_t)len,
                              &b->max_id, &b->diag);
            b->bad_ids = b->rc != PREPACK_OK;
        }
        if (b->rc != PREPACK_OK)
            break;
        uint64_t end = (uint64_t)ptr + (uint64_t)len * m->dtype.width;
        b->reached = end > b->reached ? end : b->reached;
    }
    close_window(&win);
}

static int fail_as(prepack_diag *diag, const idx_block *b)
{
    if (diag)
        *diag = b->diag;
    return b->rc;
}

/* Adds a checked block's sequences to the store in order. */
static int add_block(megatron *m, const idx_block *b, doc_cursor *docs,
                     prepack_diag *diag)
{
    for (size_t k = 0; k < b->count; k++) {
        if (k == b->bad && !b->bad_ids) /* its entry, or reading the block */
            return fail_as(diag, b);
        uint8_t starts = 0;
        int rc = documents_at(m, docs, b->first + k, &starts, diag);
        if (rc != PREPACK_OK)
            return rc;
        if (k == b->bad)
            return fail_as(diag, b);
        if (starts)
            prepack_store_begin_document(m->store);
        rc = pp_store_add_ref(m->store, m->source, (uint64_t)entry_ptr(b, k),
                              (uint64_t)entry_len(b, k), diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    m->max_id = b->max_id > m->max_id ? b->max_id : m->max_id;
    m->bin_reached = b->reached > m->bin_reached ? b->reached : m->bin_reached;
    return PREPACK_OK;
}

/* A part starting at sequence m->first: consumes (and checks) the
 * document entries below it, which belong to earlier parts' documents. */
static int skip_documents(megatron *m, doc_cursor *c, prepack_diag *diag)
{
    while (m->first > 0 && c->entry + 1 < m->doc_entries) {
        uint64_t v;
        int rc = doc_value(m, c, c->entry, &v, diag);
        if (rc != PREPACK_OK)
            return rc;
        if (v >= m->first)
            break;
        if (v < c->prev || (c->entry == 0 && v != 0))
            return bad_doc_entry(m, c->entry, v, diag);
        c->prev = v;
        c->entry++;
    }
    return PREPACK_OK;
}

static void free_blocks(const prepack_allocator *a, idx_block *b, size_t n)
{
    for (size_t i = 0; b && i < n; i++) {
        pp_free(a, b[i].lens);
        pp_free(a, b[i].ptrs);
    }
    pp_free(a, b);
}

static idx_block *new_blocks(const prepack_allocator *a, size_t n)
{
    idx_block *b = pp_calloc(a, n, sizeof *b);
    int ok = b != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = (b[i].lens = pp_alloc(a, BLOCK, 4)) &&
             (b[i].ptrs = pp_alloc(a, BLOCK, 8));
    if (!ok) {
        free_blocks(a, b, b ? n : 0);
        return NULL;
    }
    return b;
}

/* The oldest block in flight, added to the store; progress reported. */
static int take_block(megatron *m, pp_tasks *tasks, doc_cursor *docs,
                      prepack_diag *diag)
{
    const idx_block *b = pp_tasks_take(tasks, 1);
    int rc = add_block(m, b, docs, diag);
    if (rc == PREPACK_OK && m->opts->progress) /* index bytes read */
        m->opts->progress(m->opts->progress_opaque, "ingest",
                          m->lengths_at + 12 * (b->first + b->count),
                          m->idx.size);
    return rc;
}

/* Blocks are checked on opts->threads workers (ids are most of the work
 * for signed dtypes) and added to the store in order here. */
static int read_blocks(megatron *m, doc_cursor *docs, prepack_diag *diag)
{
    pp_tasks *tasks = NULL;
    if (pp_tasks_create(&tasks, m->opts->threads, check_block, m, m->alloc) !=
        PREPACK_OK)
        return pp_out_of_memory(diag);
    size_t cap = pp_tasks_capacity(tasks), submitted = 0;
    idx_block *blocks = new_blocks(m->alloc, cap);
    int rc = blocks ? PREPACK_OK : pp_out_of_memory(diag);
    for (uint64_t first = m->first; rc == PREPACK_OK && first < m->end;
         first += BLOCK) {
        if (pp_tasks_full(tasks))
            rc = take_block(m, tasks, docs, diag);
        idx_block *b = &blocks[submitted++ % cap];
        b->first = first;
        b->count = m->end - first < BLOCK ? (size_t)(m->end - first) : BLOCK;
        if (rc == PREPACK_OK)
            rc = pp_tasks_submit(tasks, b);
    }
    while (rc == PREPACK_OK && !pp_tasks_empty(tasks))
        rc = take_block(m, tasks, docs, diag);
    pp_tasks_free(tasks); /* waits for blocks still in flight */
    free_blocks(m->alloc, blocks, cap);
    return rc;
}

static int read_all(megatron *m, prepack_diag *diag)
{
    doc_cursor docs = {0, 0, pp_alloc(m->alloc, BLOCK, 8), 0, 0};
    int rc = docs.buf ? PREPACK_OK : pp_out_of_memory(diag);
    if (rc == PREPACK_OK)
        rc = skip_documents(m, &docs, diag);
    if (rc == PREPACK_OK)
        rc = read_blocks(m, &docs, diag);
    if (rc == PREPACK_OK && m->end == m->sequences)
        rc = finish_documents(m, &docs, diag);
    if (rc == PREPACK_OK && m->whole)
        rc = pp_megatron_check_reach(m->bin.path, m->idx.path, m->bin.size,
                                     m->sequences,
                                     m->bin_reached,
                                     m->opts->allow_trailing_bytes, diag);
    pp_free(m->alloc, docs.buf);
    return rc;
}

int pp_megatron_check_reach(const char *bin_path, const char *idx_path,
                            uint64_t bin_size, uint64_t sequences,
                            uint64_t reached, int allow_trailing,
                            prepack_diag *diag)
{
    if (!sequences || reached >= bin_size || allow_trailing)
        return PREPACK_OK;
    return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                   "%s: %llu bytes, but the sequences of %s reach only "
                   "%llu: the last %llu belong to no sequence (a .bin "
                   "and .idx that do not go together?); "
                   "--allow-trailing-bytes accepts them",
                   bin_path, (unsigned long long)bin_size, idx_path,
                   (unsigned long long)reached,
                   (unsigned long long)(bin_size - reached));
}

int pp_ingest_megatron(prepack_store *s, const char *prefix,
                       const prepack_ingest_options *o, prepack_diag *diag)
{
    pp_input_part whole = {.whole = 1, .end = UINT64_MAX};
    return pp_ingest_megatron_part(s, prefix, o, &whole, diag);
}

int pp_ingest_megatron_part(prepack_store *s, const char *prefix,
                            const prepack_ingest_options *o,
                            pp_input_part *part, prepack_diag *diag)
{
    megatron m;
    memset(&m, 0, sizeof m);
    m.whole = part->whole;
    m.idx.fd = m.bin.fd = -1;
    m.store = s;
    m.opts = o;
    m.alloc = pp_store_allocator(s);
    int rc = open_file(&m.idx, prefix, ".idx", diag);
    if (rc == PREPACK_OK)
        rc = open_file(&m.bin, prefix, ".bin", diag);
    if (rc == PREPACK_OK)
        rc = read_header(&m, diag);
    if (rc == PREPACK_OK)
        rc = pp_store_add_file(s, m.bin.path, m.bin.fd, m.dtype.width,
                               m.dtype.kind == KIND_SIGNED, m.bin.size,
                               &m.source, diag);
    if (rc == PREPACK_OK)
        rc = pp_store_source_index(s, m.source, m.idx.path, diag);
    if (rc == PREPACK_OK) {
        m.first = m.whole || part->begin > m.sequences ? 0 : part->begin;
        m.end = m.whole || part->end > m.sequences ? m.sequences : part->end;
        if (!m.whole && part->begin > m.sequences)
            m.first = m.sequences;
        if (m.first > m.end)
            m.first = m.end;
        rc = read_all(&m, diag);
    }
    part->sequences_total = m.sequences;
    part->bin_reached = m.bin_reached;
    part->bin_size = m.bin.size;
    if (rc == PREPACK_OK) /* unsigned dtypes: their width bounds the ids */
        pp_store_source_max_id(s, m.source,
                               m.dtype.kind == KIND_SIGNED ? m.max_id
                               : m.dtype.width == 1        ? UINT8_MAX
                                                           : UINT16_MAX);
    if (m.idx.fd >= 0)
        close(m.idx.fd);
    if (m.bin.fd >= 0)
        close(m.bin.fd);
    return rc;
}
