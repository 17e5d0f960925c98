/*
 * prepack.h - pack variable-length token sequences into fixed-length rows.
 *
 * This header is the whole public API and its manual. Conventions:
 *
 *  - Every public name starts with prepack_ / PREPACK_.
 *  - Fallible functions return int: PREPACK_OK (0) or a negative PREPACK_E*
 *    code; prepack_strerror() names it. Where a function takes a
 *    prepack_diag pointer, a failure also fills it with the record at fault
 *    and a one-line message a person can act on.
 *  - Options structs are all-zero for defaults: `prepack_plan_options o = {0};`
 *    then set what you need.
 *  - Inputs are borrowed for the duration of the call; the library keeps no
 *    pointer to them. Handles are opaque and freed by their _free function,
 *    which accepts NULL. The library never prints, never exits and keeps no
 *    global state: distinct handles may be used from distinct threads, and a
 *    finished plan may be read from many threads at once.
 */
#ifndef PREPACK_H
#define PREPACK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* PREPACK_API marks what libprepack.so exports: the library is built with
 * hidden visibility, so this header is the whole API at link time and the
 * library's own pp_* functions stay private (tests/install/test_symbols.py). */
#if defined(_WIN32)
#define PREPACK_API
#elif defined(__GNUC__) && __GNUC__ >= 4
#define PREPACK_API __attribute__((visibility("default")))
#else
#define PREPACK_API
#endif

#define PREPACK_VERSION_MAJOR 0
#define PREPACK_VERSION_MINOR 1
#define PREPACK_VERSION_PATCH 0
#define PREPACK_VERSION_STRING "0.1.0"

/* The library's version string, e.g. "0.1.0". */
PREPACK_API const char *prepack_version(void);
/* The version of a library prepack uses: "zstd" and "msgpack-c" as linked
 * at run time, "simdjson" and "xxhash" as built with; NULL for other
 * names. zstd's matters for byte-identical shards: another zstd version
 * may compress the same rows to other bytes. */
PREPACK_API const char *prepack_dependency_version(const char *name);

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

enum {
    PREPACK_OK = 0,
    PREPACK_EINVAL = -1,    /* invalid argument or option */
    PREPACK_ENOMEM = -2,    /* an allocation failed; nothing was built */
    PREPACK_EIO = -3,       /* reading or writing a file failed */
    PREPACK_EFORMAT = -4,   /* input text or file is malformed */
    PREPACK_ECORRUPT = -5,  /* stored data fails its checksum or invariants */
    PREPACK_EOVERLONG = -6, /* a sequence is longer than max_seq_len */
    PREPACK_ERANGE = -7     /* a number or count exceeds what is supported */
};

/* A short static description of an error code ("invalid argument", ...).
 * Unknown codes give "unknown error". Never NULL. */
PREPACK_API const char *prepack_strerror(int code);

/* Details of a failure, filled by functions that take one (may be NULL).
 * `record` is the 0-based index of the sequence at fault for the planner, or
 * the 1-based line number for text parsers; PREPACK_NO_RECORD when the
 * failure concerns no single record. `message` is one line, no newline,
 * already naming the record, e.g. "sequence 17 has 5000 tokens, more than
 * max_seq_len 4096". */
#define PREPACK_NO_RECORD UINT64_MAX
typedef struct prepack_diag {
    int code;
    uint64_t record;
    char message[256];
} prepack_diag;

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

/* Optional custom allocator (all three functions, or pass NULL for the C
 * library's malloc/realloc/free). `opaque` is passed back unchanged. A
 * function that gets NULL from malloc/realloc returns PREPACK_ENOMEM after
 * freeing everything it allocated. */
typedef struct prepack_allocator {
    void *(*malloc_fn)(void *opaque, size_t size);
    void *(*realloc_fn)(void *opaque, void *ptr, size_t size);
    void (*free_fn)(void *opaque, void *ptr);
    void *opaque;
} prepack_allocator;

/* Frees memory the library returned (e.g. from prepack_lengths_parse) with
 * the allocator it was made with (NULL = the C library's). NULL is fine. */
PREPACK_API void prepack_free(void *ptr, const prepack_allocator *allocator);

/* ------------------------------------------------------------------------ */
/* The planner                                                               */
/* ------------------------------------------------------------------------ */

/* Which sequences share a row. All three are exact: the plan equals that of
 * the textbook definition (tests/ref_plan.c holds a plain O(N x rows) copy of
 * each and the property tests compare them).
 *
 *  FFD      first-fit decreasing (default): items sorted by length descending,
 *           ties by input order; each goes into the lowest-numbered row with
 *           room, a new row only when none has.
 *  BFD      best-fit decreasing: same order; each goes into the row with the
 *           least free space that still fits, lowest-numbered among equals.
 *           Both run in O(N log L) through buckets of rows by free space
 *           (docs/DESIGN.md), L = max_seq_len.
 *  NEXTFIT  keeps input order: one open row; an item that does not fit
 *           closes it and opens the next. O(N). For curricula and streams.
 */
typedef enum prepack_algo {
    PREPACK_ALGO_FFD = 0,
    PREPACK_ALGO_BFD = 1,
    PREPACK_ALGO_NEXTFIT = 2
} prepack_algo;

/* What to do with a sequence longer than max_seq_len (L). Every choice is
 * counted in prepack_plan_stats. */
typedef enum prepack_overlong {
    PREPACK_OVERLONG_ERROR = 0, /* default: fail with PREPACK_EOVERLONG */
    PREPACK_OVERLONG_TRUNCATE,  /* keep the first L tokens */
    PREPACK_OVERLONG_SPLIT,     /* chunks of L tokens (the last may be
                                   shorter), each its own item remembering
                                   its source sequence and token offset */
    PREPACK_OVERLONG_DROP       /* leave the sequence out */
} prepack_overlong;

/* Names as the CLI spells them: "ffd", "bfd", "nextfit"; "error",
 * "truncate", "split", "drop". NULL for a value out of range. */
PREPACK_API const char *prepack_algo_name(prepack_algo algo);
PREPACK_API const char *prepack_overlong_name(prepack_overlong policy);
/* Parse those names (exact, lowercase). PREPACK_EINVAL if unknown. */
PREPACK_API int prepack_algo_parse(const char *name, prepack_algo *out);
PREPACK_API int prepack_overlong_parse(const char *name, prepack_overlong *out);

/* The largest supported max_seq_len: 2^24 = 16,777,216 tokens, far beyond
 * any context length in use. The planner's side structures are O(L). */
#define PREPACK_MAX_SEQ_LEN_LIMIT (1u << 24)
/* The most sequences (and items, after splitting) one plan may hold. Larger
 * corpora are planned in partitions. */
#define PREPACK_MAX_ITEMS (UINT32_MAX - 1u)

typedef struct prepack_plan_options {
    uint32_t max_seq_len;      /* L, required: 1..PREPACK_MAX_SEQ_LEN_LIMIT */
    prepack_algo algo;         /* default FFD */
    prepack_overlong overlong; /* default ERROR */
    uint32_t max_seqs_per_row; /* 0 = unlimited */
    int shuffle_rows;          /* non-zero: shuffle the finished rows */
    uint64_t shuffle_seed;     /* seed for that shuffle (any value) */
    const prepack_allocator *allocator; /* NULL = malloc/realloc/free */
    /* Context parallelism: each sequence (or chunk) counts as its length
     * rounded up to a multiple of this when rows are filled, so a row's
     * sequences padded to the multiple still fit L (docs/BALANCE.md,
     * "Context-parallel padding"). Items keep their real lengths (rows
     * store no padding); the stats count real tokens; lower_bound is the
     * padded problem's. max_seq_len must be a multiple of it. 0 or 1 =
     * none. */
    uint32_t pad_multiple;
} prepack_plan_options;

typedef struct prepack_plan prepack_plan;

/* Plan rows for n sequences of the given lengths (sequence i has id i).
 * Sequences of length 0 are skipped and counted. The plan depends only on
 * lengths and options: same input, same plan, on every platform.
 *
 * On success *out owns a new plan (free with prepack_plan_free). On failure
 * *out is NULL, nothing is leaked, and diag (when not NULL) says why:
 * PREPACK_EINVAL (bad options: L of 0 or over the limit, unknown enum,
 * lengths NULL with n > 0), PREPACK_ERANGE (more than PREPACK_MAX_ITEMS
 * items), PREPACK_EOVERLONG (a sequence longer than L under the ERROR
 * policy; diag names the first one), PREPACK_ENOMEM.
 *
 * Time: O(N + L) for NEXTFIT, O(N log L) amortised for FFD and BFD.
 * Memory: at peak about 12 bytes per item plus 12 per row, plus O(L)
 * (13-16 bytes per sequence on real mixes, see docs/BENCHMARKS.md); a
 * finished plan holds 8 bytes per item (12 with split chunks) and 4 per
 * row. Zero-length, dropped or split sequences add 4 bytes per item while
 * planning. */
