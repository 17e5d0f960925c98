/* Batches built from rows handed to them, one at a time: the reader reads
 * rows and gives them here (this file never reads). Flat (varlen) or
 * padded [B, L], sequences padded for context parallelism on request,
 * with every derived field a training step feeds. */
#ifndef PP_ROWS_BATCH_H
#define PP_ROWS_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

/* Buffers kept between batches (growing, never shrinking), owned by the
 * reader and freed with pp_batch_buffers_free. */
typedef struct pp_batch_buffers pp_batch_buffers;
void pp_batch_buffers_free(const prepack_allocator *a, pp_batch_buffers *b);

/* One batch of `rows` rows of capacity max_seq_len being built. */
typedef struct pp_batcher {
    pp_batch_buffers *b;
    const prepack_allocator *alloc;
    prepack_batch_options o;
    size_t max_seq_len, rows, added, tokens, seqs;
    size_t real_tokens; /* pad_multiple: the tokens before the padding */
    uint64_t loss_tokens; /* labels not -100 so far */
    uint32_t longest;
} pp_batcher;

/* Starts a batch in *bufs (created on first use). */
int pp_batch_begin(pp_batcher *bt, pp_batch_buffers **bufs,
                   const prepack_allocator *a, size_t rows,
                   uint32_t max_seq_len, const prepack_batch_options *o,
                   prepack_diag *diag);
/* Starts a batch in the caller's arrays (dst): *ext (created on first
 * use, freed with pp_batch_buffers_free) only points at them, and a row
 * that does not fit them is PREPACK_ERANGE. */
int pp_batch_begin_into(pp_batcher *bt, pp_batch_buffers **ext,
                        const prepack_allocator *a,
                        const prepack_batch_arrays *dst, size_t rows,
                        uint32_t max_seq_len, const prepack_batch_options *o,
                        prepack_diag *diag);
/* Appends the next row (at most max_seq_len tokens; the padded form with
 * pad_multiple: PREPACK_ERANGE when padding takes it past). */
int pp_batch_add_row(pp_batcher *bt, const prepack_row *row,
                     prepack_diag *diag);
/* The batch, viewing the buffers: valid until the next batch. */
void pp_batch_finish(const pp_batcher *bt, prepack_batch *out);

#endif
