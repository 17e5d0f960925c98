/* A byte source: a file read front to back, plain, zstd or gzip (told by
 * magic bytes, not by name). The JSONL reader's input. */
#ifndef PP_INGEST_SOURCE_H
#define PP_INGEST_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

typedef struct pp_source pp_source;

int pp_source_open(pp_source **out, const char *path,
                   const prepack_allocator *a, prepack_diag *diag);
/* Reads up to cap bytes; *got == 0 at the end. Corrupt or cut-short
 * streams are PREPACK_EFORMAT naming the file. */
int pp_source_read(pp_source *s, void *buf, size_t cap, size_t *got,
                   prepack_diag *diag);
void pp_source_close(pp_source *s);
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
