/* The planner: which items share a row (FFD, BFD, next-fit), the plan
 * handle and its accessors.
 *
 * Placement records each item's row; the rows are then laid out as one
 * array of entries with row_start offsets (CSR), so a plan costs 8 bytes per
 * item (12 with split chunks) and 4 per row. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"
#include "plan/bound.h"
#include "plan/buckets.h"
#include "plan/items.h"
#include "plan/plan.h"
#include "plan/sort.h"

/* One entry of a row: which sequence, how many of its tokens. */
typedef struct pp_entry {
    uint32_t seq, len;
} pp_entry;

struct prepack_plan {
    prepack_allocator alloc_copy;   /* the caller's, when one was given */
    const prepack_allocator *alloc; /* &alloc_copy or NULL (libc) */
    prepack_plan_stats stats;
    size_t rows;
    size_t items;
    uint32_t *row_start;       /* [rows + 1] first entry of each physical row */
    uint32_t *row_perm;        /* [rows] logical -> physical row, or NULL */
    pp_entry *ent;             /* [items] each entry's source sequence and
                                  tokens, side by side: laying out the
                                  rows writes each entry once, at random */
    uint32_t *off;             /* [items] token offset, NULL when none split */
    uint8_t *skipped; /* [sequences] left out with a dropped group, or NULL */
    prepack_overlong overlong; /* the policy, for the report */
};

/* Scratch for FFD/BFD placement. */
typedef struct placement {
    const pp_items *items;
    uint32_t max_len;
    uint32_t max_per_row; /* 0 = unlimited */
    int first_fit;        /* FFD, else BFD */
    uint32_t *count_of;   /* [L + 1] items of each length */
    uint32_t *row_of;     /* [items] row of the k-th item, longest first */
    uint32_t *row_size;   /* [rows_cap] items per row */
    size_t rows, rows_cap;
    const prepack_allocator *alloc;
} placement;

/* ---- rows ------------------------------------------------------------- */

static int open_row(placement *p, uint32_t *row)
{
    if (p->rows == p->rows_cap) {
        size_t cap = p->rows_cap + p->rows_cap / 2;
        uint32_t *s = pp_realloc(p->alloc, p->row_size, cap, sizeof *s);
        if (!s)
            return PREPACK_ENOMEM;
        p->row_size = s;
        p->rows_cap = cap;
    }
    *row = (uint32_t)p->rows++;
    p->row_size[*row] = 1;
    return PREPACK_OK;
}

/* Room left in a row after adding an item: 0 once it holds
 * max_seqs_per_row items, so no later item is offered to it. */
static uint32_t room_after(const placement *p, uint32_t row, uint32_t free)
{
    if (p->max_per_row && p->row_size[row] >= p->max_per_row)
        return 0;
    return free;
}

/* An item longer than L/2 can share no row already open: every open row
 * holds an item at least as long (items come longest first), so its free
 * space is under L/2. It opens a row without a search. */
static int opens_own_row(const placement *p, uint32_t len)
{
    return (uint64_t)len * 2 > p->max_len || p->max_per_row == 1;
}

/* ---- first-fit and best-fit decreasing -------------------------------- */

/* The bucket (free space) an item of this length goes to, or 0 for a new
 * row. FFD: the bucket holding the lowest-numbered row with room; BFD: the
 * least free space with room. Either way the bucket's lowest row is taken. */
static uint32_t choose_bucket(const placement *p, const pp_buckets *b,
                              uint32_t len)
{
    if (opens_own_row(p, len))
        return 0;
    return p->first_fit ? pp_buckets_first(b, len) : pp_buckets_best(b, len);
}

/* Items a row can still take of this length: what fits in its free
 * space, within max_seqs_per_row. */
static uint32_t fits(const placement *p, uint32_t row, uint32_t free,
                     uint32_t len)
{
    uint32_t n = free / len;
    if (p->max_per_row) {
        uint32_t room = p->max_per_row - p->row_size[row];
        n = n < room ? n : room;
    }
    return n;
}

