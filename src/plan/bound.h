/* The lower bound on rows (bound.c). */
#ifndef PP_PLAN_BOUND_H
#define PP_PLAN_BOUND_H

#include <stdint.h>

/* The rows no plan can do with fewer than, from the items' count per
 * length (count_of[0..max_len]): the largest of ceil(tokens / L),
 * Martello and Toth's L2 and ceil(items / max_per_row) (bound.c). */
uint64_t pp_lower_bound(const uint32_t *count_of, uint32_t max_len,
                        uint64_t tokens, uint64_t items, uint32_t max_per_row);

#endif
