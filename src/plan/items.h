/* Items: what the planner places. Used by the planner, the lower bound
 * and naive batching. */
#ifndef PP_PLAN_ITEMS_H
#define PP_PLAN_ITEMS_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

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

#endif
