/* The first-fit index: a max segment tree over rows' free space.
 *
 * First fit must find the lowest-numbered row with free >= need without
 * scanning rows (an O(N x rows) scan is what makes some Python packers take
 * hours). The tree answers in one root-to-leaf descent, O(log rows), and an
 * update climbs only while the maximum changes. Leaves past `used` hold 0,
 * which no item (length >= 1) fits. The tree doubles when full. */
#include <string.h>

#include "internal.h"

static size_t pow2_at_least(size_t n)
{
    size_t p = 64;
    while (p < n)
        p <<= 1;
    return p;
}

int pp_segtree_init(pp_segtree *t, size_t expected_rows,
                    const prepack_allocator *a)
{
    t->cap = pow2_at_least(expected_rows);
    t->used = 0;
    t->alloc = a;
    t->node = pp_calloc(a, 2 * t->cap, sizeof *t->node);
    return t->node ? PREPACK_OK : PREPACK_ENOMEM;
}

void pp_segtree_destroy(pp_segtree *t)
{
    pp_free(t->alloc, t->node);
    t->node = NULL;
}

static uint32_t max_u32(uint32_t a, uint32_t b)
{
    return a > b ? a : b;
}

/* Rebuilds a tree with twice the leaves: O(cap), so O(1) amortised. */
static int grow(pp_segtree *t)
{
    size_t cap = t->cap * 2;
    uint32_t *node = pp_calloc(t->alloc, 2 * cap, sizeof *node);
    if (!node)
        return PREPACK_ENOMEM;
    memcpy(node + cap, t->node + t->cap, t->used * sizeof *node);
    for (size_t i = cap - 1; i >= 1; i--)
        node[i] = max_u32(node[2 * i], node[2 * i + 1]);
    pp_free(t->alloc, t->node);
    t->node = node;
    t->cap = cap;
    return PREPACK_OK;
}

void pp_segtree_set(pp_segtree *t, size_t i, uint32_t free_space)
{
    uint32_t *node = t->node;
    size_t j = i + t->cap;
    node[j] = free_space;
    for (j >>= 1; j >= 1; j >>= 1) {
        uint32_t m = max_u32(node[2 * j], node[2 * j + 1]);
        if (node[j] == m)
            break; /* ancestors already agree */
        node[j] = m;
    }
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
    const uint32_t *node = t->node;
    if (node[1] < need)
        return SIZE_MAX;
    size_t i = 1;
    /* Branch-free descent: go right exactly when the left subtree's
     * maximum is too small. */
    while (i < t->cap)
        i = 2 * i + (node[2 * i] < need);
    return i - t->cap;
}
