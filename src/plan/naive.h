/* Naive padded batching: the baseline packing is measured against. The
 * report's figures and its picture's fill histogram both come from here,
 * so they describe the same batches. */
#ifndef PP_PLAN_NAIVE_H
#define PP_PLAN_NAIVE_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

/* Called once per batch with the lengths of its items (count of them,
 * count <= batch_size) and the longest, which the batch is padded to. */
typedef void (*pp_naive_visit)(void *opaque, const uint32_t *lengths,
                               size_t count, uint32_t longest);

/* Batches the items that n sequences of these lengths become under the
 * overlong policy at capacity max_len (split chunks in place of their
 * sequence, dropped and empty ones left out), batch_size at a time in
 * input order, and visits each batch. PREPACK_ENOMEM when the batch
 * buffer cannot be had (min(batch_size, max_items) lengths). */
/* skip (NULL = none): sequences left out whatever their length (the
 * members of a group the DROP policy left out, pp_plan_skipped). */
int pp_naive_batches(const uint32_t *lengths, size_t n, uint32_t max_len,
                     prepack_overlong policy, uint32_t batch_size,
                     uint64_t max_items, const uint8_t *skip,
                     pp_naive_visit visit, void *opaque);

#endif
