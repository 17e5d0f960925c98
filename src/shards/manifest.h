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
#include "shards/sources.h"

/* One shard as the manifest lists it. */
typedef struct pp_shard_info {
    char file[PP_SHARD_NAME_MAX];
    uint64_t rows, tokens, bytes, xxh64;
} pp_shard_info;

/* Everything manifest.json says. A job in steps (src/steps) gathers it
 * from its tasks' files; the writer from its own state and the caller's
 * prepack_manifest_info. */
typedef struct pp_manifest_fields {
    uint32_t max_seq_len;
    const char *dtype;
    uint32_t rows_per_frame;
    int level;
    const pp_shard_info *shards;
    size_t nshards;
    const prepack_plan_options *plan; /* NULL: the defaults */
    const prepack_input_info *inputs;
    size_t ninputs;
    const prepack_report *report; /* NULL: "stats": null */
    int references;               /* a plan-only set (version 2) */
    uint32_t version;             /* pp_set_version's (shard_format.h) */
    const pp_set_source *sources; /* the files its rows reference */
    size_t nsources;
} pp_manifest_fields;

/* Writes manifest.json's content: a fixed shape, keys in a fixed order,
 * so the same set gives the same bytes. */
void pp_manifest_write(FILE *f, const pp_manifest_fields *m);
/* Writes it to dir/manifest.json under a temporary name, fsync, rename,
 * fsync of dir: the last step of a set. */
int pp_manifest_save(const char *dir, const pp_manifest_fields *m,
                     prepack_diag *diag);

/* The figures of "stats" that the rows can prove or disprove. */
typedef struct pp_manifest_stats {
    uint64_t sequences, items, max_seqs_in_row;
} pp_manifest_stats;

/* What a reader needs of a manifest, and what verify checks the rows
 * against. */
typedef struct pp_manifest {
    const prepack_allocator *alloc; /* what shards was allocated with */
    uint32_t max_seq_len;
    prepack_dtype dtype;
    uint32_t rows_per_frame;
    pp_shard_info *shards; /* through alloc */
    size_t nshards;
    uint64_t rows, tokens; /* the totals, equal to the shards' sums */
    prepack_overlong overlong;
    uint32_t max_seqs_per_row; /* 0 = unlimited */
    uint32_t pad_multiple;     /* 1 = none */
    int has_stats;             /* "stats" is an object, not null */
    pp_manifest_stats stats;
    int has_inputs;              /* "inputs" lists at least one input */
    uint64_t input_sequences;    /* their sum */
    int references;              /* version 2, "storage": "references" */
    uint32_t version;            /* 1 to 4 (shard_format.h says what each holds) */
    pp_set_source *sources;      /* through alloc */
    size_t nsources;
} pp_manifest;

/* Parses a manifest and checks it against itself before anything is
 * sized from it (docs/FORMAT.md, "Checking a set"): shard names in
 * order, each shard's rows and tokens within what its bytes and L allow,
 * the totals, and the packing report's derived figures. Errors name
 * `path`. */
int pp_manifest_read(const char *path, const prepack_allocator *a,
                     pp_manifest *out, prepack_diag *diag);
void pp_manifest_free(pp_manifest *m);

#endif