PREPACK_API int prepack_plan_create(prepack_plan **out, const uint32_t *lengths,
                                    size_t n, const prepack_plan_options *opts,
                                    prepack_diag *diag);

/* Groups: sequences that must share a row, in order, never split or
 * truncated apart (a conversation's turns; a preference pair with its
 * prompt). Group g is sequences group_first[g] .. group_first[g + 1] - 1
 * (group_first has groups + 1 entries, from 0 to n, rising). Each group is
 * planned as one item of its summed length (each member rounded up to
 * pad_multiple first), exactly as the algorithm places items, and placed
 * as its members, in order, each its own item (zero-length members left
 * out). A group over L follows the ERROR or DROP policy whole (diag names
 * its sequences); SPLIT, TRUNCATE and max_seqs_per_row are PREPACK_EINVAL.
 * The stats count sequences and tokens; lower_bound is the groups'. */
PREPACK_API int prepack_plan_create_groups(prepack_plan **out,
                                           const uint32_t *lengths, size_t n,
                                           const uint64_t *group_first,
                                           size_t groups,
                                           const prepack_plan_options *opts,
                                           prepack_diag *diag);

/* The one place that decides whether a plan has groups. joins: the
 * sequences that join the group of the one before them (rising, each in
 * 1..n - 1, as prepack_store_join_sequences takes them). None (njoins 0,
 * joins may be NULL): prepack_plan_create; else prepack_plan_create_groups
 * with the groups the joins make (n - njoins of them). Errors: theirs, and
 * PREPACK_EINVAL for joins out of range or order (diag->record: the
 * join's index). The plan step plans with it; prepack_plan_store plans a
 * store the same way. */
PREPACK_API int prepack_plan_joined(prepack_plan **out, const uint32_t *lengths,
                                    size_t n, const uint64_t *joins,
                                    size_t njoins,
                                    const prepack_plan_options *opts,
                                    prepack_diag *diag);

/* Frees a plan. NULL is fine. */
PREPACK_API void prepack_plan_free(prepack_plan *plan);

/* One placed item: a whole sequence, or for the TRUNCATE policy its first
 * `length` tokens, or for SPLIT one chunk of it starting at token `offset`. */
typedef struct prepack_item {
    uint64_t seq_id; /* index of the source sequence in the input */
    uint32_t offset; /* first token of this item within the sequence */
    uint32_t length; /* tokens in this item, 1..L */
} prepack_item;

/* Number of rows. */
PREPACK_API size_t prepack_plan_row_count(const prepack_plan *plan);
/* Number of items placed in all rows. */
PREPACK_API size_t prepack_plan_item_count(const prepack_plan *plan);
/* Number of items in row `row` (< row_count). */
PREPACK_API size_t prepack_plan_row_size(const prepack_plan *plan, size_t row);
/* Tokens in row `row`: the sum of its items' lengths, <= L. */
PREPACK_API uint32_t prepack_plan_row_tokens(const prepack_plan *plan,
                                             size_t row);
/* Item k (< row_size) of row `row`, in the order the row concatenates them
 * (the order they were placed: longest first for FFD/BFD, input order for
 * NEXTFIT). Out-of-range arguments are a caller bug (checked by assert). */
PREPACK_API prepack_item prepack_plan_item(const prepack_plan *plan, size_t row,
                                           size_t k);
/* Copies row `row`'s items into out[0..cap) and returns the row's size
 * (copies min(size, cap) items). */
PREPACK_API size_t prepack_plan_row_items(const prepack_plan *plan, size_t row,
                                          prepack_item *out, size_t cap);

typedef struct prepack_plan_stats {
    uint32_t max_seq_len;
    uint64_t sequences;    /* n, as given */
    uint64_t input_tokens; /* sum of all n lengths */
    uint64_t items;        /* items placed */
    uint64_t tokens;       /* tokens placed (sum of item lengths) */
    uint64_t rows;
    uint64_t lower_bound; /* no plan has fewer rows: the largest of
                                    ceil(tokens / L), Martello and Toth's
                                    L2 (items over L/2 need a row each;
                                    docs/DESIGN.md) and, with
                                    max_seqs_per_row K, ceil(items / K) */
    double efficiency;    /* tokens / (rows * L); 0 when no rows */
    uint32_t max_items_per_row;
    double mean_items_per_row;  /* items / rows; 0 when no rows */
    uint64_t zero_length;       /* sequences of length 0, skipped */
    uint64_t overlong;          /* sequences longer than L (any policy) */
    uint64_t truncated_tokens;  /* tokens cut off by TRUNCATE */
    uint64_t split_chunks;      /* items made from overlong sequences */
    uint64_t dropped_sequences; /* by DROP */
    uint64_t dropped_tokens;
} prepack_plan_stats;

/* Fills *out with the plan's figures. */
PREPACK_API void prepack_plan_get_stats(const prepack_plan *plan,
                                        prepack_plan_stats *out);

/* ------------------------------------------------------------------------ */
/* In memory: pack sequences given as pointers, no files                       */
/* ------------------------------------------------------------------------ */

/* For a data loader or an inference server packing on the fly: the same
 * planner and row contract, with every array in one allocation. */
typedef struct prepack_pack_options {
    uint32_t max_seq_len;      /* row capacity; 0 = the longest sequence */
    prepack_algo algo;         /* default FFD */
    prepack_overlong overlong; /* ERROR (default), TRUNCATE, SPLIT or
                                   DROP */
    uint32_t max_seqs_per_row; /* 0 = unlimited */
} prepack_pack_options;

typedef struct prepack_packed {
    size_t rows;                 /* R */
    size_t num_seqs;             /* sequences placed (dropped and empty ones
                                   are not) */
    size_t num_tokens;           /* T, over all rows */
    uint32_t max_seq_len;        /* the capacity used */
    const uint32_t *input_ids;   /* [T]: row 0's tokens, then row 1's, ... */
    const int32_t *row_start;    /* [R + 1]: row r is input_ids[row_start[r]
                                   .. row_start[r + 1]) */
    const int32_t *cu_seqlens;   /* [num_seqs + 1] over the flat batch, as
                                   flash_attn_varlen_func takes it */
    const int32_t *position_ids; /* [T]: 0.. in each sequence */
    const uint64_t *seq_ids;     /* [num_seqs]: input index of each, in the
                                   order placed */
    const uint32_t *seq_row;     /* [n]: each input sequence's row (its
                                   first chunk's, under SPLIT), or
                                   UINT32_MAX when dropped or empty */
    const uint32_t *seq_offset;  /* [n]: its first token within its row */
    uint32_t max_seqlen;         /* the longest placed sequence */
    const uint32_t *seq_starts;  /* [num_seqs]: each placed item's first
                                   token within its input sequence (0 but
                                   for SPLIT's later chunks) */
} prepack_packed;

/* Packs n sequences (tokens[i] holds lengths[i] ids; the arrays are only
 * read during the call) into rows. On success *out (free with
 * prepack_packed_free) holds everything; errors as prepack_plan_create.
 * O(T + n log L). */
PREPACK_API int prepack_pack_sequences(prepack_packed **out,
                                       const uint32_t *const *tokens,
                                       const uint32_t *lengths, size_t n,
                                       const prepack_pack_options *o,
                                       prepack_diag *diag);
PREPACK_API void prepack_packed_free(prepack_packed *p);

/* ------------------------------------------------------------------------ */
/* Prefill: packing a batch of prompts for inference (Prepacking)              */
/* ------------------------------------------------------------------------ */

/* Prepacking (Zhao et al. 2024): pack a batch's prompts into rows of
 * capacity C, prefill them with a block-diagonal causal mask and restarted
 * positions, then take each prompt's last-token logits and KV cache back
 * out. First-fit decreasing by default, as everywhere in prepack; the
 * authors' implementation uses best fit (PREPACK_ALGO_BFD), which Python's
 * pack_prompts chooses by default. */
typedef struct prepack_prefill_options {
    uint32_t capacity; /* C; 0 = the longest prompt */
    prepack_algo algo; /* default FFD */
    uint32_t pad_id;   /* fills the rows past their tokens */
} prepack_prefill_options;

