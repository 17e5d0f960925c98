/* The token store's private side: what the input readers use to add
 * sequences beyond the public prepack_store_add, and what the row builder
 * (src/rows) uses to copy tokens out. */
#ifndef PP_INGEST_STORE_H
#define PP_INGEST_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

/* ---- for the readers ---------------------------------------------------- */

/* Ends the open sequence; keep_empty makes an empty one a sequence of
 * length 0 (formats whose records are sequences: a JSONL line, a Megatron
 * index entry), so ids stay aligned with records. */
int pp_store_end_sequence(prepack_store *s, int keep_empty, prepack_diag *diag);
/* Binary inputs are referenced, not copied: add_file keeps a duplicate of
 * fd as a new source (tokens `width` bytes each, little-endian, signed or
 * not) and add_ref appends a sequence of len tokens at byte `offset` in
 * it. The reader checks ids (non-negative, < 2^32) and reports the largest
 * through source_max_id, which decides the store's dtype. */
int pp_store_add_file(prepack_store *s, int fd, unsigned width, int is_signed,
                      uint64_t size, size_t *index, prepack_diag *diag);
int pp_store_add_ref(prepack_store *s, size_t src, uint64_t offset,
                     uint64_t len, prepack_diag *diag);
void pp_store_source_max_id(prepack_store *s, size_t src, uint32_t max_id);
/* The allocator a store was made with (NULL = libc). */
const prepack_allocator *pp_store_allocator(const prepack_store *s);

/* ---- for the row builder ------------------------------------------------- */

/* Copies tokens [first, first + n) of sequence i as out_width-byte
 * (2 or 4) host-order integers. */
void pp_store_copy_range(const prepack_store *s, size_t i, uint32_t first,
                         uint32_t n, unsigned out_width, void *out);

#endif
