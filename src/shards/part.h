/* A part of a shard set: the shards one write task of a job in steps
 * (src/steps) writes, named from their number in the whole set, with no
 * manifest; the job's finalize step writes that from every part. */
#ifndef PP_SHARDS_PART_H
#define PP_SHARDS_PART_H

#include "prepack.h"
#include "shards/manifest.h"

/* A writer for shards first_shard, first_shard + 1, ... in dir, which
 * exists and may hold other files (nothing there is checked or removed
 * but the files it writes). shard_rows only: where shard_bytes ends a
 * shard depends on every frame before it. Freed unfinished, it removes
 * the shards it wrote, as prepack_writer_free does. */
int pp_writer_create_part(prepack_writer **out, const char *dir,
                          uint32_t max_seq_len, prepack_dtype token_dtype,
                          const prepack_writer_options *o, uint64_t first_shard,
                          prepack_diag *diag);
/* A set's rows code their ids with its id table (format version 4),
 * made from the tokens of the set's first frame: its first
 * min(rows_per_frame, shard_rows) rows. A writer that is given those rows
 * first makes it itself; a part's writer is shown them instead: every
 * one's ids through pp_writer_sample, then pp_writer_sampled, before its
 * first row. A references writer ignores both. */
void pp_writer_sample(prepack_writer *w, const void *ids, size_t n);
int pp_writer_sampled(prepack_writer *w, prepack_diag *diag);
/* Closes the last shard (no manifest); the shards stay. */
int pp_writer_finish_part(prepack_writer *w, prepack_diag *diag);
/* The shards written so far, as the manifest lists them. */
const pp_shard_info *pp_writer_shards(const prepack_writer *w, size_t *n);
/* Rows in each frame (the options' value, lowered to fit 4 GiB). */
uint32_t pp_writer_rows_per_frame(const prepack_writer *w);
/* What a writer makes of rows_per_frame `want` (0 = the default) for rows
 * of L tokens of this dtype. */
uint32_t pp_writer_frame_rows(uint32_t want, uint32_t max_seq_len,
                              prepack_dtype dtype);

#endif