typedef struct prepack_prefill {
    size_t rows;                   /* R */
    uint32_t capacity;             /* C */
    size_t num_prompts;            /* N (empty prompts are an error) */
    const uint32_t *input_ids;     /* [R, C], pad_id past each row's tokens */
    const int32_t *position_ids;   /* [R, C], 0.. per prompt, 0 on padding */
    const int32_t *prompt_index;   /* [R, C]: input index, -1 on padding */
    const int32_t *row_tokens;     /* [R]: tokens in each row */
    const int32_t *cu_seqlens;     /* [N + 1]: the prompts as placed, over
                                     the rows' tokens concatenated */
    const int32_t *row_first;      /* [R + 1]: row r holds placed prompts
                                     row_first[r] .. row_first[r+1]-1 */
    const uint32_t *order;         /* [N]: input index of each placed prompt
                                     (placement order) */
    const uint32_t *prompt_row;    /* [N], by input index: its row */
    const uint32_t *prompt_start;  /* [N]: its first token within the row */
    const uint32_t *prompt_length; /* [N] */
    const uint64_t *last_index;    /* [N]: flat index (row * C + start +
                                     length - 1) of its last token */
} prepack_prefill;

/* Packs n prompts (tokens[i] of lengths[i] >= 1 ids) for prefill. Every
 * array is in one allocation owned by *out (prepack_prefill_free). A
 * prompt longer than the capacity is PREPACK_EOVERLONG. O(n log C + R C). */
PREPACK_API int prepack_prefill_create(prepack_prefill **out,
                                       const uint32_t *const *tokens,
                                       const uint32_t *lengths, size_t n,
                                       const prepack_prefill_options *o,
                                       prepack_diag *diag);
PREPACK_API void prepack_prefill_free(prepack_prefill *p);

/* ------------------------------------------------------------------------ */
/* The padding report: what packing buys over naive batching                  */
/* ------------------------------------------------------------------------ */

/* One way of laying the same items out in rows of fixed width. */
typedef struct prepack_layout {
    uint64_t rows;         /* rows (padded sequences or packed rows) */
    uint64_t slots;        /* token positions computed: rows x their width */
    uint64_t pad_tokens;   /* slots - real tokens */
    double pad_fraction;   /* pad_tokens / slots; 0 when no slots */
    double attention_cost; /* score-matrix entries, query x key, computed:
                               width^2 per padded row, l^2 per sequence for
                               varlen packing (exact below 2^53) */
} prepack_layout;

/* The distribution of the input lengths (all n, zero-length included).
 * Percentiles are nearest-rank: the smallest length with at least p% of
 * the lengths at or below it. */
typedef struct prepack_length_summary {
    uint32_t min, median, p90, p99, max;
    uint64_t over_max_seq_len; /* lengths > L */
} prepack_length_summary;

typedef struct prepack_report {
    prepack_plan_stats plan;
    prepack_length_summary lengths;
    uint32_t batch_size; /* B used for naive batching */
    /* The plan's items in input order, B at a time, each batch padded to
     * its longest item: what a plain padding collator does. */
    prepack_layout naive_batch;
    /* Every item padded to L. */
    prepack_layout padded_to_max;
    /* The packed rows padded to L; attention_cost is the varlen cost
     * sum(l^2), what a varlen kernel computes for them. */
    prepack_layout packed;
    /* The packed rows under a dense L x L mask: rows x L^2. */
    double packed_dense_attention_cost;
} prepack_report;

/* Default naive batch size: Hugging Face Trainer's per-device default. */
#define PREPACK_DEFAULT_BATCH_SIZE 8u

/* Computes the report for a plan made from exactly these n lengths (same
 * array as given to prepack_plan_create; PREPACK_EINVAL if n differs).
 * batch_size 0 means PREPACK_DEFAULT_BATCH_SIZE. O(n); exact percentiles
 * take two passes and 256 KiB of scratch (PREPACK_ENOMEM without it). */
PREPACK_API int prepack_report_compute(const prepack_plan *plan,
                                       const uint32_t *lengths, size_t n,
                                       uint32_t batch_size,
                                       prepack_report *out);

/* Writes the report as a self-contained SVG picture to out: the histogram
 * of input lengths with L marked, the histogram of row fill for packed rows
 * against naive padded batches, and real against padding tokens for naive
 * batching, padding to L and packing. plan and lengths are those the report
 * was computed from. PREPACK_EIO when writing fails. */
PREPACK_API int prepack_report_write_svg(const prepack_report *report,
                                         const prepack_plan *plan,
                                         const uint32_t *lengths, size_t n,
                                         FILE *out);

/* ------------------------------------------------------------------------ */
/* The token store                                                            */
/* ------------------------------------------------------------------------ */

/* Where ingest puts tokens for the row builder, without copying what need
 * not be copied: a sequence of a binary input (Megatron, llm.c, raw
 * tokens) is a reference into that file, which the store keeps open and
 * maps once finished; tokens known only after parsing (JSONL, or added
 * through prepack_store_add) go to a temporary file, uint16 while every id
 * fits. Temporary files are created under a directory of the caller's
 * choosing and unlinked at once, so nothing is left behind however the
 * process ends. Inputs must not change while the store lives.
 *
 * Writing: append tokens to the open sequence, end it, repeat; then
 * prepack_store_finish. Reading (after finish): lengths and tokens.
 * Memory: 12 bytes per sequence plus a few MiB of buffers. */

typedef enum prepack_dtype {
    PREPACK_DTYPE_AUTO = 0, /* uint16 while every id fits, else uint32 */
    PREPACK_DTYPE_UINT16 = 1,
    PREPACK_DTYPE_UINT32 = 2
} prepack_dtype;

/* "auto", "uint16", "uint32"; NULL when out of range. */
PREPACK_API const char *prepack_dtype_name(prepack_dtype dtype);
PREPACK_API int prepack_dtype_parse(const char *name, prepack_dtype *out);
/* Bytes per token id: 2 for UINT16, 4 for UINT32, 0 for AUTO (not yet a
 * width) or a value out of range. */
PREPACK_API size_t prepack_dtype_width(prepack_dtype dtype);

/* Input formats (names: "jsonl", "megatron", "llmc", "raw-u16"). */
typedef enum prepack_format {
    PREPACK_FORMAT_AUTO = 0, /* detect by name and magic */
    PREPACK_FORMAT_JSONL,    /* .jsonl, .jsonl.zst, .jsonl.gz */
    PREPACK_FORMAT_MEGATRON, /* X.bin + X.idx (MMIDIDX) */
    PREPACK_FORMAT_LLMC,     /* llm.c .bin: 256 x int32 header + tokens */
    PREPACK_FORMAT_RAW_U16,  /* headerless uint16 tokens (nanoGPT) */
    PREPACK_FORMAT_ARROW     /* Arrow or Parquet list columns, read by the
                                Python package (prepack.pack_dataset) into
                                a store; prepack_ingest_file refuses it */
} prepack_format;

PREPACK_API const char *prepack_format_name(prepack_format format);
PREPACK_API int prepack_format_parse(const char *name, prepack_format *out);

typedef struct prepack_store_options {
    const char *tmp_dir; /* NULL: $TMPDIR, else /tmp */
    prepack_dtype dtype; /* default AUTO */
    int lengths_only;    /* non-zero: parse and check every token but
                                 keep only lengths (prepack stats needs no
                                 more); prepack_store_copy and
                                 prepack_store_loss_mask are then
                                 unavailable */
    const prepack_allocator *allocator; /* NULL = libc */
} prepack_store_options;

typedef struct prepack_store prepack_store;

/* Creates an empty store. PREPACK_EIO when tmp_dir is unusable (diag names
 * it). */
PREPACK_API int prepack_store_create(prepack_store **out,
                                     const prepack_store_options *o,
                                     prepack_diag *diag);
/* Frees a store and its files. NULL is fine. */
PREPACK_API void prepack_store_free(prepack_store *s);

/* Appends n tokens (and, when loss_mask is not NULL, their mask bytes,
 * 1 = trained) to the open sequence. A store with a forced UINT16 dtype
 * refuses ids over 65535 (PREPACK_ERANGE). A sequence over UINT32_MAX
 * tokens is PREPACK_ERANGE. */
PREPACK_API int prepack_store_add(prepack_store *s, const uint32_t *tokens,
                                  size_t n, const uint8_t *loss_mask,
                                  prepack_diag *diag);
