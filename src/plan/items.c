/* From sequence lengths to the items the planner places: the overlong
 * policy, zero-length sequences, and the counts the report shows. */
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"
#include "plan/items.h"

/* First pass: count everything, fail on the first overlong sequence when
 * the policy says so. Nothing is allocated. */
static int count_items(const uint32_t *lengths, size_t n, uint32_t max_len,
                       prepack_overlong policy, prepack_plan_stats *st,
                       prepack_diag *diag)
{
    uint64_t items = 0, tokens = 0;
    uint32_t last;
    for (size_t i = 0; i < n; i++) {
        uint32_t l = lengths[i];
        st->input_tokens += l;
        if (l == 0) {
            st->zero_length++;
            continue;
        }
        if (l <= max_len) {
            items++;
            tokens += l;
            continue;
        }
        st->overlong++;
        switch (policy) {
        case PREPACK_OVERLONG_ERROR:
            return pp_fail(diag, PREPACK_EOVERLONG, i,
                           "sequence %zu has %u tokens, more than "
                           "max_seq_len %u",
                           i, l, max_len);
        case PREPACK_OVERLONG_TRUNCATE:
            st->truncated_tokens += l - max_len;
            break;
        case PREPACK_OVERLONG_SPLIT:
            st->split_chunks += pp_item_shape(l, max_len, policy, &last);
            break;
        case PREPACK_OVERLONG_DROP:
            st->dropped_sequences++;
            st->dropped_tokens += l;
            break;
        }
        uint64_t count = pp_item_shape(l, max_len, policy, &last);
        items += count;
        tokens += count ? (count - 1) * max_len + last : 0;
    }
    if (items > PREPACK_MAX_ITEMS)
        return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "%llu items to place, more than the %u one plan "
                       "holds; plan in partitions",
                       (unsigned long long)items, PREPACK_MAX_ITEMS);
    st->sequences = n;
    st->items = items;
    st->tokens = tokens;
    return PREPACK_OK;
}

/* Second pass, only when items are not the identity: record each item's
 * source, and for split sequences each chunk's offset and length. */
static void fill_items(pp_items *it, size_t n, prepack_overlong policy)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t l = it->lengths[i];
        uint32_t last;
        uint64_t count = pp_item_shape(l, it->max_len, policy, &last);
        for (uint64_t c = 0; c < count; c++, k++) {
            it->src[k] = (uint32_t)i;
            if (it->len) { /* split: record each chunk */
                it->off[k] = (uint32_t)(c * it->max_len);
                it->len[k] = c + 1 < count ? it->max_len : last;
            }
        }
    }
}

int pp_items_build(pp_items *it, const uint32_t *lengths, size_t n,
                   uint32_t max_len, prepack_overlong policy,
                   prepack_plan_stats *stats, const prepack_allocator *a,
                   prepack_diag *diag)
{
    memset(it, 0, sizeof *it);
    it->lengths = lengths;
    it->max_len = max_len;
    it->alloc = a;
    int rc = count_items(lengths, n, max_len, policy, stats, diag);
    if (rc != PREPACK_OK)
        return rc;
    it->count = (size_t)stats->items;
    int compacted =
        stats->zero_length || stats->dropped_sequences || stats->split_chunks;
    if (!compacted)
        return PREPACK_OK;
    it->src = pp_alloc(a, it->count, sizeof *it->src);
    if (stats->split_chunks) {
        it->len = pp_alloc(a, it->count, sizeof *it->len);
        it->off = pp_alloc(a, it->count, sizeof *it->off);
    }
    if (!it->src || (stats->split_chunks && (!it->len || !it->off))) {
        pp_items_destroy(it);
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory for %zu items", it->count);
    }
    fill_items(it, n, policy);
    return PREPACK_OK;
}

void pp_items_destroy(pp_items *it)
{
    pp_free(it->alloc, it->src);
    pp_free(it->alloc, it->len);
    pp_free(it->alloc, it->off);
    it->src = it->len = it->off = NULL;
}
