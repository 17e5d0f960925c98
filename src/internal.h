/* Helpers shared by the library's files; never part of the public API. */
#ifndef PREPACK_INTERNAL_H
#define PREPACK_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "prepack.h"

/* ---- allocation (alloc.c) ---------------------------------------------- */

/* Every allocation goes through the caller's allocator (or libc's), so a
 * test can fail the k-th allocation and check nothing leaks. Sizes are
 * element count x element size with overflow checked: NULL on overflow. */
void *pp_alloc(const prepack_allocator *a, size_t count, size_t size);
/* Non-zero for an allocator missing one of its three functions (NULL,
 * the C library's, is complete): callers refuse it with PREPACK_EINVAL. */
int pp_allocator_incomplete(const prepack_allocator *a);
/* zstd's ZSTD_customMem hooks over an allocator (opaque: the allocator),
 * so zstd's contexts allocate where the caller's handle does. */
void *pp_zstd_alloc(void *opaque, size_t size);
void pp_zstd_free(void *opaque, void *p);
void *pp_calloc(const prepack_allocator *a, size_t count, size_t size);
void *pp_realloc(const prepack_allocator *a, void *p, size_t count,
                 size_t size);
void pp_free(const prepack_allocator *a, void *p);
/* One zeroed allocation (libc's, freed with pp_free(NULL, ...)) holding
 * `count` parts of bytes[i] bytes, each 8-byte aligned; part[i] receives
 * each part's address, part[0] being the block's. NULL when out of memory
 * or when the sizes overflow. For results handed out as one block. */
void *pp_alloc_parts(const size_t *bytes, size_t count, void **part);
/* Makes *arr hold at least `need` elements of `elem` bytes, growing *cap by
 * half (so appending one at a time is O(1) amortised). PREPACK_ENOMEM
 * leaves *arr and *cap as they were. */
int pp_grow(const prepack_allocator *a, void **arr, size_t *cap, size_t need,
            size_t elem);

/* ---- descriptors (io.c) ------------------------------------------------ */

/* All n bytes, retrying short and interrupted calls; 0 or -1 (errno). */
int pp_write_all(int fd, const void *data, size_t n);
/* n bytes at offset `at`; -1 on an error or when the file ends first. */
int pp_read_at(int fd, void *buf, size_t n, uint64_t at);

/* ---- diagnostics (error.c) --------------------------------------------- */

/* Fills diag (when not NULL) and returns code, so callers can write
 * `return pp_fail(diag, PREPACK_EINVAL, rec, "...", ...);`. */