/* Appends n whole sequences at once (the Python package's Arrow path):
 * sequence i is tokens[offsets[i] .. offsets[i + 1]) with the same range
 * of loss_mask when it is not NULL, each ended as by
 * prepack_store_end_sequence. On an error diag->record is i, the sequence
 * within this call. */
PREPACK_API int prepack_store_add_sequences(prepack_store *s,
                                            const uint32_t *tokens,
                                            const uint64_t *offsets, size_t n,
                                            const uint8_t *loss_mask,
                                            prepack_diag *diag);
/* The same for 16-bit tokens, without a mask (the binary formats' path). */
PREPACK_API int prepack_store_add_u16(prepack_store *s, const uint16_t *tokens,
                                      size_t n, prepack_diag *diag);
/* Ends the open sequence; an empty one is not a sequence. */
PREPACK_API int prepack_store_end_sequence(prepack_store *s,
                                           prepack_diag *diag);
/* The next sequence starts a document (Megatron's document index). */
PREPACK_API int prepack_store_begin_document(prepack_store *s);

/* Inputs: call begin before adding an input's sequences. `path` is
 * copied. Sequences get ids 0.. in the order they are added, over all
 * inputs. */
PREPACK_API int prepack_store_begin_input(prepack_store *s, const char *path,
                                          prepack_format format);
/* Counts a partial sequence of the current input (e.g. llm.c text before
 * the first delimiter). */
PREPACK_API void prepack_store_count_partial(prepack_store *s);

/* Groups (prepack_plan_create_groups): sequence ids[i] joins the group of
 * the sequence before it. Ids already added, rising over all calls, each
 * past its input's first sequence (a group never spans inputs);
 * PREPACK_EINVAL otherwise. JSONL's "group" field calls it. */
PREPACK_API int prepack_store_join_sequences(prepack_store *s,
                                             const uint64_t *ids, size_t k,
                                             prepack_diag *diag);

/* Flushes and maps the tokens; no more adding. */
PREPACK_API int prepack_store_finish(prepack_store *s, prepack_diag *diag);

typedef struct prepack_input_info {
    const char *path; /* owned by the store */
    prepack_format format;
    uint64_t first_sequence; /* id of its first sequence */
    uint64_t sequences;
    uint64_t tokens;
    uint64_t documents; /* 0 when the format has no documents */
    uint64_t partial_sequences;
} prepack_input_info;

PREPACK_API size_t prepack_store_input_count(const prepack_store *s);
/* Fills *out for input i (< input_count). */
PREPACK_API void prepack_store_input(const prepack_store *s, size_t i,
                                     prepack_input_info *out);

/* After finish: */
PREPACK_API size_t prepack_store_sequence_count(const prepack_store *s);
PREPACK_API uint64_t prepack_store_token_count(const prepack_store *s);
/* UINT16 or UINT32: forced, or (AUTO) the narrowest that holds every id. */
PREPACK_API prepack_dtype prepack_store_dtype(const prepack_store *s);
/* Lengths of all sequences: the array prepack_plan_create takes. Valid
 * until the store is freed. */
PREPACK_API const uint32_t *prepack_store_lengths(const prepack_store *s);
/* Copies sequence i's tokens as uint32 into out (room for its length). */
PREPACK_API void prepack_store_copy(const prepack_store *s, size_t i,
                                    uint32_t *out);
/* Whether any input had a loss mask; and sequence i's mask (one byte a
 * token, 1 = trained), or NULL when all its tokens are trained. */
PREPACK_API int prepack_store_has_loss_mask(const prepack_store *s);
PREPACK_API const uint8_t *prepack_store_loss_mask(const prepack_store *s,
                                                   size_t i);
/* After finish: the groups (prepack_plan_create_groups's group_first, with
 * *groups + 1 entries), or NULL when no sequence joins another (*groups is
 * then the sequence count). */
PREPACK_API const uint64_t *prepack_store_group_first(const prepack_store *s,
                                                      size_t *groups);

/* Plans a finished store (its lengths; its groups when any sequence joins
 * another), as prepack_plan_joined plans lengths and joins: what
 * `prepack pack`, `prepack stats` and the Python dataset packer call. An
 * overlong sequence or group (PREPACK_EOVERLONG) keeps diag->record, its
 * sequence id over all inputs, and names its input in diag->message:
 * "PATH: sequence K has N tokens, more than max_seq_len L" (K counted
 * within the input), or "PATH: the group of sequences A..B has N tokens,
 * more than max_seq_len L (sequence ids over all inputs; this input starts
 * at F; groups are placed whole: --overlong drop leaves them out)", where
 * padding took the group past L "has N tokens (P with each sequence padded
 * to a multiple of M), more than ...". */
PREPACK_API int prepack_plan_store(prepack_plan **out,
                                   const prepack_store *store,
                                   const prepack_plan_options *opts,
                                   prepack_diag *diag);
/* Documents recorded by prepack_store_begin_document, and the first
 * sequence of document d. */
PREPACK_API size_t prepack_store_document_count(const prepack_store *s);
PREPACK_API uint64_t prepack_store_document_start(const prepack_store *s,
                                                  size_t d);

/* ------------------------------------------------------------------------ */
/* Ingest: tokenized corpora into a store                                      */
/* ------------------------------------------------------------------------ */

typedef enum prepack_sep_position {
    PREPACK_SEP_DEFAULT = 0, /* before for llm.c, after for raw files */
    PREPACK_SEP_BEFORE,      /* the delimiter opens each document */
    PREPACK_SEP_AFTER        /* the delimiter closes each document */
} prepack_sep_position;

/* Progress of a long call: `done` of `total` units of `stage` ("ingest":
 * input bytes). Called from the calling thread, every few MiB. */
typedef void (*prepack_progress_fn)(void *opaque, const char *stage,
                                    uint64_t done, uint64_t total);

typedef struct prepack_ingest_options {
    prepack_format format; /* default AUTO */
    const char *field;     /* JSONL token field; NULL = "input_ids" */
    int has_doc_sep;       /* non-zero: use doc_sep */
    uint32_t doc_sep;      /* llm.c / raw delimiter; default: the llm.c
                                 header's tokenizer (50256 GPT-2, 128000
                                 LLaMA-3); required for raw files */
    prepack_sep_position sep_position;
    /* Megatron: non-zero accepts a .bin longer than its .idx's sequences
     * reach (by default an error: bytes that belong to no sequence mean a
     * .bin and .idx that do not go together). */
    int allow_trailing_bytes;
    prepack_progress_fn progress; /* optional */
    void *progress_opaque;
    /* Read on this many threads (0 or 1: the calling thread alone): JSONL
     * parsed (and a zstd file's frames decompressed) on workers while the
     * calling thread reads the next lines; Megatron index blocks and
     * llm.c/raw token runs checked and scanned on workers. The calling
     * thread adds what they made to the store in input order, so the
     * store, the messages and everything made from them are the same for
     * any value. */
    int threads;
} prepack_ingest_options;

/* The format of a file: by name (.jsonl[.zst|.gz], .json, .idx, or X.bin
 * with an X.idx beside it), then by content (llm.c's magic; a zstd or gzip
 * stream or a JSON object: JSONL). "-" (stdin), pipes and character
 * devices are JSONL, the one format read as a stream; prepack_ingest_file
 * reads "-" from stdin and refuses another format for it. A file that is
 * none of these is PREPACK_EFORMAT ("pass a format"). */
PREPACK_API int prepack_format_detect(const char *path, prepack_format *out,
                                      prepack_diag *diag);

/* Reads one input into the store (begin_input is done here). For Megatron,
 * `path` may name X, X.bin or X.idx. Errors name the file and the line or
 * record and leave the store unusable (free it). */
PREPACK_API int prepack_ingest_file(prepack_store *s, const char *path,
                                    const prepack_ingest_options *o,
                                    prepack_diag *diag);

/* ------------------------------------------------------------------------ */
/* Rows: what a varlen attention kernel needs                                */
/* ------------------------------------------------------------------------ */

/* One packed row: k sequences (or chunks) concatenated, T tokens, T <= L.
 * A view: the arrays belong to whatever produced it (a row builder, a
 * reader) and stay valid until that handle's next call. No padding is
 * stored; the derived-field functions below pad on request. */
