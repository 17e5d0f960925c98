/* A plain reference planner: the textbook definitions of FFD, BFD and
 * next-fit, O(N x rows), written for obviousness, not speed. The property
 * tests require the library's plans to equal these exactly. */
#ifndef REF_PLAN_H
#define REF_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

typedef struct ref_plan {
    size_t rows;
    size_t items;
    size_t *row_start;   /* [rows + 1] */
    prepack_item *entry; /* [items], row by row, in placement order */
    uint64_t zero_length, overlong, truncated_tokens, split_chunks,
        dropped_sequences, dropped_tokens, tokens;
} ref_plan;

/* Returns PREPACK_OK, or PREPACK_EOVERLONG with *bad = the first overlong
 * sequence under the ERROR policy. */
int ref_plan_build(const uint32_t *lengths, size_t n, uint32_t max_len,
                   prepack_algo algo, prepack_overlong policy,
                   uint32_t max_per_row, ref_plan *out, size_t *bad);
void ref_plan_free(ref_plan *p);

/* The lower bound by its definition (Martello and Toth's L2 over every
 * k in 0..L/2, ceil(tokens / L), ceil(items / K)): O(m x L). */
uint64_t ref_lower_bound(const uint32_t *item_len, size_t m, uint32_t max_len,
                         uint32_t max_per_row);

/* The fewest rows any plan needs (exhaustive search; m <= 12). */
size_t ref_optimum_rows(const uint32_t *item_len, size_t m, uint32_t max_len);

#endif
