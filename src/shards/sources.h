/* The input files a plan-only set reads its tokens from (docs/FORMAT.md,
 * version 2): the identity the writer records for each, and the check and
 * mapping the reader makes at open. */
#ifndef PP_SHARDS_SOURCES_H
#define PP_SHARDS_SOURCES_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

/* One referenced file as the manifest's "sources" lists it. */
typedef struct pp_set_source {
    char *path; /* absolute */
    unsigned width;
    int is_signed;
    uint64_t bytes, sample_xxh64;
    char *index; /* the file that located its sequences (Megatron .idx), or
                    NULL; then index_bytes and index_xxh64 (whole file) */
    uint64_t index_bytes, index_xxh64;
} pp_set_source;

/* The store's referenced files (its sources after source 0, in order: the
 * numbers rows use) with their identities, measured now. */
int pp_sources_describe(const prepack_store *s, const prepack_allocator *a,
                        pp_set_source **out, size_t *n, prepack_diag *diag);
void pp_sources_free(const prepack_allocator *a, pp_set_source *s, size_t n);

/* A referenced file checked against its identity and mapped read-only. */
typedef struct pp_mapped_source {
    const unsigned char *data; /* NULL when empty */
    uint64_t size;
    unsigned width;
    int is_signed;
} pp_mapped_source;

/* Opens, checks (size, sampled hash, the index's size and hash) and maps
 * each file; a changed, moved or missing one is an error naming it. */
int pp_sources_map(const pp_set_source *s, size_t n, pp_mapped_source *out,
                   prepack_diag *diag);
void pp_sources_unmap(pp_mapped_source *m, size_t n);

#endif