/* Places the run of `count` items of one length (positions k onward in
 * the longest-first order), a row at a time. Both rules put equal items
 * in the same row until it is full: after one goes to row r, every row
 * before r still lacks room (first fit), or no other row has r's new,
 * smaller free space of at least len (best fit: r's old bucket was the
 * smallest with room). So the row chosen for the first item takes
 * floor(free / len) of them, and a new row floor(L / len), exactly as
 * placing them one by one would: the work follows rows touched, not
 * items placed. */
static int place_run(placement *p, pp_buckets *b, size_t *k, uint32_t len,
                     uint32_t count)
{
    while (count > 0) {
        uint32_t free = choose_bucket(p, b, len), row;
        if (free == 0) {
            if (open_row(p, &row) != PREPACK_OK)
                return PREPACK_ENOMEM;
            p->row_size[row] = 0;
            free = p->max_len;
        } else {
            row = pp_buckets_pop(b, free);
        }
        uint32_t take = fits(p, row, free, len);
        take = take < count ? take : count;
        p->row_size[row] += take;
        free -= take * len;
        count -= take;
        for (uint32_t *r = p->row_of + *k, *end = r + take; r < end; r++)
            *r = row;
        *k += take;
        uint32_t left = room_after(p, row, free);
        if (left >= 1 && pp_buckets_insert(b, row, left) != PREPACK_OK)
            return PREPACK_ENOMEM;
    }
    return PREPACK_OK;
}

/* Items are visited longest first as runs of one length through the
 * counts per length: looking lengths up per item would cost a cache miss
 * each. */
static int place_decreasing(placement *p, pp_buckets *b)
{
    size_t k = 0;
    for (uint32_t len = p->max_len; len >= 1; len--)
        if (p->count_of[len] &&
            place_run(p, b, &k, len, p->count_of[len]) != PREPACK_OK)
            return PREPACK_ENOMEM;
    return PREPACK_OK;
}

/* ---- laying out the plan ---------------------------------------------- */

static int alloc_entries(prepack_plan *plan, int with_offsets)
{
    const prepack_allocator *a = plan->alloc;
    plan->row_start = pp_alloc(a, plan->rows + 1, sizeof *plan->row_start);
    plan->ent = pp_alloc(a, plan->items, sizeof *plan->ent);
    if (with_offsets)
        plan->off = pp_alloc(a, plan->items, sizeof *plan->off);
    if (!plan->row_start || !plan->ent ||
        (with_offsets && !plan->off))
        return PREPACK_ENOMEM;
    return PREPACK_OK;
}

static void put_entry(prepack_plan *plan, size_t e, const pp_items *it,
                      uint32_t item, uint32_t len)
{
    plan->ent[e] = (pp_entry){pp_item_src(it, item), len};
    if (plan->off)
        plan->off[e] = pp_item_off(it, item);
}

/* Turns each position's row into its entry: positions are visited in
 * the longest-first order, so a row's entries come out longest first,
 * ties in input order, as a row must list them; and each row's fill
 * pointer is touched in nearly rising row order (first fit moves forward
 * through the rows within a length), so this pass stays in cache. */
static void entries_by_position(placement *p)
{
    for (size_t k = 0; k < p->items->count; k++)
        p->row_of[k] = p->row_size[p->row_of[k]]++;
}

/* Writes every item, in input order, to its entry: its position in the
 * longest-first order recomputed from the counts per length, which saves
 * holding that order (4 bytes an item) beside the plan being written. */
static void scatter_entries(prepack_plan *plan, placement *p)
{
    for (size_t i = 0; i < p->items->count; i++) {
        uint32_t len = pp_item_len(p->items, i);
        uint32_t k = p->count_of[len]++;
        put_entry(plan, p->row_of[k], p->items, (uint32_t)i, len);
    }
}

