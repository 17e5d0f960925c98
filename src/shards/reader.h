/* The reader's layout, shared by reader.c (opening, frames, rows,
 * batches) and verify.c (checking a whole set) alone, as SQLite's
 * btreeInt.h is shared by the b-tree's files. */
#ifndef PP_SHARDS_READER_H
#define PP_SHARDS_READER_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <zstd.h>

#include "prepack.h"
#include "rows/batch.h"
#include "shards/manifest.h"
#include "shards/sources.h"

typedef struct frame_entry {
    uint64_t offset;
    uint32_t compressed, decompressed, checksum;
    uint64_t hash; /* version 4: of its compressed bytes, from the index */
    int damaged;   /* version 4: found damaged by a streamed read */
} frame_entry;

typedef struct shard {
    char path[4400];
    uint64_t first_row, rows;
    frame_entry *frames;
    size_t nframes;
    uint64_t index_offset, index_bytes; /* version 4's index frame */
    prepack_diag *damage; /* open_damaged: why it failed its open, or NULL */
} shard;

/* A version 4 frame being read only as far as the rows asked for
 * (reader.c's stream_row): into the reader's dbuf, from its cbuf. */
typedef struct frame_stream {
    size_t shard, frame; /* SIZE_MAX: none */
    ZSTD_outBuffer out;  /* r->dbuf; pos: the bytes decompressed so far */
    size_t in_pos;       /* compressed bytes zstd has taken */
    size_t step;         /* compressed bytes fed a call */
    size_t known;        /* rows whose bytes are all decompressed */
    size_t *ends;        /* ends[0]: row 0's start; ends[k + 1]: row k's end */
    size_t ends_cap;
    int ended;           /* the frame is decompressed and checked whole */
} frame_stream;

struct prepack_reader {
    char dir[4096];
    prepack_allocator alloc_copy;   /* the caller's, when one was given */
    const prepack_allocator *alloc; /* &alloc_copy or NULL (libc) */
    pp_manifest m;
    shard *shards;
    size_t rows;
    unsigned width;
    /* the open shard and the cached frame */
    int fd;
    size_t fd_shard;
    size_t cached_shard, cached_frame;
    unsigned char *cbuf, *dbuf;
    size_t cbuf_cap, dbuf_cap;
    ZSTD_DCtx *dctx;
    msgpack_unpacked unp; /* the cached frame, or the streamed row */
    int unp_live;
    frame_stream stream;
    /* version 4: the id table of shard table_shard (SIZE_MAX: none), read
     * with its index, ids at the token width */
    void *table;
    size_t ntable, table_shard;
    /* aligned copies of the row handed out */
    void *tokens;
    int32_t *cu;
    uint64_t *seq_ids;
    uint8_t *mask;
    uint32_t *starts;
    pp_mapped_source *sources; /* a plan-only set's files, open */
    unsigned char *scratch;    /* L x 8 bytes: one sequence as stored */
    pp_batch_buffers *batch;
    pp_batch_buffers *batch_into; /* points at the caller's arrays */
};

/* PREPACK_ECORRUPT with "path: message". */
int pp_reader_corrupt(prepack_diag *diag, const char *path, const char *fmt,
                      ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Decompresses, checks and parses frame f of shard si into r->unp (kept
 * as the cached frame). */
int pp_reader_load_frame(prepack_reader *r, size_t si, size_t f,
                         prepack_diag *diag);

/* Checks row j of frame f (a msgpack map) and fills *row from it. */
int pp_reader_fill_row(prepack_reader *r, const msgpack_object *map,
                       prepack_row *row, const char *path, size_t f, size_t j,
                       prepack_diag *diag);

#endif