typedef struct prepack_row {
    size_t num_tokens;          /* T */
    size_t num_seqs;            /* k >= 1 */
    prepack_dtype token_dtype;  /* UINT16 or UINT32 */
    const void *input_ids;      /* T tokens, host byte order */
    const int32_t *cu_seqlens;  /* k + 1 entries: 0, l_0, l_0 + l_1, ..., T;
                                   strictly increasing, as flash-attn's
                                   cu_seqlens_q/k for this row */
    const uint64_t *seq_ids;    /* k: each sequence's id in the input */
    const uint8_t *loss_mask;   /* T (1 = token i is trained as a target),
                                   or NULL: every token is */
    const uint32_t *seq_starts; /* k: each chunk's first token within its
                                   source sequence, or NULL when no
                                   sequence was split */
} prepack_row;

/* Token i of the row as uint32. */
PREPACK_API uint32_t prepack_row_token(const prepack_row *row, size_t i);

/* The longest sequence in the row: flash-attn's max_seqlen. */
PREPACK_API uint32_t prepack_row_max_seqlen(const prepack_row *row);

/* input_ids as int64 (what PyTorch's embeddings take); out[T..width) =
 * pad_id. width >= T. O(width). */
PREPACK_API void prepack_row_input_ids(const prepack_row *row, int64_t pad_id,
                                       int64_t *out, size_t width);

/* position_ids: 0..l-1 for each sequence, as Hugging Face's
 * DataCollatorWithFlattening emits; out[T..width) = 0 (padding).
 * width >= T. O(width). */
PREPACK_API void prepack_row_position_ids(const prepack_row *row, int64_t *out,
                                          size_t width);

/* Per-token document ids, FlexAttention style (doc[q] == doc[kv]):
 * first_doc + the sequence's index in the row; -1 on padding
 * out[T..width). For a flat batch of rows pass as first_doc the number of
 * sequences in the rows before, so no two rows share an id. */
PREPACK_API void prepack_row_doc_ids(const prepack_row *row, int64_t first_doc,
                                     int64_t *out, size_t width);

/* Shifted next-token labels: out[i] = input_ids[i + 1] when token i + 1 is
 * in the same sequence and trained (loss mask 1), else -100; -100 on the
 * last token of every sequence and on padding. No token learns to predict
 * another sequence's first token. */
PREPACK_API void prepack_row_labels(const prepack_row *row, int64_t *out,
                                    size_t width);

/* Hugging Face's unshifted labels (the model shifts): input_ids, with -100
 * on the first token of every sequence, on untrained tokens (loss mask 0)
 * and on padding. */
PREPACK_API void prepack_row_labels_unshifted(const prepack_row *row,
                                              int64_t *out, size_t width);

/* The dense block-diagonal causal mask, width x width, row-major:
 * out[q * width + k] = 1 when q and k are in the same sequence and k <= q,
 * else 0 (padding rows and columns are 0). O(width^2): on request only. */
PREPACK_API void prepack_row_dense_mask(const prepack_row *row, uint8_t *out,
                                        size_t width);

/* Builds rows from a plan and the store it was planned from (the plan must
 * come from prepack_store_lengths of this finished store). */
typedef struct prepack_row_builder prepack_row_builder;

PREPACK_API int prepack_row_builder_create(prepack_row_builder **out,
                                           const prepack_plan *plan,
                                           const prepack_store *store,
                                           prepack_diag *diag);
PREPACK_API void prepack_row_builder_free(prepack_row_builder *b);
/* Fills *row with row r of the plan (r < row count). The view is valid
 * until the next call on b. */
PREPACK_API int prepack_row_builder_get(prepack_row_builder *b, size_t r,
                                        prepack_row *row);

/* A row's references, for a plan-only set (docs/FORMAT.md, version 2):
 * where its tokens are. Sequence (or chunk) j's cu_seqlens[j + 1] -
 * cu_seqlens[j] tokens start at byte offset[j] of source source[j], an
 * input file. Sources are numbered 0, 1, ... in the order the store's
 * inputs referenced them (Megatron .bin, llm.c and raw token files; text
 * inputs have no file to reference). */
typedef struct prepack_row_references {
    const uint32_t *source; /* k */
    const uint64_t *offset; /* k: bytes into the file */
} prepack_row_references;

/* Row r without its tokens (row->input_ids NULL; every other field as
 * prepack_row_builder_get fills it) and where its tokens are: no token is
 * read. PREPACK_EINVAL when a sequence's tokens came from text (nothing
 * on disk to reference). The views are valid until the next call on b. */
PREPACK_API int prepack_row_builder_get_references(
    prepack_row_builder *b, size_t r, prepack_row *row,
    prepack_row_references *references);

/* ------------------------------------------------------------------------ */
/* Packing a stream (docs/STREAM.md)                                          */
/* ------------------------------------------------------------------------ */

/* For data that is never all there at once (a stream from object storage,
 * a mixture sampled on the fly, RL rollouts): rows are packed as sequences
 * arrive. At most `window` rows are open; each item goes to the open row
 * it fits best (least room left, ties to the row opened first); an item
 * no open row takes opens a row, and when `window` rows are open the
 * fullest one is closed first. With a lookahead of K, items wait until K
 * have come, then all K are placed longest first (ties: the first to
 * arrive), as offline FFD places everything; keep K at most about the
 * window (a batch opens rows). Rows close as soon as they can take nothing
 * more (full, or max_seqs_per_row items). Memory: the open rows' and the
 * buffer's tokens, O(window x L + lookahead items), whatever the stream's
 * length. The same pushes with the same options give the same rows. */
typedef struct prepack_stream_options {
    uint32_t max_seq_len;      /* L (required) */
    uint32_t window;           /* open rows, 0 = 256; 1 is next-fit */
    uint32_t lookahead;        /* items gathered, then placed longest
                                   first (0 = each at once) */
    prepack_overlong overlong; /* ERROR (default), TRUNCATE, SPLIT (chunks
                                   placed as they come) or DROP */
    uint32_t max_seqs_per_row; /* 0 = unlimited */
    const prepack_allocator *allocator; /* NULL = libc */
} prepack_stream_options;

typedef struct prepack_stream prepack_stream;

PREPACK_API int prepack_stream_create(prepack_stream **out,
                                      const prepack_stream_options *o,
                                      prepack_diag *diag);
PREPACK_API void prepack_stream_free(prepack_stream *s);

/* Pushes sequence `id` (the caller's number, carried to the row's seq_ids)
 * of n tokens. tokens NULL: a length only (plan without data; then every
 * push must be so, and rows carry no tokens). loss_mask: n bytes (1 =
 * trained, 0 = not; another byte is PREPACK_EINVAL) or NULL. Copies what
 * it keeps. PREPACK_EOVERLONG under ERROR for n > L; empty sequences and
 * DROP's are counted and left out. */
PREPACK_API int prepack_stream_push(prepack_stream *s, uint64_t id,
                                    const uint32_t *tokens,
                                    const uint8_t *loss_mask, uint32_t n,
                                    prepack_diag *diag);
/* Places every buffered item and closes every open row: all of them
 * become ready, in the order they close. The stream can go on after. */
PREPACK_API int prepack_stream_flush(prepack_stream *s, prepack_diag *diag);
/* Closed rows not yet popped. */
PREPACK_API size_t prepack_stream_ready(const prepack_stream *s);
/* The oldest closed row, taken: 1, or 0 when none is ready. The view
 * (token_dtype UINT32; input_ids NULL for a length-only stream;
 * loss_mask when any of its items had one; seq_starts under SPLIT) is
 * valid until the next call on s. */
PREPACK_API int prepack_stream_pop(prepack_stream *s, prepack_row *row);

typedef struct prepack_stream_stats {
    uint64_t sequences;   /* pushed */
    uint64_t items;       /* placed or waiting (split chunks count) */
    uint64_t tokens;      /* in items */
    uint64_t rows;        /* closed so far */
    uint64_t dropped;     /* sequences left out: empty, or DROP's */
    uint64_t truncated_tokens;
    uint64_t open_rows, buffered; /* now */
} prepack_stream_stats;
PREPACK_API void prepack_stream_get_stats(const prepack_stream *s,
                                          prepack_stream_stats *out);

/* The stream's whole state (open rows, buffer, ready rows, counters) as
 * bytes: *size gets the bytes needed; with cap >= that, buf gets them
 * (else PREPACK_ERANGE). A stream restored from them (with the same
 * options; others are refused) continues byte for byte as this one
 * would: the same later pushes give the same rows. The bytes are
 * little-endian and end with their XXH64, checked on restore. The bytes
 * are untrusted: a restore also holds every field to what a live stream
 * keeps true (row capacity, max_seqs_per_row, masks 0/1, each item and
 * row once, consistent counters; docs/STREAM.md) and sizes nothing by a
 * count the bytes cannot hold: PREPACK_ECORRUPT naming what is wrong. */
