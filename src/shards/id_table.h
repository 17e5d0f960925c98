/* A set's id table (format version 4, shard_format.h): counted from the
 * tokens of the set's first frame, the most frequent ids ranked first,
 * then used to code every row's ids and written into every shard's
 * index. The writer is its one user; pp_writer_sample (part.h) feeds it
 * for a write task that does not hold the set's first frame. */
#ifndef PP_SHARDS_ID_TABLE_H
#define PP_SHARDS_ID_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

typedef struct pp_id_table pp_id_table;

/* A table to count ids of `width` bytes (2 or 4) into; NULL when out of
 * memory. */
pp_id_table *pp_id_table_create(unsigned width, const prepack_allocator *a);
void pp_id_table_free(pp_id_table *t);
/* Counts n ids (`width`-byte host integers); ids at or past
 * PP_ID_TABLE_ID_LIMIT are never ranked and are not counted. */
void pp_id_table_count(pp_id_table *t, const void *ids, size_t n);
/* Ranks what was counted: by count, most first, ties by the smaller id,
 * at most PP_ID_TABLE_MAX ids. PREPACK_OK or PREPACK_ENOMEM. */
int pp_id_table_make(pp_id_table *t);
int pp_id_table_made(const pp_id_table *t);
/* The n ids' codes at out (room for n * (width + 1) bytes): their bytes. */
size_t pp_id_table_encode(const pp_id_table *t, unsigned char *out,
                          const void *ids, size_t n);
/* The ranked ids as a shard's index stores them (shard_format.h):
 * *n ids of the width's bytes each, little-endian; after
 * pp_id_table_make. */
const unsigned char *pp_id_table_ids(const pp_id_table *t, size_t *n);

#endif
