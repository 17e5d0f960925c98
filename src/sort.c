/* Items by length, longest first: a counting sort, since every length is
 * in 1..L. Stable, so equal lengths keep input order (the FFD/BFD tie rule)
 * without comparing indices. */
#include "internal.h"

void pp_sort_by_length_desc(const pp_items *it, uint32_t *order,
                            uint32_t *count_of)
{
    uint32_t max_len = it->max_len;
    for (uint32_t v = 0; v <= max_len; v++)
        count_of[v] = 0;
    for (size_t i = 0; i < it->count; i++)
        count_of[pp_item_len(it, i)]++;

    /* The first position of each length, longest first, kept in a cursor
     * array that reuses nothing of count_of: callers want the counts. */
    uint32_t next = 0;
    for (uint32_t v = max_len; v >= 1; v--) {
        uint32_t c = count_of[v];
        count_of[v] = next; /* temporarily the cursor */
        next += c;
    }
    for (size_t i = 0; i < it->count; i++)
        order[count_of[pp_item_len(it, i)]++] = (uint32_t)i;

    /* Turn cursors (now each length's end) back into counts. */
    uint32_t start = 0;
    for (uint32_t v = max_len; v >= 1; v--) {
        uint32_t end = count_of[v];
        count_of[v] = end - start;
        start = end;
    }
}