PREPACK_API int prepack_stream_save(const prepack_stream *s, void *buf,
                                    size_t cap, size_t *size,
                                    prepack_diag *diag);
PREPACK_API int prepack_stream_restore(prepack_stream **out, const void *buf,
                                       size_t n,
                                       const prepack_stream_options *o,
                                       prepack_diag *diag);

/* ------------------------------------------------------------------------ */
/* Writing a shard set: packed rows on disk (docs/FORMAT.md)                  */
/* ------------------------------------------------------------------------ */

/* A shard set is a directory: shard-00000.zst, ... (independent zstd
 * frames of msgpack rows, a seek table at the end) and manifest.json,
 * written last. See docs/FORMAT.md for the exact layout. */

/* A frame holds about this many tokens by default: rows_per_frame 0
 * means as many rows of L tokens as hold 2^20 tokens (at least one row),
 * about 1.3-1.5 MiB of id codes (format version 4: a frequent token in one
 * byte). Smaller frames lose compression on text that repeats itself
 * further apart (independent frames share no window), larger ones make a
 * random row read decompress more (docs/BENCHMARKS.md). */
#define PREPACK_DEFAULT_FRAME_TOKENS (1u << 20)
#define PREPACK_DEFAULT_SHARD_ROWS 16384u
#define PREPACK_DEFAULT_ZSTD_LEVEL 3

typedef struct prepack_writer_options {
    uint32_t rows_per_frame; /* 0 = PREPACK_DEFAULT_FRAME_TOKENS
                                 at L (256 rows of 4096);
                                 lowered so no frame can exceed
                                 4 GiB decompressed */
    uint64_t shard_rows;     /* rows per shard file, exactly (the last
                                 frame of a shard may be short);
                                 0 = 16384 unless shard_bytes */
    uint64_t shard_bytes;    /* instead of shard_rows (not both): end a
                                 shard after the frame that brings it to
                                 this many bytes, so shards are about
                                 this size (over by less than a frame) */
    int level;               /* zstd level, 0 = 3 */
    int overwrite;           /* replace what a non-empty dir holds */
    int threads;             /* compress frames on this many threads;
                                 0 or 1 = the calling thread. The bytes
                                 written are the same for any value. */
    const prepack_allocator *allocator; /* NULL = libc */
    int references;          /* a plan-only set: rows hold where their
                                 tokens are, not the tokens
                                 (prepack_writer_add_references); the
                                 manifest records each source's
                                 identity */
} prepack_writer_options;

typedef struct prepack_writer prepack_writer;

/* Starts a shard set in dir (created if missing). An existing non-empty
 * dir is PREPACK_EINVAL unless overwrite: then dir must hold only a shard
 * set's files, the new set is written in a directory beside it
 * (.NAME.prepack-<6 random characters>) and prepack_writer_finish swaps it in whole, so
 * dir holds the old set until the new one is complete. max_seq_len * token width must stay under 2^32 bytes
 * (a msgpack bin's limit): PREPACK_ERANGE otherwise. */
PREPACK_API int prepack_writer_create(prepack_writer **out, const char *dir,
                                      uint32_t max_seq_len,
                                      prepack_dtype token_dtype,
                                      const prepack_writer_options *o,
                                      prepack_diag *diag);
/* Appends a row (num_tokens <= max_seq_len, tokens of the set's dtype). */
PREPACK_API int prepack_writer_add(prepack_writer *w, const prepack_row *row,
                                   prepack_diag *diag);

/* For a writer made with `references`: appends a row by where its tokens
 * are (row->input_ids is not read). prepack_writer_add is refused by such
 * a writer, this by any other. */
PREPACK_API int prepack_writer_add_references(
    prepack_writer *w, const prepack_row *row,
    const prepack_row_references *references, prepack_diag *diag);

/* What the manifest records besides the shards. */
typedef struct prepack_manifest_info {
    const prepack_plan_options *plan; /* algorithm, overlong, seed, ... */
    const prepack_store *store;       /* its inputs, or NULL */
    const prepack_report *report;     /* "stats", or NULL */
} prepack_manifest_info;

/* Closes the last shard and writes manifest.json (temporary name, fsync,
 * rename, fsync of the directory). A references writer needs info->store
 * (the files it references and their identities come from it). Every shard file was written the same
 * way, so a run stopped at any moment leaves no manifest or a complete
 * set. */
PREPACK_API int prepack_writer_finish(prepack_writer *w,
                                      const prepack_manifest_info *info,
                                      prepack_diag *diag);
/* Bytes of shard files written so far. */
PREPACK_API uint64_t prepack_writer_bytes(const prepack_writer *w);
/* Frees the writer. Unfinished (no prepack_writer_finish, or it failed),
 * it removes every file it wrote: its temporary shard and the shards it
 * completed, so an error or an interrupted run leaves no partial set. */
PREPACK_API void prepack_writer_free(prepack_writer *w);

/* ------------------------------------------------------------------------ */
/* Balancing a data-parallel step (docs/BALANCE.md)                           */
/* ------------------------------------------------------------------------ */

/* Packed rows hold about L tokens each but not the same work: attention
 * costs the sum of l^2 over a row's sequences. A row's cost is
 *   per_token * tokens + per_pair * sum(l_i^2)
 * in any unit (the ratio is what matters). */
typedef struct prepack_cost_model {
    double per_token; /* linear layers: FLOPs a token */
    double per_pair;  /* attention scores and values: FLOPs a (query, key)
                         pair of one sequence */
} prepack_cost_model;

/* A decoder-only transformer's dimensions. */
typedef struct prepack_model_dims {
    uint32_t hidden_size;       /* h */
    uint32_t intermediate_size; /* the MLP's (SwiGLU: three h x f
                                   matrices); 0 = 4h with two matrices */
    uint32_t num_heads;
    uint32_t num_kv_heads;      /* 0 = num_heads */
    uint32_t num_layers;
    int bidirectional;          /* non-zero: every pair; else causal, half */
} prepack_model_dims;

/* Forward FLOPs of one layer stack (docs/BALANCE.md has the derivation):
 *   per_token = 2 x layers x (2 h^2 + 2 h kv + 3 h f)   (SwiGLU f) or
 *               2 x layers x (2 h^2 + 2 h kv + 2 h f)   (f = 4h default)
 *   per_pair  = 2 x layers x 2 h x (1/2 when causal)
 * with kv = h x num_kv_heads / num_heads. PREPACK_EINVAL for a zero
 * hidden size, head count or layer count. */
PREPACK_API int prepack_cost_model_for(const prepack_model_dims *d,
                                       prepack_cost_model *out);
/* The default: a Llama-3-8B-shaped model (h 4096, f 14336, 32 heads, 8 KV
 * heads, 32 layers, causal). */
PREPACK_API prepack_cost_model prepack_cost_model_default(void);

/* The cost of k sequences of the given lengths in one row. */
PREPACK_API double prepack_cost_of_lengths(const prepack_cost_model *m,
                                           const uint32_t *lengths, size_t k);
/* The cost of a row (from its cu_seqlens), of row r of a plan. */
PREPACK_API double prepack_row_cost(const prepack_cost_model *m,
                                    const prepack_row *row);
PREPACK_API double prepack_plan_row_cost(const prepack_cost_model *m,
                                         const prepack_plan *plan, size_t r);

/* Splits n items of the given costs among `bins` bins (ranks) so that the
 * counts differ by at most one and the costliest bin is as cheap as the
 * heuristic finds: longest processing time first under the count limit
 * (each item, costliest first, to the cheapest bin with room), then (for
 * n up to 4,096) up to 4 x bins swaps between the costliest bin and
 * another, each lowering the larger of the two loads. Deterministic (ties
 * by index). bin_of[i] gets item i's bin. O(n log n) + O(n^2) swaps.
 * PREPACK_EINVAL for bins 0 or NULL arrays with n > 0; PREPACK_ENOMEM. */
PREPACK_API int prepack_balance(const double *costs, size_t n, uint32_t bins,
                                uint32_t *bin_of, prepack_diag *diag);

/* An epoch of data-parallel steps: order[] (a permutation of the n rows,
 * NULL = 0..n-1) is cut into steps of world x rows_per_rank rows (the last
 * may be short), each balanced with prepack_balance. With window_steps W
 * over 1, each run of W steps' rows is first regrouped by cost (the
 * costliest world x rows_per_rank rows make the window's first step, and
 * so on), so that a step's rows cost alike: what balances ranks that take
 * one row a step. rank_of[k] (room for n) is the rank of the k-th row of
 * out_order (room for n; may be NULL when W is 1: the order is kept); each
 * rank's rows of a step are, in out_order, those with its number. Every
 * row goes to exactly one rank once. */
