/* A zstd file of several frames decompressed frame by frame on worker
 * threads, handed out in file order (source.c's threaded mode). A frame
 * goes to a worker when its header states its content size (at most
 * PP_FRAME_MAX_CONTENT) and its blocks lie inside the file; at the first
 * frame that does not, or that a worker cannot decompress, the frames
 * stop and say where: the caller streams the rest of the file from there
 * on its own thread, so every error is found, and named, by the one
 * streaming decoder whatever the thread count. */
#ifndef PP_INGEST_ZSTD_FRAMES_H
#define PP_INGEST_ZSTD_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

#define PP_FRAME_MAX_CONTENT ((size_t)32 << 20)

typedef struct pp_frames pp_frames;

/* Frames of the file open as fd (size bytes) from byte `at`. */
int pp_frames_create(pp_frames **out, int fd, uint64_t size, uint64_t at,
                     int threads, const prepack_allocator *a);
void pp_frames_free(pp_frames *f);
/* Up to cap decompressed bytes. *got == 0 when the frames stopped: the
 * caller streams from *resume_at (the file's size at a clean end). Only
 * allocation fails (PREPACK_ENOMEM). */
int pp_frames_read(pp_frames *f, void *buf, size_t cap, size_t *got,
                   uint64_t *resume_at);
/* Compressed bytes behind what was handed out: for progress. */
uint64_t pp_frames_done(const pp_frames *f);

#endif
