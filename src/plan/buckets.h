/* The free-space index both decreasing algorithms place through
 * (buckets.c). */
#ifndef PP_PLAN_BUCKETS_H
#define PP_PLAN_BUCKETS_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

/* Rows grouped by exact free space 1..L, each bucket a pairing heap that
 * yields its lowest-numbered row. Best fit: a hierarchical bitset finds the
 * smallest non-empty bucket >= need in O(log64 L). First fit: a min tree
 * over the buckets' lowest rows finds the lowest row in any bucket >= need
 * in O(log L). Rows with free space 0 are kept out: they take nothing. */
typedef struct pp_buckets {
    uint32_t *head;    /* [L+1] root row of each bucket's heap, or NIL */
    uint32_t *child;   /* per row: first child in the heap */
    uint32_t *sibling; /* per row: next sibling in the heap */
    size_t rows_cap;
    uint64_t *bits[6]; /* bits[0] over buckets, bits[k+1] over bits[k] */
    size_t words[6];
    int levels;
    uint32_t max_free;
    uint64_t *lowest;  /* first fit only: min tree over (head[f], f), or
                            NULL */
    size_t lowest_cap; /* its leaves, a power of two > max_free */
    const prepack_allocator *alloc;
} pp_buckets;

#define PP_NIL UINT32_MAX

/* first_fit: also keep the tree that pp_buckets_first needs. */
int pp_buckets_init(pp_buckets *b, uint32_t max_free, size_t expected_rows,
                    int first_fit, const prepack_allocator *a);
void pp_buckets_destroy(pp_buckets *b);
/* Puts row r (new or just removed) into bucket free_space (> 0). */
int pp_buckets_insert(pp_buckets *b, uint32_t r, uint32_t free_space);
/* The smallest non-empty bucket >= need, or 0 when none. */
uint32_t pp_buckets_best(const pp_buckets *b, uint32_t need);
/* First fit: the bucket >= need that holds the lowest-numbered row of all
 * buckets >= need, or 0 when none. O(log L). */
uint32_t pp_buckets_first(const pp_buckets *b, uint32_t need);
/* Removes and returns the lowest-numbered row of a non-empty bucket. */
uint32_t pp_buckets_pop(pp_buckets *b, uint32_t free_space);

#endif
