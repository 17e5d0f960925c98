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

#ifdef __cplusplus
extern "C" {
#endif

#define PREPACK_VERSION_MAJOR 0
#define PREPACK_VERSION_MINOR 1
#define PREPACK_VERSION_PATCH 0
#define PREPACK_VERSION_STRING "0.1.0"

/* The library's version string, e.g. "0.1.0". */
const char *prepack_version(void);

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
const char *prepack_strerror(int code);

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
const char *prepack_algo_name(prepack_algo algo);
const char *prepack_overlong_name(prepack_overlong policy);
/* Parse those names (exact, lowercase). PREPACK_EINVAL if unknown. */
int prepack_algo_parse(const char *name, prepack_algo *out);
int prepack_overlong_parse(const char *name, prepack_overlong *out);

/* The largest supported max_seq_len: 2^24 = 16,777,216 tokens, far beyond
 * any context length in use. The planner's side structures are O(L). */
#define PREPACK_MAX_SEQ_LEN_LIMIT (1u << 24)
/* The most sequences (and items, after splitting) one plan may hold. Larger
 * corpora are planned in partitions. */
#define PREPACK_MAX_ITEMS (UINT32_MAX - 1u)

typedef struct prepack_plan_options {
    uint32_t max_seq_len;       /* L, required: 1..PREPACK_MAX_SEQ_LEN_LIMIT */
    prepack_algo algo;          /* default FFD */
    prepack_overlong overlong;  /* default ERROR */
    uint32_t max_seqs_per_row;  /* 0 = unlimited */
    int shuffle_rows;           /* non-zero: shuffle the finished rows */
    uint64_t shuffle_seed;      /* seed for that shuffle (any value) */
    const prepack_allocator *allocator; /* NULL = malloc/realloc/free */
    prepack_diag *diag;         /* optional: receives failure details */
} prepack_plan_options;

typedef struct prepack_plan prepack_plan;

/* Plan rows for n sequences of the given lengths (sequence i has id i).
 * Sequences of length 0 are skipped and counted. The plan depends only on
 * lengths and options: same input, same plan, on every platform.
 *
 * On success *out owns a new plan (free with prepack_plan_free). On failure
 * *out is NULL, nothing is leaked, and opts->diag (when set) says why:
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
int prepack_plan_create(prepack_plan **out, const uint32_t *lengths, size_t n,
                        const prepack_plan_options *opts);

/* Frees a plan. NULL is fine. */
void prepack_plan_free(prepack_plan *plan);

/* One placed item: a whole sequence, or for the TRUNCATE policy its first
 * `length` tokens, or for SPLIT one chunk of it starting at token `offset`. */
typedef struct prepack_item {
    uint64_t seq_id;  /* index of the source sequence in the input */
    uint32_t offset;  /* first token of this item within the sequence */
    uint32_t length;  /* tokens in this item, 1..L */
} prepack_item;

/* Number of rows. */
size_t prepack_plan_row_count(const prepack_plan *plan);
/* Number of items placed in all rows. */
size_t prepack_plan_item_count(const prepack_plan *plan);
/* Number of items in row `row` (< row_count). */
size_t prepack_plan_row_size(const prepack_plan *plan, size_t row);
/* Tokens in row `row`: the sum of its items' lengths, <= L. */
uint32_t prepack_plan_row_tokens(const prepack_plan *plan, size_t row);
/* Item k (< row_size) of row `row`, in the order the row concatenates them
 * (the order they were placed: longest first for FFD/BFD, input order for
 * NEXTFIT). Out-of-range arguments are a caller bug (checked by assert). */
prepack_item prepack_plan_item(const prepack_plan *plan, size_t row, size_t k);
/* Copies row `row`'s items into out[0..cap) and returns the row's size
 * (copies min(size, cap) items). */
size_t prepack_plan_row_items(const prepack_plan *plan, size_t row,
                              prepack_item *out, size_t cap);

typedef struct prepack_plan_stats {
    uint32_t max_seq_len;
    uint64_t sequences;          /* n, as given */
    uint64_t input_tokens;       /* sum of all n lengths */
    uint64_t items;              /* items placed */
    uint64_t tokens;             /* tokens placed (sum of item lengths) */
    uint64_t rows;
    uint64_t lower_bound;        /* ceil(tokens / L): no plan has fewer rows */
    double efficiency;           /* tokens / (rows * L); 0 when no rows */
    uint32_t max_items_per_row;
    double mean_items_per_row;   /* items / rows; 0 when no rows */
    uint64_t zero_length;        /* sequences of length 0, skipped */
    uint64_t overlong;           /* sequences longer than L (any policy) */
    uint64_t truncated_tokens;   /* tokens cut off by TRUNCATE */
    uint64_t split_chunks;       /* items made from overlong sequences */
    uint64_t dropped_sequences;  /* by DROP */
    uint64_t dropped_tokens;
} prepack_plan_stats;

/* Fills *out with the plan's figures. */
void prepack_plan_get_stats(const prepack_plan *plan, prepack_plan_stats *out);

/* ------------------------------------------------------------------------ */
/* The padding report: what packing buys over naive batching                  */
/* ------------------------------------------------------------------------ */

/* One way of laying the same items out in rows of fixed width. */
typedef struct prepack_layout {
    uint64_t rows;          /* rows (padded sequences or packed rows) */
    uint64_t slots;         /* token positions computed: rows x their width */
    uint64_t pad_tokens;    /* slots - real tokens */
    double pad_fraction;    /* pad_tokens / slots; 0 when no slots */
    double attention_cost;  /* score-matrix entries, query x key, computed:
                               width^2 per padded row, l^2 per sequence for
                               varlen packing (exact below 2^53) */
} prepack_layout;

typedef struct prepack_report {
    prepack_plan_stats plan;
    uint32_t batch_size;     /* B used for naive batching */
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
 * batch_size 0 means PREPACK_DEFAULT_BATCH_SIZE. O(n), no allocation. */
int prepack_report_compute(const prepack_plan *plan, const uint32_t *lengths,
                           size_t n, uint32_t batch_size, prepack_report *out);

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
int prepack_lengths_parse(const char *text, size_t size, const char *name,
                          uint32_t **lengths, size_t *n,
                          const prepack_allocator *allocator,
                          prepack_diag *diag);

/* Frees memory the library returned (e.g. from prepack_lengths_parse) with
 * the allocator it was made with (NULL = the C library's). NULL is fine. */
void prepack_free(void *ptr, const prepack_allocator *allocator);

#ifdef __cplusplus
}
#endif

#endif /* PREPACK_H */
