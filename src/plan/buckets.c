/* The best-fit index: rows grouped by exact free space.
 *
 * Best fit wants the least free space >= need, lowest row among equals.
 * Free space is an integer in 1..L, so rows sit in buckets by free space; a
 * hierarchical bitset (64-ary, at most 5 levels for L <= 2^24) finds the
 * smallest non-empty bucket >= need in a few word operations, and each
 * bucket is a pairing heap keyed by row number (Fredman, Sedgewick, Sleator
 * and Tarjan 1986): O(1) insert, O(log n) amortised delete-min, and its
 * links live in two arrays indexed by row, so buckets cost no allocation of
 * their own. */
#include <string.h>

#include "common/alloc.h"
#include "plan/buckets.h"

#define LEVELS_MAX 6 /* 64^6 > 2^24 + 1 buckets */

static size_t words_for(size_t bits)
{
    return (bits + 63) / 64;
}

static int init_lowest(pp_buckets *b)
{
    b->lowest_cap = 1;
    while (b->lowest_cap <= b->max_free)
        b->lowest_cap *= 2;
    b->lowest = pp_alloc(b->alloc, 2 * b->lowest_cap, sizeof *b->lowest);
    if (!b->lowest)
        return PREPACK_ENOMEM;
    for (size_t i = 0; i < 2 * b->lowest_cap; i++)
        b->lowest[i] = UINT64_MAX;
    return PREPACK_OK;
}

int pp_buckets_init(pp_buckets *b, uint32_t max_free, size_t expected_rows,
                    int first_fit, const prepack_allocator *a)
{
    memset(b, 0, sizeof *b);
    b->alloc = a;
    b->max_free = max_free;
    b->rows_cap = expected_rows < 64 ? 64 : expected_rows;
    b->head = pp_alloc(a, (size_t)max_free + 1, sizeof *b->head);
    b->child = pp_alloc(a, b->rows_cap, sizeof *b->child);
    b->sibling = pp_alloc(a, b->rows_cap, sizeof *b->sibling);
    int ok = b->head && b->child && b->sibling;
    size_t bits = (size_t)max_free + 1;
    for (int lv = 0; ok && lv < LEVELS_MAX; lv++) {
        b->words[lv] = words_for(bits);
        b->bits[lv] = pp_calloc(a, b->words[lv], sizeof(uint64_t));
        ok = b->bits[lv] != NULL;
        b->levels = lv + 1;
        if (b->words[lv] == 1)
            break;
        bits = b->words[lv];
    }
    if (ok && first_fit)
        ok = init_lowest(b) == PREPACK_OK;
    if (!ok) {
        pp_buckets_destroy(b);
        return PREPACK_ENOMEM;
    }
    for (size_t f = 0; f <= max_free; f++)
        b->head[f] = PP_NIL;
    return PREPACK_OK;
}

void pp_buckets_destroy(pp_buckets *b)
{
    pp_free(b->alloc, b->head);
    pp_free(b->alloc, b->child);
    pp_free(b->alloc, b->sibling);
    for (int lv = 0; lv < LEVELS_MAX; lv++)
        pp_free(b->alloc, b->bits[lv]);
    pp_free(b->alloc, b->lowest);
    memset(b, 0, sizeof *b);
}

/* ---- hierarchical bitset: bit w of level k+1 <=> word w of level k != 0 */

static void bit_set(pp_buckets *b, size_t i)
{
    for (int lv = 0; lv < b->levels; lv++) {
        uint64_t *w = &b->bits[lv][i >> 6];
        int was_empty = *w == 0;
        *w |= UINT64_C(1) << (i & 63);
        if (!was_empty)
            return;
        i >>= 6;
    }
}

static void bit_clear(pp_buckets *b, size_t i)
{
    for (int lv = 0; lv < b->levels; lv++) {
        uint64_t *w = &b->bits[lv][i >> 6];
        *w &= ~(UINT64_C(1) << (i & 63));
        if (*w != 0)
            return;
        i >>= 6;
    }
}

/* Smallest set index >= i at level lv, or SIZE_MAX. */
static size_t bit_next(const pp_buckets *b, int lv, size_t i)
{
    size_t w = i >> 6;
    if (w >= b->words[lv])
        return SIZE_MAX;
    uint64_t word = b->bits[lv][w] & (~UINT64_C(0) << (i & 63));
    if (word)
        return w * 64 + (size_t)__builtin_ctzll(word);
    if (lv + 1 == b->levels)
        return SIZE_MAX;
    size_t nw = bit_next(b, lv + 1, w + 1);
    if (nw == SIZE_MAX)
        return SIZE_MAX;
    return nw * 64 + (size_t)__builtin_ctzll(b->bits[lv][nw]);
}