/* Rows in CSR form: sizes to starts, positions to entries, items to
 * entries. No sort: the entries land in their final order. */
static int lay_out_rows(prepack_plan *plan, placement *p)
{
    plan->rows = p->rows;
    if (alloc_entries(plan, p->items->off != NULL) != PREPACK_OK)
        return PREPACK_ENOMEM;
    uint32_t total = 0;
    for (size_t r = 0; r < p->rows; r++) {
        plan->row_start[r] = total;
        total += p->row_size[r];
        p->row_size[r] = plan->row_start[r]; /* now: next free entry */
    }
    plan->row_start[p->rows] = total;
    entries_by_position(p);
    pp_first_positions_desc(p->count_of, p->max_len);
    scatter_entries(plan, p);
    pp_free(p->alloc, p->row_of);
    p->row_of = NULL;
    return PREPACK_OK;
}

static int plan_decreasing(prepack_plan *plan, const pp_items *it,
                           const prepack_plan_options *o)
{
    const prepack_allocator *a = plan->alloc;
    /* FFD and BFD rarely need more than the lower bound + 1% rows (see
     * docs/BENCHMARKS.md): start the row arrays a little above it and let
     * them grow by half when short. */
    uint64_t bound = plan->stats.tokens / o->max_seq_len;
    size_t guess = (size_t)(bound + bound / 32 + 64);
    placement p = {.items = it,
                   .max_len = o->max_seq_len,
                   .max_per_row = o->max_seqs_per_row,
                   .first_fit = o->algo == PREPACK_ALGO_FFD,
                   .rows_cap = guess,
                   .alloc = a};
    p.count_of = pp_alloc(a, (size_t)o->max_seq_len + 1, sizeof *p.count_of);
    p.row_of = pp_alloc(a, it->count, sizeof *p.row_of);
    p.row_size = pp_alloc(a, guess, sizeof *p.row_size);
    int rc = PREPACK_ENOMEM;
    if (p.count_of && p.row_of && p.row_size) {
        pp_count_lengths(it, p.count_of);
        plan->stats.lower_bound =
            pp_lower_bound(p.count_of, o->max_seq_len, plan->stats.tokens,
                           it->count, o->max_seqs_per_row);
        pp_buckets b;
        rc = pp_buckets_init(&b, o->max_seq_len, guess, p.first_fit, a);
        if (rc == PREPACK_OK)
            rc = place_decreasing(&p, &b);
        pp_buckets_destroy(&b);
    }
    if (rc == PREPACK_OK)
        rc = lay_out_rows(plan, &p);
    pp_free(a, p.count_of);
    pp_free(a, p.row_of);
    pp_free(a, p.row_size);
    return rc;
}

/* ---- next-fit ---------------------------------------------------------- */

/* Next-fit needs no counts per length but the bound does: O(items + L)
 * time, L + 1 counts of memory, freed before the rows are laid out. */
static int compute_lower_bound(prepack_plan *plan, const pp_items *it,
                               const prepack_plan_options *o)
{
    uint32_t *count_of =
        pp_alloc(plan->alloc, (size_t)o->max_seq_len + 1, sizeof *count_of);
    if (!count_of)
        return PREPACK_ENOMEM;
    pp_count_lengths(it, count_of);
    plan->stats.lower_bound =
        pp_lower_bound(count_of, o->max_seq_len, plan->stats.tokens, it->count,
                       o->max_seqs_per_row);
    pp_free(plan->alloc, count_of);
    return PREPACK_OK;
}

/* One open row, items in input order: rows are contiguous runs of items,
 * so the entries are the items themselves and only row starts are found. */