PREPACK_API int prepack_balance_epoch(const double *costs, size_t n,
                                      const uint64_t *order, uint32_t world,
                                      uint32_t rows_per_rank,
                                      uint32_t window_steps,
                                      uint64_t *out_order, uint32_t *rank_of,
                                      prepack_diag *diag);

/* ------------------------------------------------------------------------ */
/* Pack in steps: scan, plan, write, finalize (docs/SCALE.md)                 */
/* ------------------------------------------------------------------------ */

/* prepack_step_* split a pack into steps that any scheduler able to start a
 * process with an index can run (Slurm job arrays, Ray tasks; the CLI's
 * scan, plan, write and finalize):
 *
 *   scan      N tasks: task i reads its part of the inputs (whole files
 *             by where they fall among the inputs' bytes; a plain JSONL
 *             file cut at line starts, a Megatron one by sequence range),
 *             checks them as pack does, and records lengths and where
 *             each sequence's tokens are (text inputs' tokens copied,
 *             binary inputs referenced in place)
 *   plan      1 task: the planner once over every sequence, in input
 *             order; which items make each row and which rows each shard
 *   write     M tasks (any M): task j writes its share of the shards,
 *             reading only the tokens its rows hold
 *   finalize  1 task: checks every shard against what its task recorded,
 *             writes manifest.json last and removes the job directory
 *
 * The set is byte-identical to prepack pack's with the same inputs and
 * options, for any N and M. Every step takes the same options (the ones
 * a step does not use are still checked: each step's output carries a key
 * of them, and the next step refuses output made with other options).
 * Every file a step writes is in dir (dir/.prepack-job until finalize),
 * under a temporary name until complete; a task whose output is there and
 * verifies does nothing (already_done); plan and finalize name the task to
 * rerun when one's output is missing or damaged. */
typedef struct prepack_step_options {
    const char *const *inputs; /* paths, in order: the sequence ids' order */
    size_t ninputs;
    prepack_ingest_options ingest; /* progress is not called */
    prepack_store_options store;   /* dtype; tmp_dir and lengths_only are
                                      the steps' own */
    prepack_plan_options plan;
    prepack_writer_options writer; /* shard_rows (shard_bytes and
                                      overwrite are refused), rows_per_frame,
                                      level; threads for write tasks */
    uint32_t batch_size;           /* the report's; 0 = 8 */
    /* Text inputs: how they were tokenized (the Python package's key of
     * the tokenizer's files, the template and the text options), part of
     * every step's key, so that scan output from another tokenizer or
     * other text options is refused; prepack_step_scan refuses it (text
     * is scanned by prepack_step_scan_open's caller). NULL: token ids. */
    const char *text_key;
} prepack_step_options;

typedef struct prepack_step_result {
    int already_done;       /* the output was there and verified */
    uint64_t sequences;     /* scan: the task's; plan: all */
    uint64_t tokens;        /* likewise */
    uint64_t rows, shards;  /* plan, write (the task's), finalize */
    uint64_t bytes_written; /* the step's files */
    uint64_t bytes_mapped;  /* write: token bytes read through mappings
                               (inputs and scan token files) */
} prepack_step_result;

/* Each returns PREPACK_OK or an error code with diag saying what and, for
 * a missing or damaged task output, which task to rerun. res may be
 * NULL. */
PREPACK_API int prepack_step_scan(const char *dir,
                                  const prepack_step_options *o, uint32_t task,
                                  uint32_t ntasks, prepack_step_result *res,
                                  prepack_diag *diag);
PREPACK_API int prepack_step_plan(const char *dir,
                                  const prepack_step_options *o,
                                  uint32_t scan_tasks, prepack_step_result *res,
                                  prepack_diag *diag);
PREPACK_API int prepack_step_write(const char *dir,
                                   const prepack_step_options *o, uint32_t task,
                                   uint32_t ntasks, prepack_step_result *res,
                                   prepack_diag *diag);
/* verify_hashes: read every shard back and check its xxh64 (else sizes
 * only; each write task hashed what it wrote). */
PREPACK_API int prepack_step_finalize(const char *dir,
                                      const prepack_step_options *o,
                                      uint32_t write_tasks, int verify_hashes,
                                      prepack_step_result *res,
                                      prepack_diag *diag);

/* A scan task whose caller fills the store itself (the Python package's
 * text scan: python -m prepack scan --tokenizer). prepack_step_scan_open
 * checks the task as prepack_step_scan does, takes its lock and sets
 * ranges[0..*nranges) (room for o->ninputs) to the task's part of each
 * input, cut as prepack_step_scan cuts: whole inputs by where they fall
 * among the inputs' bytes, a plain JSONL file in bytes [begin, end), of
 * which the task reads the lines that start there (a line starts at 0 or
 * after a newline; begin and end are moved to the next line start). The
 * caller adds each range's sequences to *store, in range order, each
 * range one prepack_store_begin_input named o->inputs[range.input], then
 * calls prepack_step_scan_save with each range's first and last records'
 * group values (NUL-terminated, compared byte for byte with the next
 * range's; NULL: none), which saves the task's output exactly as
 * prepack_step_scan does (finish, joins, sequences, the meta record
 * last). When the task's output is already there and verifies (or the set
 * is finished), res->already_done is set and *out and *store are NULL.
 * prepack_step_scan_free releases the lock and the store (removing what
 * a task not saved wrote); NULL is a no-op. */
typedef struct prepack_step_range {
    uint32_t input; /* its index in o->inputs */
    int whole;      /* the whole input (begin 0, end its size) */
    uint64_t begin, end;
} prepack_step_range;

typedef struct prepack_step_scanner prepack_step_scanner;

PREPACK_API int prepack_step_scan_open(
    prepack_step_scanner **out, const char *dir, const prepack_step_options *o,
    uint32_t task, uint32_t ntasks, prepack_step_range *ranges,
    size_t *nranges, prepack_store **store, prepack_step_result *res,
    prepack_diag *diag);
PREPACK_API int prepack_step_scan_save(prepack_step_scanner *sc,
                                       const char *const *first_groups,
                                       const char *const *last_groups,
                                       prepack_step_result *res,
                                       prepack_diag *diag);
PREPACK_API void prepack_step_scan_free(prepack_step_scanner *sc);

/* ------------------------------------------------------------------------ */
/* Reading a shard set: rows, batches, verification (docs/FORMAT.md)         */
/* ------------------------------------------------------------------------ */

typedef struct prepack_reader prepack_reader;

typedef struct prepack_reader_options {
    /* NULL = libc. Everything the reader allocates goes through it (its
     * buffers, zstd's context) except msgpack-c's per-frame zone, which
     * uses malloc; its failure is still PREPACK_ENOMEM. */
    const prepack_allocator *allocator;
    /* Non-zero: a shard that fails its checks at open (missing, a size
     * other than the manifest's, a bad seek table) does not fail the open;
     * reading its rows returns that error and prepack_reader_verify
     * reports it, so one check lists every damaged shard. */
    int open_damaged;
} prepack_reader_options;

/* Opens a shard set: reads and checks manifest.json and each shard's seek
 * table (o may be NULL). Nothing a file says can make the reader allocate
 * more than the manifest's shard count, each seek table (checked against
 * the file's size), rows_per_frame rows of max_seq_len tokens per frame,
 * and a small multiple of a frame's size to decode it. Errors name the file and the cause (PREPACK_EIO, PREPACK_EFORMAT,
 * PREPACK_ECORRUPT, PREPACK_ENOMEM). */
PREPACK_API int prepack_reader_open(prepack_reader **out, const char *dir,
                                    const prepack_reader_options *o,
                                    prepack_diag *diag);
PREPACK_API void prepack_reader_free(prepack_reader *r);
PREPACK_API size_t prepack_reader_row_count(const prepack_reader *r);
PREPACK_API uint32_t prepack_reader_max_seq_len(const prepack_reader *r);
/* The manifest's pad_multiple (1 when none): batches for context
 * parallelism pad each sequence to a multiple of it. */
PREPACK_API uint32_t prepack_reader_pad_multiple(const prepack_reader *r);
PREPACK_API prepack_dtype prepack_reader_token_dtype(const prepack_reader *r);
/* The sources of a plan-only set: the input files it reads its tokens
 * from (0 for a set that holds its tokens). The open checked each against
 * the identity the manifest records (size, a sample of its bytes, its
 * index) and mapped it; a changed, moved or missing file fails the open
 * naming it. */
