/* Lengths, longest first, without sorting the items: every length is in
 * 1..L, so counts per length give each item's position in the
 * longest-first order (a counting sort that never materialises the order;
 * the planner walks the counts, the layout recomputes positions). */
#include "plan/sort.h"

void pp_count_lengths(const pp_items *it, uint32_t *count_of)
{
    for (uint32_t v = 0; v <= it->max_len; v++)
        count_of[v] = 0;
    for (size_t i = 0; i < it->count; i++)
        count_of[pp_item_len(it, i)]++;
}

void pp_first_positions_desc(uint32_t *count_of, uint32_t max_len)
{
    uint32_t next = 0;
    for (uint32_t v = max_len; v >= 1; v--) {
        uint32_t c = count_of[v];
        count_of[v] = next;
        next += c;
    }
}