static int plan_next_fit(prepack_plan *plan, const pp_items *it,
                         const prepack_plan_options *o)
{
    if (compute_lower_bound(plan, it, o) != PREPACK_OK)
        return PREPACK_ENOMEM;
    size_t rows = 0;
    uint32_t used = 0, size = 0;
    for (size_t i = 0; i < it->count; i++) {
        uint32_t len = pp_item_len(it, i);
        if (rows == 0 || len > o->max_seq_len - used ||
            (o->max_seqs_per_row && size == o->max_seqs_per_row)) {
            rows++;
            used = size = 0;
        }
        used += len;
        size++;
    }
    plan->rows = rows;
    if (alloc_entries(plan, it->off != NULL) != PREPACK_OK)
        return PREPACK_ENOMEM;
    size_t r = 0;
    used = size = 0;
    for (size_t i = 0; i < it->count; i++) {
        uint32_t len = pp_item_len(it, i);
        if (i == 0 || len > o->max_seq_len - used ||
            (o->max_seqs_per_row && size == o->max_seqs_per_row)) {
            plan->row_start[r++] = (uint32_t)i;
            used = size = 0;
        }
        used += len;
        size++;
        put_entry(plan, i, it, (uint32_t)i, len);
    }
    plan->row_start[rows] = (uint32_t)it->count;
    return PREPACK_OK;
}

/* ---- shuffling rows ----------------------------------------------------- */

/* splitmix64 (Steele, Lea and Flood 2014): a tiny generator with a fixed
 * definition, so a seed gives the same shuffle on every platform. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform in [0, bound) without modulo bias: rejection on the low bits of
 * a 32x32 multiply (Lemire 2019). */
static uint32_t bounded(uint64_t *state, uint32_t bound)
{
    uint32_t threshold = (uint32_t)(-bound) % bound;
    for (;;) {
        uint64_t m = (uint64_t)(uint32_t)(splitmix64(state) >> 32) * bound;
        if ((uint32_t)m >= threshold)
            return (uint32_t)(m >> 32);
    }
}

static int shuffle_rows(prepack_plan *plan, uint64_t seed)
{
    plan->row_perm = pp_alloc(plan->alloc, plan->rows, sizeof(uint32_t));
    if (!plan->row_perm)
        return PREPACK_ENOMEM;
    for (size_t i = 0; i < plan->rows; i++)
        plan->row_perm[i] = (uint32_t)i;
    uint64_t state = seed;
    for (size_t i = plan->rows; i > 1; i--) { /* Fisher-Yates */
        uint32_t j = bounded(&state, (uint32_t)i);
        uint32_t t = plan->row_perm[i - 1];
        plan->row_perm[i - 1] = plan->row_perm[j];
        plan->row_perm[j] = t;
    }
    return PREPACK_OK;
}

/* ---- statistics --------------------------------------------------------- */

static void finish_stats(prepack_plan *plan, uint32_t max_len)
{
    prepack_plan_stats *s = &plan->stats;
    s->max_seq_len = max_len;
    s->rows = plan->rows;
    for (size_t r = 0; r < plan->rows; r++) {
        uint32_t size = plan->row_start[r + 1] - plan->row_start[r];
        if (size > s->max_items_per_row)
            s->max_items_per_row = size;
    }
    if (plan->rows) {
        s->efficiency = (double)s->tokens / ((double)plan->rows * max_len);
        s->mean_items_per_row = (double)s->items / (double)plan->rows;
    }
}

/* ---- the public API ------------------------------------------------------ */

static int check_options(const uint32_t *lengths, size_t n,
                         const prepack_plan_options *o, prepack_diag *d)
{
    if (o->max_seq_len == 0 || o->max_seq_len > PREPACK_MAX_SEQ_LEN_LIMIT)
        return pp_fail(d, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "max_seq_len must be 1..%u, not %u",
                       PREPACK_MAX_SEQ_LEN_LIMIT, o->max_seq_len);
    if (!prepack_algo_name(o->algo))
        return pp_fail(d, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "unknown algorithm %d", (int)o->algo);
    if (!prepack_overlong_name(o->overlong))
        return pp_fail(d, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "unknown overlong policy %d", (int)o->overlong);
    if (n > 0 && !lengths)
        return pp_fail(d, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "lengths is NULL but n is %zu", n);
    if (o->pad_multiple > 1 && o->max_seq_len % o->pad_multiple != 0)
        return pp_fail(d, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "max_seq_len %u is not a multiple of pad_multiple %u",
                       o->max_seq_len, o->pad_multiple);
    if (n > PREPACK_MAX_ITEMS)
        return pp_fail(d, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "%zu sequences, more than the %u one plan holds; "
                       "plan in partitions",
                       n, PREPACK_MAX_ITEMS);
    return pp_check_allocator(o->allocator, d);
}