PREPACK_API size_t prepack_reader_source_count(const prepack_reader *r);
/* Source i's path (i < the count). */
PREPACK_API const char *prepack_reader_source(const prepack_reader *r,
                                              size_t i);
/* A batch of rows in the forms training steps feed (int64 where PyTorch
 * wants LongTensor). Flat (varlen): the rows' tokens concatenated, one
 * cu_seqlens of sum(k) + 1 entries offset per row, document ids numbered
 * over the whole batch (so FlexAttention never joins two rows'
 * sequences). Padded: [B, L] arrays, pad_id and attention_mask, document
 * ids per row (-1 on padding), and on request the [B, L, L] block-diagonal
 * causal mask. Labels are shifted next-token targets (-100 at sequence ends,
 * on untrained tokens and on padding).
 *
 * Context parallelism (pad_multiple M > 1, as prepack.collate's
 * pad_multiple, python/prepack/_collate.py, which the tests compare
 * with): each sequence is followed by pad_id up to a multiple of M tokens,
 * never trained (label -100), its positions and document id running on
 * through the padding, so a row may grow past L (by at most M - 1 tokens
 * a sequence). Flat: cu_seqlens holds the real lengths and
 * cu_seqlens_padded the physical offsets (Transformer Engine's THD
 * layout), max_seqlen is the longest padded sequence. Padded: a row that
 * no longer fits L is PREPACK_ERANGE; attention_mask is 0 on the padding,
 * dense_mask covers it as part of its sequence. A flat batch past
 * INT32_MAX tokens (what its int32 cu_seqlens hold) is PREPACK_ERANGE
 * too; either is refused before anything is allocated for the row, so a
 * huge M costs nothing. */
typedef struct prepack_batch_options {
    int padded;     /* non-zero: [B, L]; zero: flat */
    int64_t pad_id; /* padded, or pad_multiple: the padding token (0) */
    int dense_mask; /* padded: also fill dense_mask */
    uint32_t pad_multiple; /* 0 or 1: none; M: sequences padded to M */
} prepack_batch_options;

typedef struct prepack_batch {
    size_t rows;                   /* B */
    size_t width;                  /* flat: total tokens T; padded: L */
    size_t num_seqs;               /* sequences over all rows */
    uint32_t max_seqlen;           /* longest sequence in the batch */
    const int64_t *input_ids;      /* flat [T]; padded [B, L] */
    const int64_t *position_ids;   /* same shape */
    const int64_t *doc_ids;        /* same shape */
    const int64_t *labels;         /* same shape */
    const int32_t *cu_seqlens;     /* flat: [num_seqs + 1]; padded: NULL */
    const uint64_t *seq_ids;       /* [num_seqs] */
    const uint8_t *attention_mask; /* padded: [B, L] 1 on tokens; flat NULL */
    const uint8_t *dense_mask;     /* padded with dense_mask: [B, L, L] */
    const int32_t *cu_seqlens_padded; /* flat with pad_multiple > 1:
                                         [num_seqs + 1] physical offsets;
                                         else NULL */
    uint64_t num_loss_tokens; /* labels that are not -100: the targets the
                                 batch trains (the loss's denominator) */
} prepack_batch;

/* Reads rows[0..n) into one batch. The arrays belong to r and stay valid
 * until its next call. n may be 0: an empty batch whose flat cu_seqlens
 * is [0]. Errors as prepack_reader_row. */
PREPACK_API int prepack_reader_batch(prepack_reader *r, const size_t *rows,
                                     size_t n, const prepack_batch_options *o,
                                     prepack_batch *out, prepack_diag *diag);

/* Where prepack_reader_batch_into writes: the caller's arrays, so a
 * binding can hand them on (to numpy, to torch) with no copy. Token
 * arrays hold tokens_cap values, cu_seqlens seqs_cap + 1, seq_ids
 * seqs_cap; attention_mask (padded only, else may be NULL) tokens_cap;
 * dense_mask (padded with dense_mask only) rows x L x L. doc_ids may be
 * NULL: not computed (varlen and Hugging Face batches do without);
 * cu_seqlens_padded (flat with pad_multiple > 1 only, else may be NULL)
 * seqs_cap + 1. A batch of n rows never needs more than n x L sequences
 * and n x L tokens (flat with pad_multiple M > 1: n x L x M). */
typedef struct prepack_batch_arrays {
    int64_t *input_ids, *position_ids, *doc_ids, *labels;
    int32_t *cu_seqlens;
    uint64_t *seq_ids;
    uint8_t *attention_mask, *dense_mask;
    size_t tokens_cap, seqs_cap, dense_cap;
    int32_t *cu_seqlens_padded;
} prepack_batch_arrays;

/* prepack_reader_batch, written into dst's arrays (out's pointers are
 * dst's). Nothing is allocated for the batch; one larger than dst holds
 * is PREPACK_ERANGE, with dst left partly written. */
PREPACK_API int prepack_reader_batch_into(prepack_reader *r, const size_t *rows,
                                          size_t n,
                                          const prepack_batch_options *o,
                                          const prepack_batch_arrays *dst,
                                          prepack_batch *out,
                                          prepack_diag *diag);

/* Shards and the rows each holds, in order. */
PREPACK_API size_t prepack_reader_shard_count(const prepack_reader *r);
PREPACK_API uint64_t prepack_reader_shard_rows(const prepack_reader *r,
                                               size_t i);

/* Checks everything the set promises: each shard file's xxh64 against the
 * manifest, every frame (zstd checksum, seek-table entry) and every row
 * (fields, cu_seqlens from 0 strictly up to the row's length, at most L
 * tokens). Each problem is passed to report (when not NULL) as it is
 * found; the check goes on past it. Returns the number of problems. */
PREPACK_API size_t prepack_reader_verify(prepack_reader *r,
                                         void (*report)(void *opaque,
                                                        const prepack_diag *d),
                                         void *opaque);

/* prepack_reader_verify, also handing each row that passes its checks to
 * each_row (global index, in order) so a caller can check more of it
 * (prepack verify --input does) in the same single pass: the pass takes
 * time in proportion to the bytes on disk, whatever counts the manifest
 * claims. Beyond the rows, it checks the manifest's figures that only the
 * rows can prove: each shard's tokens, and with "stats", its items,
 * max_seqs_in_row and sequence ids below its sequences; every row within
 * max_seqs_per_row. */
PREPACK_API size_t prepack_reader_verify_rows(
    prepack_reader *r, void (*report)(void *opaque, const prepack_diag *d),
    void (*each_row)(void *opaque, size_t index, const prepack_row *row),
    void *opaque);

/* How the set was planned (its manifest's "overlong" policy): which input
 * sequences it may hold truncated, split or not at all. */
PREPACK_API prepack_overlong prepack_reader_overlong(const prepack_reader *r);

/* Row i: decompresses its frame (the last frame is cached) and fills *row,
 * a view valid until the next call on r. A damaged frame is
 * PREPACK_ECORRUPT naming the shard, the frame and the cause. */
PREPACK_API int prepack_reader_row(prepack_reader *r, size_t i,
                                   prepack_row *row, prepack_diag *diag);
/* The cost of every row (out[i], room for row_count), in one pass over
 * the set: what prepack_balance_epoch takes for a shard set. Errors as
 * prepack_reader_row. */
PREPACK_API int prepack_reader_row_costs(prepack_reader *r,
                                         const prepack_cost_model *m,
                                         double *out, prepack_diag *diag);

/* ------------------------------------------------------------------------ */
/* Lengths files                                                              */
/* ------------------------------------------------------------------------ */

/* Parses text holding one non-negative integer per line (sequence lengths)
 * into a new array. Blanks around the number and a CR before the newline
 * are allowed; the last line may lack its newline. Errors (PREPACK_EFORMAT,
 * or PREPACK_ERANGE for a number over UINT32_MAX, or a count over
 * PREPACK_MAX_ITEMS) name `name` and the 1-based line in diag: not an
 * integer, negative, empty line, no lengths at all.
 * On success *lengths (free with prepack_free, via the same allocator) holds
 * *n values; on failure *lengths is NULL. O(size). */
PREPACK_API int prepack_lengths_parse(const char *text, size_t size,
                                      const char *name, uint32_t **lengths,
                                      size_t *n,
                                      const prepack_allocator *allocator,
                                      prepack_diag *diag);

#ifdef __cplusplus
}
#endif

#endif /* PREPACK_H */
