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
int pp_store_add_file(prepack_store *s, const char *path, int fd,
                      unsigned width, int is_signed, uint64_t size,
                      size_t *index, prepack_diag *diag);
int pp_store_add_ref(prepack_store *s, size_t src, uint64_t offset,
                     uint64_t len, prepack_diag *diag);
void pp_store_source_max_id(prepack_store *s, size_t src, uint32_t max_id);
/* Records the index file that located source src's sequences (a Megatron
 * .idx): a plan-only set records its identity too. */
int pp_store_source_index(prepack_store *s, size_t src, const char *path,
                          prepack_diag *diag);
/* The sequences that join the one before them (prepack_store_join_
 * sequences), rising. */
const uint64_t *pp_store_joins(const prepack_store *s, size_t *n);
/* The inputs (prepack_store_input's, first_sequence rising), *n of them. */
const prepack_input_info *pp_store_inputs(const prepack_store *s, size_t *n);
/* The allocator a store was made with (NULL = libc). */
const prepack_allocator *pp_store_allocator(const prepack_store *s);

/* ---- for a job's scan tasks (src/steps): where each sequence's tokens are -- */

/* A source of a finished store: source 0 holds the tokens parsed from text
 * (path NULL; its loss mask beside it, one byte a token, when any input
 * had one); the others are input files referenced in place. */
typedef struct pp_store_source {
    const char *path;
    unsigned width;
    int is_signed;
    uint64_t size;
    uint32_t max_id;
    const unsigned char *data; /* mapped, size bytes (NULL when empty) */
    const uint8_t *mask;       /* source 0: size / width bytes, or NULL */
    const char *index;         /* the index file that locates its sequences
                                  (a Megatron .idx), or NULL */
    int fd;                    /* the file as ingest read it (-1: none) */
} pp_store_source;

size_t pp_store_source_count(const prepack_store *s);
void pp_store_source_get(const prepack_store *s, size_t i,
                         pp_store_source *out);
/* Sequence i's source and byte offset in it. */
void pp_store_location(const prepack_store *s, size_t i, uint32_t *src,
                       uint64_t *offset);
/* prepack_store_create for a scan task: its token files (tokens parsed
 * from text, their loss mask) are made as PREFIX{tokens,mask}-<random>
 * relative to dirfd (borrowed; the job directory: created O_EXCL |
 * O_NOFOLLOW, nothing made by path) and keep their names, so the task
 * renames them into place instead of copying. The store removes them when
 * freed unless taken. */
int pp_store_create_kept(prepack_store **out, const prepack_store_options *o,
                         const char *prefix, int dirfd, prepack_diag *diag);
/* After finish: the kept files' names, relative to the dirfd given
 * (mask: "" without one); the store no longer removes them. */
void pp_store_take_files(prepack_store *s, char *tokens, char *mask,
                         size_t cap);
/* The largest id stored (what decides an AUTO dtype). */
uint32_t pp_store_max_id(const prepack_store *s);

/* ---- for the row builder ------------------------------------------------- */

/* Copies tokens [first, first + n) of sequence i as out_width-byte
 * (2 or 4) host-order integers. */
void pp_store_copy_range(const prepack_store *s, size_t i, uint32_t first,
                         uint32_t n, unsigned out_width, void *out);
/* n stored tokens of w bytes (little-endian, signed or not, checked at
 * ingest) at p as out_width-byte host integers. */
void pp_tokens_convert(const unsigned char *p, unsigned w, int is_signed,
                       uint32_t n, unsigned out_width, void *out);

#endif
