/* Naive padded batching, item by item in input order. */
#include <stdlib.h>

#include "plan/items.h"
#include "plan/naive.h"

int pp_naive_batches(const uint32_t *lengths, size_t n, uint32_t max_len,
                     prepack_overlong policy, uint32_t batch_size,
                     uint64_t max_items, const uint8_t *skip,
                     pp_naive_visit visit, void *opaque)
{
    /* A batch never holds more items than there are; should the lengths
     * make more items than max_items, batches close at it (the report
     * then refuses them as not the plan's). */
    uint64_t most = batch_size < max_items ? batch_size : max_items;
    size_t cap = most ? (size_t)most : 1;
    uint32_t *batch = malloc(cap * sizeof *batch);
    if (!batch)
        return PREPACK_ENOMEM;
    size_t in = 0;
    uint32_t longest = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t last;
        uint64_t items = skip && skip[i]
                             ? 0
                             : pp_item_shape(lengths[i], max_len, policy, &last);
        for (uint64_t c = 0; c < items; c++) {
            uint32_t len = c + 1 < items ? max_len : last;
            longest = len > longest ? len : longest;
            batch[in++] = len;
            if (in == cap) {
                visit(opaque, batch, in, longest);
                in = 0;
                longest = 0;
            }
        }
    }
    if (in)
        visit(opaque, batch, in, longest);
    free(batch);
    return PREPACK_OK;
}