int pp_fail(prepack_diag *diag, int code, uint64_t record, const char *fmt,
            ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* ---- items (items.c) --------------------------------------------------- */

/* What the planner places: sequences after the overlong policy and with
 * zero-length ones left out. Arrays are stored only when they differ from
 * the identity, so the common case (nothing skipped, dropped or split)
 * costs no memory: item i is then sequence i, min(lengths[i], L) long. */
typedef struct pp_items {
    size_t count;
    const uint32_t *lengths; /* the caller's, borrowed during planning */
    uint32_t max_len;        /* L */
    uint32_t *src;           /* source sequence, or NULL for identity */
    uint32_t *len;           /* length, or NULL for min(lengths[src], L) */
    uint32_t *off;           /* token offset, or NULL for 0 */
    const prepack_allocator *alloc;
} pp_items;

/* How one sequence of length len becomes items under a policy: *count
 * items, each max_len long except the last, which is *last long. *count
 * is 0 for an empty or dropped sequence. ERROR is treated as TRUNCATE;
 * callers reject overlong sequences before. */
static inline uint64_t pp_item_shape(uint32_t len, uint32_t max_len,
                                     prepack_overlong policy, uint32_t *last)
{
    *last = len;
    if (len == 0)
        return 0;
    if (len <= max_len)
        return 1;
    switch (policy) {
    case PREPACK_OVERLONG_DROP:
        return 0;
    case PREPACK_OVERLONG_SPLIT: {
        uint64_t chunks = ((uint64_t)len + max_len - 1) / max_len;
        *last = (uint32_t)(len - (chunks - 1) * max_len);
        return chunks;
    }
    default:
        *last = max_len;
        return 1;
    }
}

/* Applies the overlong policy and fills the item counts of *stats
 * (sequences, input_tokens, zero_length, overlong, truncated_tokens,
 * split_chunks, dropped_*, items, tokens). */
int pp_items_build(pp_items *it, const uint32_t *lengths, size_t n,
                   uint32_t max_len, prepack_overlong policy,
                   prepack_plan_stats *stats, const prepack_allocator *a,
                   prepack_diag *diag);
void pp_items_destroy(pp_items *it);

/* The rows no plan can do with fewer than, from the items' count per
 * length (count_of[0..max_len]): the largest of ceil(tokens / L),
 * Martello and Toth's L2 and ceil(items / max_per_row) (bound.c). */
uint64_t pp_lower_bound(const uint32_t *count_of, uint32_t max_len,
                        uint64_t tokens, uint64_t items, uint32_t max_per_row);

static inline uint32_t pp_item_src(const pp_items *it, size_t i)
{
    return it->src ? it->src[i] : (uint32_t)i;
}

static inline uint32_t pp_item_len(const pp_items *it, size_t i)
{
    if (it->len)
        return it->len[i];
    uint32_t l = it->lengths[pp_item_src(it, i)];
    return l < it->max_len ? l : it->max_len;
}

static inline uint32_t pp_item_off(const pp_items *it, size_t i)
{
    return it->off ? it->off[i] : 0;
}

/* ---- longest first (sort.c) -------------------------------------------- */

/* Items sort by length descending, ties by index ascending (the FFD/BFD
 * order). count_of must hold L + 1 entries. */

/* count_of[v] = how many items have length v. O(items + L). */
void pp_count_lengths(const pp_items *it, uint32_t *count_of);
/* Turns those counts, in place, into the position of each length's first
 * item in longest-first order; then `count_of[len(i)]++` visited in index
 * order yields each item's position. O(L). */
void pp_first_positions_desc(uint32_t *count_of, uint32_t max_len);

/* ---- the free-space index (buckets.c) ----------------------------------- */

/* Rows grouped by exact free space 1..L, each bucket a pairing heap that
 * yields its lowest-numbered row. Best fit: a hierarchical bitset finds the
 * smallest non-empty bucket >= need in O(log64 L). First fit: a min tree
 * over the buckets' lowest rows finds the lowest row in any bucket >= need
 * in O(log L). Rows with free space 0 are kept out: they take nothing. */
typedef struct pp_buckets {
    uint32_t *head;      /* [L+1] root row of each bucket's heap, or NIL */
    uint32_t *child;     /* per row: first child in the heap */
    uint32_t *sibling;   /* per row: next sibling in the heap */
    size_t rows_cap;
    uint64_t *bits[6];   /* bits[0] over buckets, bits[k+1] over bits[k] */
    size_t words[6];
    int levels;
    uint32_t max_free;
    uint64_t *lowest;    /* first fit only: min tree over (head[f], f), or
                            NULL */
    size_t lowest_cap;   /* its leaves, a power of two > max_free */
    const prepack_allocator *alloc;
} pp_buckets;

#define PP_NIL UINT32_MAX

/* first_fit: also keep the tree that pp_buckets_first needs. */
int pp_buckets_init(pp_buckets *b, uint32_t max_free, size_t expected_rows,
                    int first_fit, const prepack_allocator *a);
void pp_buckets_destroy(pp_buckets *b);
/* Puts row r (new or just removed) into bucket free_space (> 0). */
int pp_buckets_insert(pp_buckets *b, uint32_t r, uint32_t free_space);
/* The smallest non-empty bucket >= need, or 0 when none. */
uint32_t pp_buckets_best(const pp_buckets *b, uint32_t need);
/* First fit: the bucket >= need that holds the lowest-numbered row of all
 * buckets >= need, or 0 when none. O(log L). */
uint32_t pp_buckets_first(const pp_buckets *b, uint32_t need);
/* Removes and returns the lowest-numbered row of a non-empty bucket. */
uint32_t pp_buckets_pop(pp_buckets *b, uint32_t free_space);

/* ---- byte sources (source.c) ------------------------------------------- */

/* A file read front to back: plain, zstd or gzip (by magic bytes). */
typedef struct pp_source pp_source;
int pp_source_open(pp_source **out, const char *path,
                   const prepack_allocator *a, prepack_diag *diag);
/* Reads up to cap bytes; *got == 0 at the end. Corrupt or cut-short
 * streams are PREPACK_EFORMAT naming the file. */
int pp_source_read(pp_source *s, void *buf, size_t cap, size_t *got,
                   prepack_diag *diag);
void pp_source_close(pp_source *s);
/* File bytes consumed so far, and the file's size: for progress. */
uint64_t pp_source_done(const pp_source *s);
uint64_t pp_source_size(const pp_source *s);

/* ---- the store, for ingest (store.c) ------------------------------------- */

/* Ends the open sequence; keep_empty makes an empty one a sequence of
 * length 0 (formats whose records are sequences: a JSONL line, a Megatron
 * index entry), so ids stay aligned with records. */
int pp_store_end_sequence(prepack_store *s, int keep_empty,
                          prepack_diag *diag);
/* Binary inputs are referenced, not copied: add_file keeps a duplicate of
 * fd as a new source (tokens `width` bytes each, little-endian, signed or
 * not) and add_ref appends a sequence of len tokens at byte `offset` in
 * it. The reader checks ids (non-negative, < 2^32) and reports the largest
 * through source_max_id, which decides the store's dtype. */
int pp_store_add_file(prepack_store *s, int fd, unsigned width, int is_signed,
                      uint64_t size, size_t *index, prepack_diag *diag);
int pp_store_add_ref(prepack_store *s, size_t src, uint64_t offset,
                     uint64_t len, prepack_diag *diag);
void pp_store_source_max_id(prepack_store *s, size_t src, uint32_t max_id);
/* Copies tokens [first, first + n) of sequence i as out_width-byte
 * (2 or 4) host-order integers. */
void pp_store_copy_range(const prepack_store *s, size_t i, uint32_t first,
                         uint32_t n, unsigned out_width, void *out);
/* The allocator a store was made with (NULL = libc). */
const prepack_allocator *pp_store_allocator(const prepack_store *s);

/* ---- readers (ingest_*.c, ingest_jsonl.cpp) ------------------------------ */

int pp_ingest_jsonl(prepack_store *s, const char *path,
                    const prepack_ingest_options *o, prepack_diag *diag);
int pp_ingest_megatron(prepack_store *s, const char *prefix,
                       const prepack_ingest_options *o, prepack_diag *diag);
int pp_ingest_tokens(prepack_store *s, const char *path,
                     prepack_format format, const prepack_ingest_options *o,
                     prepack_diag *diag);

/* ---- shard sets (manifest.c, manifest_read.cpp) -------------------------- */

typedef struct pp_shard_info {
    char file[32];
    uint64_t rows, tokens, bytes, xxh64;
} pp_shard_info;

/* Writes manifest.json's content (docs/FORMAT.md). */
void pp_manifest_write(FILE *f, uint32_t max_seq_len, const char *dtype,
                       uint32_t rows_per_frame, int level,
                       const pp_shard_info *shards, size_t nshards,
                       const prepack_manifest_info *info);

/* Whether a file name is one a writer makes in a set's directory (shards,
 * the manifest, their temporary names): what overwrite may remove and
 * what verify expects the manifest to list. */
int pp_is_set_file(const char *name);

/* The bytes one msgpack object at p[0..n) spans, or 0 when it is cut
 * short, uses an unknown type byte, nests over 32 deep, or has a container
 * claiming more elements than bytes remain (msgpack_check.c). */
size_t pp_msgpack_span(const unsigned char *p, size_t n);

/* simdjson's version (ingest_jsonl.cpp: its header is C++). */
const char *pp_simdjson_version(void);

/* What a reader needs of a manifest. */
typedef struct pp_manifest {
    const prepack_allocator *alloc; /* what shards was allocated with */
    uint32_t max_seq_len;
    prepack_dtype dtype;
    uint32_t rows_per_frame;
    pp_shard_info *shards;   /* through alloc */
    size_t nshards;
} pp_manifest;

/* Parses and checks a manifest; errors name `path`. */
int pp_manifest_read(const char *path, const prepack_allocator *a,
                     pp_manifest *out, prepack_diag *diag);
void pp_manifest_free(pp_manifest *m);

/* ---- compressing frames (compress_pool.c) -------------------------------- */

typedef struct pp_pool pp_pool;
typedef struct pp_frame_result {
    const void *data;   /* compressed bytes, valid until the next submit */
    size_t size, raw_size;
    uint32_t checksum;  /* XXH64 low 32 bits of the raw bytes */
    size_t error;       /* a zstd error code, or 0 */
} pp_frame_result;

/* threads <= 1: compress on the caller's thread. Buffers and zstd contexts
 * come from a (NULL = libc), from the workers' threads too. */
int pp_pool_create(pp_pool **out, int threads, int level,
                   const prepack_allocator *a);
void pp_pool_free(pp_pool *p);
int pp_pool_full(const pp_pool *p);
int pp_pool_empty(const pp_pool *p);
/* Takes ownership of data (from the pool's allocator); the pool must not
 * be full. */
int pp_pool_submit(pp_pool *p, void *data, size_t size);
/* The oldest submitted frame once compressed (waiting if wait): 1, or 0
 * when there is none ready. Results come in submission order. */
int pp_pool_take(pp_pool *p, int wait, pp_frame_result *out);

/* ---- batches (batch.c) --------------------------------------------------- */

typedef struct pp_batch_buffers pp_batch_buffers;
/* Fills *out from the reader's rows into *bufs (created on first use). */
int pp_reader_batch(prepack_reader *r, const prepack_allocator *a,
                    pp_batch_buffers **bufs,
                    const size_t *rows, size_t n,
                    const prepack_batch_options *o, prepack_batch *out,
                    prepack_diag *diag);
void pp_batch_buffers_free(const prepack_allocator *a, pp_batch_buffers *b);

/* ---- the plan (plan.c) ------------------------------------------------- */

struct prepack_plan {
    prepack_allocator alloc;   /* copy of the caller's, or zeroed = libc */
    const prepack_allocator *allocp; /* &alloc or NULL */
    prepack_plan_stats stats;
    size_t rows;
    size_t items;
    uint32_t *row_start;  /* [rows + 1] first entry of each physical row */
    uint32_t *row_perm;   /* [rows] logical -> physical row, or NULL */
    uint32_t *seq;        /* [items] source sequence of each entry */
    uint32_t *len;        /* [items] tokens of each entry */
    uint32_t *off;        /* [items] token offset, NULL when none split */
    prepack_overlong overlong; /* the policy, for the report */
};

#endif
