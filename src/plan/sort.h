/* Longest first, through counts per length (sort.c). */
#ifndef PP_PLAN_SORT_H
#define PP_PLAN_SORT_H

#include <stdint.h>

#include "plan/items.h"

/* Items sort by length descending, ties by index ascending (the FFD/BFD
 * order). count_of must hold L + 1 entries. */

/* count_of[v] = how many items have length v. O(items + L). */
void pp_count_lengths(const pp_items *it, uint32_t *count_of);
/* Turns those counts, in place, into the position of each length's first
 * item in longest-first order; then `count_of[len(i)]++` visited in index
 * order yields each item's position. O(L). */
void pp_first_positions_desc(uint32_t *count_of, uint32_t max_len);

#endif