static int plan_lengths(prepack_plan **out, const uint32_t *lengths, size_t n,
                        const prepack_plan_options *opts, prepack_diag *diag);

/* ---- context-parallel padding ------------------------------------------------ */

/* Each length rounded up to a multiple of m (0 stays 0). With L a multiple
 * of m, a length is over L exactly when its rounded one is, and splits
 * into as many chunks: the overlong policy decides alike on both. */
static uint32_t *padded_lengths(const uint32_t *lengths, size_t n, uint32_t m,
                                const prepack_allocator *a)
{
    uint32_t *p = pp_alloc(a, n ? n : 1, sizeof *p);
    for (size_t i = 0; p && i < n; i++) {
        uint64_t up = ((uint64_t)lengths[i] + m - 1) / m * m;
        p[i] = up > UINT32_MAX ? UINT32_MAX : (uint32_t)up;
    }
    return p;
}

/* After planning the rounded lengths: each item back to its real tokens
 * (the rounded chunk's, cut at the sequence's end), and the token figures
 * counted on the real lengths. */
static void unpad(prepack_plan *plan, const uint32_t *lengths, size_t n,
                  const prepack_plan_options *o)
{
    for (size_t e = 0; e < plan->items; e++) {
        uint32_t real = lengths[plan->ent[e].seq];
        uint32_t off = plan->off ? plan->off[e] : 0;
        uint32_t left = real > off ? real - off : 0;
        plan->ent[e].len = plan->ent[e].len < left ? plan->ent[e].len : left;
    }
    prepack_plan_stats *s = &plan->stats;
    uint64_t L = o->max_seq_len, input = 0, over = 0, over_tokens = 0;
    for (size_t i = 0; i < n; i++) {
        input += lengths[i];
        if (lengths[i] > L) {
            over += lengths[i] - L;
            over_tokens += lengths[i];
        }
    }
    s->input_tokens = input;
    s->truncated_tokens = o->overlong == PREPACK_OVERLONG_TRUNCATE ? over : 0;
    s->dropped_tokens = o->overlong == PREPACK_OVERLONG_DROP ? over_tokens : 0;
    s->tokens = input - s->truncated_tokens - s->dropped_tokens;
}

/* The plan of the lengths rounded up to pad_multiple, its items cut back
 * to their real tokens (options checked). */
static int plan_padded(prepack_plan **out, const uint32_t *lengths, size_t n,
                       const prepack_plan_options *opts, prepack_diag *diag)
{
    uint32_t *padded =
        padded_lengths(lengths, n, opts->pad_multiple, opts->allocator);
    if (!padded)
        return pp_out_of_memory(diag);
    prepack_plan_options unpadded = *opts;
    unpadded.pad_multiple = 0;
    int rc = plan_lengths(out, padded, n, &unpadded, diag);
    if (rc == PREPACK_OK) {
        unpad(*out, lengths, n, opts);
        if ((*out)->rows)
            (*out)->stats.efficiency = (double)(*out)->stats.tokens /
                                       ((double)(*out)->rows * opts->max_seq_len);
    }
    if (rc == PREPACK_EOVERLONG && diag && diag->record < n)
        pp_fail(diag, rc, diag->record,
                "sequence %llu has %u tokens, more than max_seq_len %u",
                (unsigned long long)diag->record, lengths[diag->record],
                opts->max_seq_len);
    pp_free(opts->allocator, padded);
    return rc;
}

