/* The first-fit index: a 16-ary max tree over rows' free space.
 *
 * First fit must find the lowest-numbered row with free >= need without
 * scanning rows (an O(N x rows) scan is what makes some Python packers take
 * hours). Each node is the maximum of 16 children stored side by side, one
 * 64-byte cache line, so a root-to-leaf descent reads one line per level
 * (6 levels for 2M rows, against 21 for a binary tree) and the 16-way
 * comparisons vectorise. An update climbs only while a maximum changes.
 * Leaves past `used` hold 0, which no item (length >= 1) fits. The tree
 * doubles when full. */
#include <string.h>

#include "internal.h"

#define FAN 16
#define LINE 64

#if defined(__SSE2__) && !defined(PREPACK_NO_SIMD)
#include <emmintrin.h>

/* Free space and need are at most PREPACK_MAX_SEQ_LEN_LIMIT (2^24), so
 * SSE2's signed 32-bit compares order them exactly. */
static __m128i max_epi32(__m128i a, __m128i b)
{
    __m128i gt = _mm_cmpgt_epi32(a, b);
    return _mm_or_si128(_mm_and_si128(gt, a), _mm_andnot_si128(gt, b));
}

/* Index of the first of 16 values >= need; the caller knows one is. */
static unsigned first_at_least(const uint32_t *group, uint32_t need)
{
    const __m128i *g = (const __m128i *)(const void *)group;
    __m128i lim = _mm_set1_epi32((int)need - 1);
    __m128i ab = _mm_packs_epi32(_mm_cmpgt_epi32(_mm_load_si128(g), lim),
                                 _mm_cmpgt_epi32(_mm_load_si128(g + 1), lim));
    __m128i cd = _mm_packs_epi32(_mm_cmpgt_epi32(_mm_load_si128(g + 2), lim),
                                 _mm_cmpgt_epi32(_mm_load_si128(g + 3), lim));
    unsigned mask = (unsigned)_mm_movemask_epi8(_mm_packs_epi16(ab, cd));
    return (unsigned)__builtin_ctz(mask);
}

static uint32_t group_max(const uint32_t *group)
{
    const __m128i *g = (const __m128i *)(const void *)group;
    __m128i m = max_epi32(max_epi32(_mm_load_si128(g), _mm_load_si128(g + 1)),
                          max_epi32(_mm_load_si128(g + 2),
                                    _mm_load_si128(g + 3)));
    m = max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(m);
}
#else
static unsigned first_at_least(const uint32_t *group, uint32_t need)
{
    unsigned j = 0;
    while (group[j] < need)
        j++;
    return j;
}

static uint32_t group_max(const uint32_t *group)
{
    uint32_t m = 0;
    for (unsigned j = 0; j < FAN; j++)
        m = group[j] > m ? group[j] : m;
    return m;
}
#endif

/* Level sizes: cap leaves, then cap/16, ..., down to one group of 16. */
static void plan_levels(pp_segtree *t)
{
    size_t len = t->cap, off = 0;
    t->levels = 0;
    for (;;) {
        t->level[t->levels++] = off;
        off += len;
        if (len == FAN)
            break;
        len = len / FAN < FAN ? FAN : len / FAN;
    }
    t->nodes = off;
}

static int alloc_nodes(pp_segtree *t)
{
    plan_levels(t);
    /* Over-allocate by a line so groups can start on line boundaries. */
    t->raw = pp_calloc(t->alloc, t->nodes * sizeof(uint32_t) + LINE, 1);
    if (!t->raw)
        return PREPACK_ENOMEM;
    uintptr_t p = (uintptr_t)t->raw;
    t->node = (uint32_t *)(void *)(t->raw + ((LINE - p % LINE) % LINE));
    return PREPACK_OK;
}

int pp_segtree_init(pp_segtree *t, size_t expected_rows,
                    const prepack_allocator *a)
{
    memset(t, 0, sizeof *t);
    t->alloc = a;
    t->cap = FAN;
    while (t->cap < expected_rows)
        t->cap *= 2;
    return alloc_nodes(t);
}

void pp_segtree_destroy(pp_segtree *t)
{
    pp_free(t->alloc, t->raw);
    t->raw = NULL;
    t->node = NULL;
}

/* Recomputes every level above the leaves. */
static void rebuild(pp_segtree *t)
{
    for (int lv = 0; lv + 1 < t->levels; lv++) {
        uint32_t *child = t->node + t->level[lv];
        uint32_t *parent = t->node + t->level[lv + 1];
        size_t groups = (t->level[lv + 1] - t->level[lv]) / FAN;
        for (size_t g = 0; g < groups; g++)
            parent[g] = group_max(child + g * FAN);
    }
    t->root = group_max(t->node + t->level[t->levels - 1]);
}

/* Rebuilds with twice the leaves: O(cap), so O(1) amortised per row. */
static int grow(pp_segtree *t)
{
    pp_segtree bigger = *t;
    bigger.cap = t->cap * 2;
    if (alloc_nodes(&bigger) != PREPACK_OK)
        return PREPACK_ENOMEM;
    memcpy(bigger.node, t->node, t->used * sizeof(uint32_t));
    rebuild(&bigger);
    pp_segtree_destroy(t);
    *t = bigger;
    return PREPACK_OK;
}

void pp_segtree_set(pp_segtree *t, size_t i, uint32_t free_space)
{
    uint32_t *node = t->node;
    uint32_t old = node[i], now = free_space;
    node[i] = now;
    for (int lv = 0; lv + 1 < t->levels; lv++) {
        size_t g = i / FAN;
        uint32_t *parent = node + t->level[lv + 1] + g;
        uint32_t was = *parent, max;
        if (now >= was)
            max = now; /* rose to the maximum */
        else if (old < was)
            return; /* fell, but was not the maximum */
        else        /* the maximum fell: ask its siblings */
            max = group_max(node + t->level[lv] + g * FAN);
        if (max == was)
            return; /* ancestors already agree */
        *parent = max;
        old = was;
        now = max;
        i = g;
    }
    t->root = group_max(node + t->level[t->levels - 1]);
}

uint32_t pp_segtree_get(const pp_segtree *t, size_t i)
{
    return t->node[i];
}

int pp_segtree_push(pp_segtree *t, uint32_t free_space)
{
    if (t->used == t->cap && grow(t) != PREPACK_OK)
        return PREPACK_ENOMEM;
    pp_segtree_set(t, t->used++, free_space);
    return PREPACK_OK;
}

size_t pp_segtree_first_fit(const pp_segtree *t, uint32_t need)
{
    if (t->root < need)
        return SIZE_MAX;
    size_t e = 0; /* entry within the current level */
    for (int lv = t->levels - 1; lv >= 0; lv--)
        e = e * FAN + first_at_least(t->node + t->level[lv] + e * FAN, need);
    return e;
}
