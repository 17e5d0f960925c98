/* Frames of a zstd file on worker threads. The reading thread finds each
 * frame's extent from its header and its block headers (3 bytes each,
 * read with pread: a few thousand reads a GB), without decompressing;
 * a worker reads the frame and decompresses it into a buffer of the
 * content size the header states (in one call when the frame's window
 * holds its content, else through a window-sized buffer as the stream
 * does); the reading thread hands the results out in file order.
 * zstd's own multi-threaded compression (zstd -T) writes one frame, which
 * stays on the streaming path; frames come from pzstd, the seekable
 * format, or files compressed piece by piece and concatenated. */
#define _POSIX_C_SOURCE 200809L
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader */
#include <string.h>

#include <zstd.h>

#include "common/alloc.h"
#include "common/bytes.h"
#include "common/io.h"
#include "common/tasks.h"
#include "ingest/zstd_frames.h"

typedef struct frame {
    uint64_t at;         /* the frame's first byte in the file */
    size_t csize, usize; /* compressed, and content, bytes */
    int one_call;        /* its window holds its content */
    unsigned char *src, *dst;
    size_t src_cap, dst_cap;
    int ok;
    int out_of_memory;
} frame;

struct pp_frames {
    const prepack_allocator *alloc;
    int fd;
    uint64_t size;
    uint64_t next_at; /* where the next frame to plan starts */
    int planned_all;  /* no more frames for workers: stream from next_at */
    pp_tasks *tasks;
    frame *frames; /* pp_tasks_capacity of them, in turn */
    size_t submitted;
    ZSTD_DCtx **dctx; /* one per worker */
    frame *cur;       /* the frame being handed out */
    size_t cur_pos;
    uint64_t done; /* compressed bytes of frames handed out whole */
};

static int grow_to(const prepack_allocator *a, unsigned char **p,
                   size_t *cap, size_t need)
{
    if (need <= *cap)
        return 1;
    pp_free(a, *p);
    *p = pp_alloc(a, need ? need : 1, 1);
    *cap = *p ? need : 0;
    return *p != NULL;
}

/* A frame whose window is smaller than its content, the way the
 * streaming decoder takes it when its output has no room for the whole
 * content: through a window-sized buffer, so that a match reaching back
 * past what that buffer keeps fails here as it fails there (one call
 * into the whole content would decode it). No room for output in the
 * first call chooses that way; a decoder made for the frame keeps no
 * larger buffer from another. The stream accepts all this accepts, the
 * same bytes; what this refuses the stream decides. */
static int decompress_windowed(frame *fr)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d) {
        fr->out_of_memory = 1;
        return 0;
    }
    ZSTD_inBuffer in = {fr->src, fr->csize, 0};
    ZSTD_outBuffer none = {fr->dst, 0, 0}, out = {fr->dst, fr->usize, 0};
    size_t r = ZSTD_decompressStream(d, &none, &in);
    for (;;) {
        size_t in_was = in.pos, out_was = out.pos;
        if (ZSTD_isError(r) || r == 0)
            break;
        r = ZSTD_decompressStream(d, &out, &in);
        if (in.pos == in_was && out.pos == out_was && r != 0)
            break; /* a frame that asks for more than it holds */
    }
    ZSTD_freeDCtx(d);
    return r == 0 && in.pos == in.size && out.pos == fr->usize;
}

static void decompress_frame(void *ctx, void *task, size_t worker)
{
    pp_frames *f = ctx;
    frame *fr = task;
    fr->out_of_memory =
        !grow_to(f->alloc, &fr->src, &fr->src_cap, fr->csize) ||
        !grow_to(f->alloc, &fr->dst, &fr->dst_cap, fr->usize);
    fr->ok = !fr->out_of_memory &&
             pp_read_at(f->fd, fr->src, fr->csize, fr->at) == 0;
    if (fr->ok && fr->one_call) {
        size_t r = ZSTD_decompressDCtx(f->dctx[worker], fr->dst, fr->usize,
                                       fr->src, fr->csize);
        fr->ok = !ZSTD_isError(r) && r == fr->usize;
    } else if (fr->ok) {
        fr->ok = decompress_windowed(fr);
    }
}

/* The extent of the compressed blocks from `pos` to the last one (and
 * its checksum): 0 when a block header cannot be read or is reserved. */
static uint64_t blocks_end(const pp_frames *f, uint64_t pos, int checksum)
{
    for (;;) {
        unsigned char h[3];
        if (pos + 3 > f->size || pp_read_at(f->fd, h, 3, pos) != 0)
            return 0;
        uint32_t bh = (uint32_t)pp_load_le(h, 3);
        unsigned type = (bh >> 1) & 3;
        uint64_t bytes = type == 1 ? 1 : bh >> 3; /* RLE: one byte */
        if (type == 3)
            return 0;
        pos += 3 + bytes;
        if (bh & 1)
            return checksum ? pos + 4 : pos;
    }
}

/* Plans the frame at next_at into fr: 1, or 0 when the frames stop
 * there (skippable frames are stepped over). */