int prepack_plan_create(prepack_plan **out, const uint32_t *lengths, size_t n,
                        const prepack_plan_options *opts, prepack_diag *diag)
{
    if (!out || !opts)
        return pp_invalid_argument(diag);
    *out = NULL;
    int rc = check_options(lengths, n, opts, diag);
    if (rc != PREPACK_OK)
        return rc;
    return opts->pad_multiple > 1 ? plan_padded(out, lengths, n, opts, diag)
                                  : plan_lengths(out, lengths, n, opts, diag);
}

static int plan_lengths(prepack_plan **out, const uint32_t *lengths, size_t n,
                        const prepack_plan_options *opts, prepack_diag *diag)
{
    if (!out || !opts)
        return pp_invalid_argument(diag);
    *out = NULL;
    int rc = check_options(lengths, n, opts, diag);
    if (rc != PREPACK_OK)
        return rc;
    prepack_plan *plan = pp_calloc(opts->allocator, 1, sizeof *plan);
    if (!plan)
        return pp_out_of_memory(diag);
    plan->overlong = opts->overlong;
    plan->alloc = pp_allocator_keep(&plan->alloc_copy, opts->allocator);
    pp_items items;
    rc = pp_items_build(&items, lengths, n, opts->max_seq_len, opts->overlong,
                        &plan->stats, plan->alloc, diag);
    if (rc == PREPACK_OK) {
        plan->items = items.count;
        rc = opts->algo == PREPACK_ALGO_NEXTFIT
                 ? plan_next_fit(plan, &items, opts)
                 : plan_decreasing(plan, &items, opts);
        pp_items_destroy(&items);
    }
    if (rc == PREPACK_OK && opts->shuffle_rows)
        rc = shuffle_rows(plan, opts->shuffle_seed);
    if (rc != PREPACK_OK) {
        prepack_plan_free(plan);
        if (rc == PREPACK_ENOMEM)
            pp_fail(diag, rc, PREPACK_NO_RECORD,
                    "out of memory planning %zu sequences", n);
        return rc;
    }
    finish_stats(plan, opts->max_seq_len);
    *out = plan;
    return PREPACK_OK;
}

void prepack_plan_free(prepack_plan *plan)
{
    if (!plan)
        return;
    prepack_allocator copy = plan->alloc_copy; /* plan itself goes with it */
    const prepack_allocator *a = plan->alloc ? &copy : NULL;
    pp_free(a, plan->row_start);
    pp_free(a, plan->row_perm);
    pp_free(a, plan->ent);
    pp_free(a, plan->off);
    pp_free(a, plan->skipped);
    pp_free(a, plan);
}

size_t prepack_plan_row_count(const prepack_plan *plan)
{
    return plan->rows;
}

size_t prepack_plan_item_count(const prepack_plan *plan)
{
    return plan->items;
}

/* Logical row (what callers number) to where its entries are stored. */
static size_t physical_row(const prepack_plan *plan, size_t row)
{
    assert(row < plan->rows);
    return plan->row_perm ? plan->row_perm[row] : row;
}

size_t prepack_plan_row_size(const prepack_plan *plan, size_t row)
{
    size_t r = physical_row(plan, row);
    return plan->row_start[r + 1] - plan->row_start[r];
}

uint32_t prepack_plan_row_tokens(const prepack_plan *plan, size_t row)
{
    size_t r = physical_row(plan, row);
    uint32_t sum = 0;
    for (uint32_t e = plan->row_start[r]; e < plan->row_start[r + 1]; e++)
        sum += plan->ent[e].len;
    return sum;
}

static prepack_item entry(const prepack_plan *plan, size_t e)
{
    prepack_item item = {plan->ent[e].seq, plan->off ? plan->off[e] : 0,
                         plan->ent[e].len};
    return item;
}

