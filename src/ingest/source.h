/* A byte source: a file read front to back, plain, zstd or gzip (told by
 * magic bytes, not by name). The JSONL reader's input. */
#ifndef PP_INGEST_SOURCE_H
#define PP_INGEST_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

typedef struct pp_source pp_source;

/* A zstd stream's first bytes: a frame's magic, or a skippable frame's
 * (0x184D2A50..5F, which a stream may start with). */
int pp_is_zstd(const unsigned char *b, size_t n);

int pp_source_open(pp_source **out, const char *path,
                   const prepack_allocator *a, prepack_diag *diag);
/* Reads up to cap bytes; *got == 0 at the end. Corrupt or cut-short
 * streams are PREPACK_EFORMAT naming the file. */
int pp_source_read(pp_source *s, void *buf, size_t cap, size_t *got,
                   prepack_diag *diag);
void pp_source_close(pp_source *s);
/* Call right after open: a zstd file's frames are decompressed on
 * `threads` workers (zstd_frames.h) while they allow it, the rest
 * streamed. Other files, and threads <= 1, read as before. */
int pp_source_threads(pp_source *s, int threads, prepack_diag *diag);
/* Reads only bytes [begin, end) of a plain (uncompressed) file: a part of
 * a JSONL file for one scan task. Call right after open; a compressed
 * file is PREPACK_EINVAL. Size and progress then count the range. */
int pp_source_limit(pp_source *s, uint64_t begin, uint64_t end,
                    prepack_diag *diag);
int pp_source_is_plain(const pp_source *s);
/* File bytes consumed so far, and the file's size: for progress. */
uint64_t pp_source_done(const pp_source *s);
uint64_t pp_source_size(const pp_source *s);

#endif
