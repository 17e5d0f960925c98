/* manifest.json, the shard set's table of contents (docs/FORMAT.md):
 * written by the writer (manifest_write.c), read by the reader
 * (manifest_read.cpp). */
#ifndef PP_SHARDS_MANIFEST_H
#define PP_SHARDS_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "prepack.h"
#include "shards/shard_format.h"

/* One shard as the manifest lists it. */
typedef struct pp_shard_info {
    char file[PP_SHARD_NAME_MAX];
    uint64_t rows, tokens, bytes, xxh64;
} pp_shard_info;

/* Writes manifest.json's content: a fixed shape, keys in a fixed order,
 * so the same set gives the same bytes. */
void pp_manifest_write(FILE *f, uint32_t max_seq_len, const char *dtype,
                       uint32_t rows_per_frame, int level,
                       const pp_shard_info *shards, size_t nshards,
                       const prepack_manifest_info *info);

/* What a reader needs of a manifest. */
typedef struct pp_manifest {
    const prepack_allocator *alloc; /* what shards was allocated with */
    uint32_t max_seq_len;
    prepack_dtype dtype;
    uint32_t rows_per_frame;
    pp_shard_info *shards; /* through alloc */
    size_t nshards;
} pp_manifest;

/* Parses and checks a manifest; errors name `path`. */
int pp_manifest_read(const char *path, const prepack_allocator *a,
                     pp_manifest *out, prepack_diag *diag);
void pp_manifest_free(pp_manifest *m);

#endif