prepack_item prepack_plan_item(const prepack_plan *plan, size_t row, size_t k)
{
    size_t r = physical_row(plan, row);
    assert(k < plan->row_start[r + 1] - plan->row_start[r]);
    return entry(plan, plan->row_start[r] + k);
}

size_t prepack_plan_row_items(const prepack_plan *plan, size_t row,
                              prepack_item *out, size_t cap)
{
    size_t r = physical_row(plan, row);
    size_t first = plan->row_start[r];
    size_t size = plan->row_start[r + 1] - first;
    for (size_t k = 0; k < size && k < cap; k++)
        out[k] = entry(plan, first + k);
    return size;
}

void prepack_plan_get_stats(const prepack_plan *plan, prepack_plan_stats *out)
{
    *out = plan->stats;
}

prepack_overlong pp_plan_overlong(const prepack_plan *plan)
{
    return plan->overlong;
}

const uint8_t *pp_plan_skipped(const prepack_plan *plan)
{
    return plan->skipped;
}

int pp_plan_has_offsets(const prepack_plan *plan)
{
    return plan->off != NULL;
}

/* ---- groups: sequences placed together --------------------------------------- */

static int check_groups(size_t n, const uint64_t *first, size_t groups,
                        const prepack_plan_options *o, prepack_diag *diag)
{
    if (!first || first[0] != 0 || first[groups] != n)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "group_first must run from 0 to the %zu sequences", n);
    for (size_t g = 0; g < groups; g++)
        if (first[g + 1] <= first[g])
            return pp_fail(diag, PREPACK_EINVAL, g,
                           "group %zu is empty or out of order", g);
    if (o->overlong == PREPACK_OVERLONG_SPLIT ||
        o->overlong == PREPACK_OVERLONG_TRUNCATE)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "groups are placed whole, never split or truncated "
                       "apart: choose the overlong policy error or drop");
    if (o->max_seqs_per_row)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "max_seqs_per_row is not supported with groups");
    return PREPACK_OK;
}

/* Each group's tokens, each member rounded up to pad_multiple. */
static uint32_t *group_lengths(const uint32_t *lengths, const uint64_t *first,
                               size_t groups, uint32_t m,
                               const prepack_allocator *a)
{
    uint32_t *out = pp_alloc(a, groups ? groups : 1, sizeof *out);
    for (size_t g = 0; out && g < groups; g++) {
        uint64_t sum = 0;
        for (uint64_t s = first[g]; s < first[g + 1]; s++)
            sum += m > 1 ? ((uint64_t)lengths[s] + m - 1) / m * m : lengths[s];
        out[g] = sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
    }
    return out;
}

/* Replaces each placed group by its members (in order, empty ones left
 * out), and the figures by the sequences'. */