static int plan_frame(pp_frames *f, frame *fr)
{
    for (;;) {
        unsigned char h[ZSTD_FRAMEHEADERSIZE_MAX];
        uint64_t left = f->size - f->next_at;
        size_t n = left < sizeof h ? (size_t)left : sizeof h;
        if (n < 8 || pp_read_at(f->fd, h, n, f->next_at) != 0)
            return 0;
        ZSTD_frameHeader zh;
        if (ZSTD_getFrameHeader(&zh, h, n) != 0)
            return 0;
        if (zh.frameType == ZSTD_skippableFrame) {
            uint64_t end = f->next_at + 8 + pp_load_le(h + 4, 4);
            if (end > f->size)
                return 0;
            f->next_at = end;
            continue;
        }
        /* A window the streaming decoder would refuse (it keeps the
         * window; one call into a whole buffer does not) stays with it,
         * so both paths accept the same frames. */
        if (zh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN ||
            zh.frameContentSize > PP_FRAME_MAX_CONTENT ||
            zh.windowSize > (1ull << ZSTD_WINDOWLOG_LIMIT_DEFAULT))
            return 0;
        uint64_t end = blocks_end(f, f->next_at + zh.headerSize,
                                  zh.checksumFlag != 0);
        if (end == 0 || end > f->size)
            return 0;
        fr->at = f->next_at;
        fr->csize = (size_t)(end - f->next_at);
        fr->usize = (size_t)zh.frameContentSize;
        /* a window that holds the whole content: the streaming decoder's
         * buffer holds it too, and one call accepts just what it does */
        fr->one_call = zh.windowSize >= zh.frameContentSize;
        f->next_at = end;
        return 1;
    }
}

/* Queues frames until the pool is full or the frames stop. */
static void submit_frames(pp_frames *f)
{
    while (!f->planned_all && !pp_tasks_full(f->tasks)) {
        frame *fr =
            &f->frames[f->submitted % pp_tasks_capacity(f->tasks)];
        if (f->next_at >= f->size || !plan_frame(f, fr)) {
            f->planned_all = 1;
            break;
        }
        f->submitted++;
        pp_tasks_submit(f->tasks, fr);
    }
}

int pp_frames_create(pp_frames **out, int fd, uint64_t size, uint64_t at,
                     int threads, const prepack_allocator *a)
{
    *out = NULL;
    pp_frames *f = pp_calloc(a, 1, sizeof *f);
    if (!f)
        return PREPACK_ENOMEM;
    f->alloc = a;
    f->fd = fd;
    f->size = size;
    f->next_at = f->done = at;
    int ok = pp_tasks_create(&f->tasks, threads, decompress_frame, f, a) ==
             PREPACK_OK;
    size_t workers = ok ? pp_tasks_workers(f->tasks) : 0;
    f->frames = ok ? pp_calloc(a, pp_tasks_capacity(f->tasks),
                               sizeof *f->frames)
                   : NULL;
    f->dctx = ok ? pp_calloc(a, workers, sizeof *f->dctx) : NULL;
    ok = f->frames && f->dctx;
    for (size_t i = 0; ok && i < workers; i++)
        ok = (f->dctx[i] = ZSTD_createDCtx()) != NULL;
    if (!ok) {
        pp_frames_free(f);
        return PREPACK_ENOMEM;
    }
    *out = f;
    return PREPACK_OK;
}

void pp_frames_free(pp_frames *f)
{
    if (!f)
        return;
    size_t workers = f->tasks ? pp_tasks_workers(f->tasks) : 0;
    size_t cap = f->tasks ? pp_tasks_capacity(f->tasks) : 0;
    pp_tasks_free(f->tasks); /* waits for frames in flight */
    for (size_t i = 0; f->dctx && i < workers; i++)
        ZSTD_freeDCtx(f->dctx[i]);
    for (size_t i = 0; f->frames && i < cap; i++) {
        pp_free(f->alloc, f->frames[i].src);
        pp_free(f->alloc, f->frames[i].dst);
    }
    pp_free(f->alloc, f->frames);
    pp_free(f->alloc, f->dctx);
    pp_free(f->alloc, f);
}

int pp_frames_read(pp_frames *f, void *buf, size_t cap, size_t *got,
                   uint64_t *resume_at)
{
    *got = 0;
    while (!f->cur || f->cur_pos == f->cur->usize) {
        if (f->cur)
            f->done = f->cur->at + f->cur->csize;
        f->cur = NULL;
        submit_frames(f);
        frame *fr = pp_tasks_take(f->tasks, 1);
        if (!fr || !fr->ok) { /* the end of the frames, or a bad one */
            *resume_at = fr ? fr->at : f->next_at;
            return fr && fr->out_of_memory ? PREPACK_ENOMEM : PREPACK_OK;
        }
        f->cur = fr;
        f->cur_pos = 0;
    }
    size_t n = f->cur->usize - f->cur_pos < cap ? f->cur->usize - f->cur_pos
                                                 : cap;
    memcpy(buf, f->cur->dst + f->cur_pos, n);
    f->cur_pos += n;
    *got = n;
    return PREPACK_OK;
}

uint64_t pp_frames_done(const pp_frames *f)
{
    return f->done;
}