/* ---- first fit: a min tree over each bucket's lowest row ---------------
 *
 * The lowest-numbered row with free >= need is the least of the buckets'
 * lowest rows over need..L. A binary min tree over those L + 1 values
 * answers in O(log L), and for L of a few thousand it is small enough to
 * stay in cache, where a tree over rows would not. Each node holds
 * (row << 32 | bucket), so the minimum names its bucket without a walk
 * down the tree. */

static void lowest_changed(pp_buckets *b, size_t f)
{
    uint64_t *t = b->lowest;
    if (!t)
        return;
    uint32_t h = b->head[f];
    size_t i = f + b->lowest_cap;
    t[i] = h == PP_NIL ? UINT64_MAX : (uint64_t)h << 32 | f;
    for (i >>= 1; i >= 1; i >>= 1) {
        uint64_t m = t[2 * i] < t[2 * i + 1] ? t[2 * i] : t[2 * i + 1];
        if (t[i] == m)
            break;
        t[i] = m;
    }
}

uint32_t pp_buckets_first(const pp_buckets *b, uint32_t need)
{
    const uint64_t *t = b->lowest;
    uint64_t best = UINT64_MAX;
    /* The suffix need..cap-1 as O(log L) disjoint subtrees, bottom-up:
     * a left boundary that is a right child is taken whole. */
    for (size_t l = need + b->lowest_cap; l > 1; l >>= 1) {
        if (l & 1) {
            best = t[l] < best ? t[l] : best;
            l++;
        }
    }
    return best == UINT64_MAX ? 0 : (uint32_t)best;
}

/* ---- pairing heaps of row numbers ------------------------------------ */

/* Joins two heap roots; the smaller row stays root. */
static uint32_t meld(pp_buckets *b, uint32_t x, uint32_t y)
{
    if (y < x) {
        uint32_t t = x;
        x = y;
        y = t;
    }
    b->sibling[y] = b->child[x];
    b->child[x] = y;
    return x;
}

/* The standard two-pass merge of a root's children, iteratively: meld
 * pairs left to right (stacking results), then meld the stack. */
static uint32_t merge_pairs(pp_buckets *b, uint32_t first)
{
    uint32_t stack = PP_NIL;
    while (first != PP_NIL) {
        uint32_t x = first, y = b->sibling[x];
        if (y == PP_NIL) {
            b->sibling[x] = stack;
            stack = x;
            break;
        }
        first = b->sibling[y];
        b->sibling[x] = b->sibling[y] = PP_NIL;
        uint32_t m = meld(b, x, y);
        b->sibling[m] = stack;
        stack = m;
    }
    if (stack == PP_NIL)
        return PP_NIL;
    uint32_t root = stack, next = b->sibling[stack];
    b->sibling[root] = PP_NIL;
    while (next != PP_NIL) {
        uint32_t after = b->sibling[next];
        b->sibling[next] = PP_NIL;
        root = meld(b, root, next);
        next = after;
    }
    return root;
}

static int ensure_rows(pp_buckets *b, uint32_t r)
{
    if (r < b->rows_cap)
        return PREPACK_OK;
    /* rows that were filled at once never came here: r may be past any
     * one step of growth */
    size_t cap = b->rows_cap + b->rows_cap / 2;
    if (cap <= r)
        cap = (size_t)r + r / 2 + 1;
    uint32_t *c = pp_realloc(b->alloc, b->child, cap, sizeof *c);
    if (!c)
        return PREPACK_ENOMEM;
    b->child = c;
    uint32_t *s = pp_realloc(b->alloc, b->sibling, cap, sizeof *s);
    if (!s)
        return PREPACK_ENOMEM;
    b->sibling = s;
    b->rows_cap = cap;
    return PREPACK_OK;
}

int pp_buckets_insert(pp_buckets *b, uint32_t r, uint32_t free_space)
{
    if (ensure_rows(b, r) != PREPACK_OK)
        return PREPACK_ENOMEM;
    b->child[r] = b->sibling[r] = PP_NIL;
    uint32_t h = b->head[free_space];
    if (h == PP_NIL) {
        b->head[free_space] = r;
        bit_set(b, free_space);
    } else {
        b->head[free_space] = meld(b, h, r);
    }
    if (b->head[free_space] == r)
        lowest_changed(b, free_space);
    return PREPACK_OK;
}

uint32_t pp_buckets_best(const pp_buckets *b, uint32_t need)
{
    size_t f = bit_next(b, 0, need);
    return f == SIZE_MAX ? 0 : (uint32_t)f;
}

uint32_t pp_buckets_pop(pp_buckets *b, uint32_t free_space)
{
    uint32_t r = b->head[free_space];
    uint32_t rest = merge_pairs(b, b->child[r]);
    b->head[free_space] = rest;
    if (rest == PP_NIL)
        bit_clear(b, free_space);
    lowest_changed(b, free_space);
    return r;
}