static int expand_groups(prepack_plan *plan, const uint32_t *lengths, size_t n,
                         const uint64_t *first, size_t groups,
                         const uint32_t *glen, uint32_t max_len)
{
    const prepack_allocator *a = plan->alloc;
    size_t items = 0;
    for (size_t e = 0; e < plan->items; e++)
        for (uint64_t s = first[plan->ent[e].seq];
             s < first[plan->ent[e].seq + 1]; s++)
            items += lengths[s] > 0;
    pp_entry *ent = pp_alloc(a, items ? items : 1, sizeof *ent);
    uint32_t *start = pp_alloc(a, plan->rows + 1, sizeof *start);
    if (!ent || !start) {
        pp_free(a, ent);
        pp_free(a, start);
        return PREPACK_ENOMEM;
    }
    size_t k = 0;
    uint64_t tokens = 0;
    for (size_t r = 0; r < plan->rows; r++) {
        start[r] = (uint32_t)k;
        for (uint32_t e = plan->row_start[r]; e < plan->row_start[r + 1]; e++)
            for (uint64_t s = first[plan->ent[e].seq];
                 s < first[plan->ent[e].seq + 1]; s++)
                if (lengths[s] > 0) {
                    ent[k++] = (pp_entry){(uint32_t)s, lengths[s]};
                    tokens += lengths[s];
                }
    }
    start[plan->rows] = (uint32_t)k;
    pp_free(a, plan->ent);
    pp_free(a, plan->row_start);
    plan->ent = ent;
    plan->row_start = start;
    plan->items = items;
    prepack_plan_stats *st = &plan->stats;
    uint64_t input = 0, zero = 0, over = 0, dropped = 0, dropped_tokens = 0;
    for (size_t g = 0; g < groups; g++) {
        if (glen[g] <= max_len) /* as the planner decided: padded sums */
            continue;
        uint64_t sum = 0, members = first[g + 1] - first[g];
        for (uint64_t s = first[g]; s < first[g + 1]; s++)
            sum += lengths[s];
        over += members;
        if (plan->overlong == PREPACK_OVERLONG_DROP) {
            dropped += members;
            dropped_tokens += sum;
            if (!plan->skipped &&
                !(plan->skipped = pp_calloc(a, n ? n : 1, 1)))
                return PREPACK_ENOMEM;
            for (uint64_t s = first[g]; s < first[g + 1]; s++)
                plan->skipped[s] = 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        input += lengths[i];
        zero += lengths[i] == 0;
    }
    st->sequences = n;
    st->input_tokens = input;
    st->zero_length = zero;
    st->overlong = over;
    st->dropped_sequences = dropped;
    st->dropped_tokens = dropped_tokens;
    st->items = items;
    st->tokens = tokens;
    st->max_items_per_row = 0;
    finish_stats(plan, max_len);
    return PREPACK_OK;
}

/* An overlong group named by its sequences and real tokens, and by the
 * padded sum the planner weighed when padding is what took it past L. */
static void group_overlong(prepack_diag *diag, const uint32_t *lengths,
                           const uint64_t *first, size_t g, uint32_t padded,
                           const prepack_plan_options *o)
{
    uint64_t real = 0;
    for (uint64_t s = first[g]; s < first[g + 1]; s++)
        real += lengths[s];
    char how[96] = "";
    if (real != padded)
        snprintf(how, sizeof how,
                 " (%u with each sequence padded to a multiple of %u)",
                 padded, o->pad_multiple);
    pp_fail(diag, PREPACK_EOVERLONG, first[g],
            "the group of sequences %llu..%llu has %llu tokens%s, more than "
            "max_seq_len %u",
            (unsigned long long)first[g],
            (unsigned long long)(first[g + 1] - 1), (unsigned long long)real,
            how, o->max_seq_len);
}

int prepack_plan_create_groups(prepack_plan **out, const uint32_t *lengths,
                               size_t n, const uint64_t *group_first,
                               size_t groups, const prepack_plan_options *opts,
                               prepack_diag *diag)
{
    if (!out || !opts || (n && !lengths))
        return pp_invalid_argument(diag);
    *out = NULL;
    int rc = check_options(lengths, n, opts, diag);
    if (rc == PREPACK_OK)
        rc = check_groups(n, group_first, groups, opts, diag);
    if (rc != PREPACK_OK)
        return rc;
    uint32_t *glen = group_lengths(lengths, group_first, groups,
                                   opts->pad_multiple, opts->allocator);
    if (!glen)
        return pp_out_of_memory(diag);
    prepack_plan_options o = *opts;
    o.pad_multiple = 0; /* the group lengths are rounded already */
    rc = plan_lengths(out, glen, groups, &o, diag);
    if (rc == PREPACK_EOVERLONG && diag && diag->record < groups)
        group_overlong(diag, lengths, group_first, (size_t)diag->record,
                       glen[diag->record], opts);
    if (rc == PREPACK_OK &&
        expand_groups(*out, lengths, n, group_first, groups, glen,
                      opts->max_seq_len) !=
            PREPACK_OK) {
        prepack_plan_free(*out);
        *out = NULL;
        rc = pp_out_of_memory(diag);
    }
    pp_free(opts->allocator, glen);
    return rc;
}
