/* A byte source over a file: plain, zstd or gzip, told apart by magic
 * bytes, read sequentially in caller-sized pieces. Decompression streams,
 * so memory stays bounded whatever the file's size. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "common/alloc.h"
#include "common/error.h"
#include "ingest/source.h"
#include "ingest/zstd_frames.h"

enum { IN_BUFFER = 1 << 20 };

struct pp_source {
    int fd;
    enum { PLAIN, ZSTD, GZIP } kind;
    const char *path;
    const prepack_allocator *alloc;
    unsigned char *in; /* compressed input buffer */
    size_t in_len, in_pos;
    int in_eof;
    uint64_t in_offset;  /* compressed bytes consumed before `in` */
    uint64_t size;       /* the file's size */
    uint64_t plain_read; /* plain files: bytes handed out */
    uint64_t plain_left; /* plain files: bytes left in the range read */
    ZSTD_DCtx *zstd;
    size_t zstd_bare; /* its size holding no buffers */
    size_t zstd_hint; /* last hint from a call that made progress:
                               0 = the input ended a frame */
    uint64_t frame_at; /* where the zstd frame being decoded starts */
    pp_frames *frames; /* zstd frames on worker threads, while they last */
    z_stream gz;
    int gz_ready, gz_member_done;
};

static int read_some(int fd, unsigned char *buf, size_t cap, size_t *got)
{
    for (;;) {
        ssize_t r = read(fd, buf, cap);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        *got = (size_t)r;
        return 0;
    }
}

static int io_error(const pp_source *s, prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "%s: read failed: %s",
                   s->path, strerror(errno));
}

/* Refills the compressed input buffer when it is used up. */
static int refill(pp_source *s, prepack_diag *diag)
{
    if (s->in_pos < s->in_len || s->in_eof)
        return PREPACK_OK;
    s->in_offset += s->in_len;
    s->in_pos = s->in_len = 0;
    if (read_some(s->fd, s->in, IN_BUFFER, &s->in_len) != 0)
        return io_error(s, diag);
    s->in_eof = s->in_len == 0;
    return PREPACK_OK;
}

int pp_is_zstd(const unsigned char *b, size_t n)
{
    static const unsigned char magic[4] = {0x28, 0xB5, 0x2F, 0xFD};
    int skippable = n >= 4 && (b[0] & 0xF0) == 0x50 && b[1] == 0x2A &&
                    b[2] == 0x4D && b[3] == 0x18;
    return (n >= 4 && memcmp(b, magic, 4) == 0) || skippable;
}

int pp_source_open(pp_source **out, const char *path,
                   const prepack_allocator *a, prepack_diag *diag)
{
    *out = NULL;
    pp_source *s = pp_calloc(a, 1, sizeof *s);
    if (!s)
        return pp_out_of_memory(diag);
    s->alloc = a;
    s->path = path;
    s->fd = open(path, O_RDONLY);
    if (s->fd < 0) {
        int e = errno;
        pp_free(a, s);
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(s->fd, &st) == 0)
        s->size = (uint64_t)st.st_size;
    s->plain_left = UINT64_MAX;
    s->in = pp_alloc(a, IN_BUFFER, 1);
    int rc = s->in ? refill(s, diag) : pp_out_of_memory(diag);
    if (rc == PREPACK_OK) {
        if (pp_is_zstd(s->in, s->in_len)) {
            s->kind = ZSTD;
            s->zstd = ZSTD_createDCtx();
            if (!s->zstd)
                rc = pp_out_of_memory(diag);
            else
                s->zstd_bare = ZSTD_sizeof_DCtx(s->zstd);
        } else if (s->in_len >= 2 && s->in[0] == 0x1F && s->in[1] == 0x8B) {
            s->kind = GZIP;
            /* 15 + 16: gzip wrapper only, largest window */
            if (inflateInit2(&s->gz, 15 + 16) != Z_OK)
                rc = pp_out_of_memory(diag);
            else
                s->gz_ready = 1;
        }
    }
    if (rc != PREPACK_OK) {
        pp_source_close(s);
        return rc;
    }
    *out = s;
    return PREPACK_OK;
}

void pp_source_close(pp_source *s)
{
    if (!s)
        return;
    pp_frames_free(s->frames); /* its workers read fd: joined first */
    if (s->fd >= 0)
        close(s->fd);
    if (s->zstd)
        ZSTD_freeDCtx(s->zstd);
    if (s->gz_ready)
        inflateEnd(&s->gz);
    pp_free(s->alloc, s->in);
    pp_free(s->alloc, s);
}

static int read_plain(pp_source *s, unsigned char *buf, size_t cap, size_t *got,
                      prepack_diag *diag)
{
    size_t n = 0;
    if (cap > s->plain_left)
        cap = (size_t)s->plain_left;
    if (s->in_pos < s->in_len) { /* what magic detection read first */
        n = s->in_len - s->in_pos < cap ? s->in_len - s->in_pos : cap;
        memcpy(buf, s->in + s->in_pos, n);
        s->in_pos += n;
    } else if (read_some(s->fd, buf, cap, &n) != 0) {
        return io_error(s, diag);
    }
    *got = n;
    s->plain_read += n;
    s->plain_left -= n;
    return PREPACK_OK;
}

int pp_source_limit(pp_source *s, uint64_t begin, uint64_t end,
                    prepack_diag *diag)
{
    if (s->kind != PLAIN || begin > end || end > s->size)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s: bytes %llu..%llu cannot be read alone (a "
                       "compressed file, or past its end)",
                       s->path, (unsigned long long)begin,
                       (unsigned long long)end);
    if (lseek(s->fd, (off_t)begin, SEEK_SET) < 0)
        return io_error(s, diag);
    s->in_pos = s->in_len = 0; /* what detection read is not the range */
    s->plain_left = end - begin;
    s->size = end - begin;
    return PREPACK_OK;
}

int pp_source_is_plain(const pp_source *s)
{
    return s->kind == PLAIN;
}

/* A decoder with no history for the frame about to start. zstd keeps its
 * buffers across frames and sizes them for a frame only when they are
 * too small, and a frame whose header lies about its content size fails
 * with another error in a larger buffer ("Data corruption detected", not
 * "Destination buffer is too small"). A frame is decoded here after the
 * frames before it at one thread, with none before it after the workers
 * stopped at it: a decoder without buffers at every frame's start makes
 * what the frame gives, error text included, the frame's alone. One that
 * holds none (frames decoded in one pass leave none) is only reset, so
 * a file of many small frames does not make a decoder a frame. */
static int fresh_decoder(pp_source *s, prepack_diag *diag)
{
    if (ZSTD_sizeof_DCtx(s->zstd) <= s->zstd_bare) {
        ZSTD_DCtx_reset(s->zstd, ZSTD_reset_session_only);
        return PREPACK_OK;
    }
    ZSTD_freeDCtx(s->zstd);
    s->zstd = ZSTD_createDCtx();
    return s->zstd ? PREPACK_OK : pp_out_of_memory(diag);
}

/* Decompresses until some output appears. At the end of the file the
 * decoder is still called, with no input, to flush what it holds; only a
 * decoder that then produces nothing mid-frame means the stream was cut.
 * Errors name the frame's first byte: the same for any thread count (a
 * frame a worker could not decompress is streamed again here, by a
 * decoder as new as at one thread). */
static int read_zstd(pp_source *s, unsigned char *buf, size_t cap, size_t *got,
                     prepack_diag *diag)
{
    ZSTD_outBuffer out = {buf, cap, 0};
    while (out.pos == 0) {
        int rc = refill(s, diag);
        if (rc != PREPACK_OK)
            return rc;
        int at_eof = s->in_pos == s->in_len;
        ZSTD_inBuffer in = {s->in, s->in_len, s->in_pos};
        size_t r = ZSTD_decompressStream(s->zstd, &out, &in);
        if (in.pos > s->in_pos || out.pos > 0)
            s->zstd_hint = r; /* an idle call hints at the next frame */
        s->in_pos = in.pos;
        if (ZSTD_isError(r))
            return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                           "%s: corrupt zstd frame (it starts at byte %llu): "
                           "%s",
                           s->path, (unsigned long long)s->frame_at,
                           ZSTD_getErrorName(r));
        if (r == 0 && s->frame_at != s->in_offset + in.pos) {
            /* a frame ended: the next starts here */
            s->frame_at = s->in_offset + in.pos;
            if ((rc = fresh_decoder(s, diag)) != PREPACK_OK)
                return rc;
        }
        if (at_eof && out.pos == 0) {
            if (s->zstd_hint != 0)
                return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                               "%s: zstd stream cut short", s->path);
            break;
        }
    }
    *got = out.pos;
    return PREPACK_OK;
}

/* Streams the rest of the file from byte `at` (a frame's start). The
 * input buffer is refilled at the same 1 MiB-aligned offsets as a stream
 * from the file's start, so the decoder sees the frame exactly as the
 * one-thread path does: zstd decodes a frame that lies whole in its input
 * in one pass and then does not apply its window limit, so even what it
 * accepts depends on where the buffer ends. */
static int stream_from(pp_source *s, uint64_t at, prepack_diag *diag)
{
    uint64_t base = at - at % IN_BUFFER;
    if (lseek(s->fd, (off_t)base, SEEK_SET) < 0)
        return io_error(s, diag);
    s->in_offset = base;
    s->frame_at = at;
    s->in_len = s->in_pos = 0;
    s->in_eof = 0;
    s->zstd_hint = 0;
    int rc = fresh_decoder(s, diag);
    if (rc == PREPACK_OK)
        rc = refill(s, diag);
    if (rc == PREPACK_OK)
        s->in_pos = at - base < s->in_len ? (size_t)(at - base) : s->in_len;
    return rc;
}

/* zstd frames from the workers while they last, then the stream. */
static int read_zstd_frames(pp_source *s, unsigned char *buf, size_t cap,
                            size_t *got, prepack_diag *diag)
{
    if (s->frames) {
        uint64_t resume_at = 0;
        if (pp_frames_read(s->frames, buf, cap, got, &resume_at) !=
            PREPACK_OK)
            return pp_out_of_memory(diag);
        if (*got)
            return PREPACK_OK;
        pp_frames_free(s->frames);
        s->frames = NULL;
        int rc = stream_from(s, resume_at, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    return read_zstd(s, buf, cap, got, diag);
}

int pp_source_threads(pp_source *s, int threads, prepack_diag *diag)
{
    if (s->kind != ZSTD || threads <= 1 || s->frames ||
        s->in_offset + s->in_pos != 0)
        return PREPACK_OK;
    if (pp_frames_create(&s->frames, s->fd, s->size, 0, threads, s->alloc) !=
        PREPACK_OK)
        return pp_out_of_memory(diag);
    return PREPACK_OK;
}

static int read_gzip(pp_source *s, unsigned char *buf, size_t cap, size_t *got,
                     prepack_diag *diag)
{
    size_t produced = 0;
    uInt room = (uInt)(cap > UINT32_MAX ? UINT32_MAX : cap);
    while (produced == 0) {
        int rc = refill(s, diag);
        if (rc != PREPACK_OK)
            return rc;
        int at_eof = s->in_pos == s->in_len;
        if (s->gz_member_done) {
            if (at_eof)
                break;            /* the clean end */
            inflateReset(&s->gz); /* another gzip member follows */
            s->gz_member_done = 0;
        }
        s->gz.next_in = s->in + s->in_pos;
        s->gz.avail_in = (uInt)(s->in_len - s->in_pos);
        s->gz.next_out = buf;
        s->gz.avail_out = room;
        int z = inflate(&s->gz, Z_NO_FLUSH);
        s->in_pos = s->in_len - s->gz.avail_in;
        produced = room - s->gz.avail_out;
        if (z == Z_STREAM_END)
            s->gz_member_done = 1;
        else if (z != Z_OK && z != Z_BUF_ERROR)
            return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                           "%s: corrupt gzip stream near byte %llu: %s",
                           s->path,
                           (unsigned long long)(s->in_offset + s->in_pos),
                           s->gz.msg ? s->gz.msg : "data error");
        else if (at_eof && produced == 0)
            return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                           "%s: gzip stream cut short", s->path);
    }
    *got = produced;
    return PREPACK_OK;
}

int pp_source_read(pp_source *s, void *buf, size_t cap, size_t *got,
                   prepack_diag *diag)
{
    *got = 0;
    if (cap == 0)
        return PREPACK_OK;
    switch (s->kind) {
    case ZSTD:
        return read_zstd_frames(s, buf, cap, got, diag);
    case GZIP:
        return read_gzip(s, buf, cap, got, diag);
    default:
        return read_plain(s, buf, cap, got, diag);
    }
}

uint64_t pp_source_done(const pp_source *s)
{
    if (s->frames)
        return pp_frames_done(s->frames);
    return s->kind == PLAIN ? s->plain_read : s->in_offset + s->in_pos;
}

uint64_t pp_source_size(const pp_source *s)
{
    return s->size;
}
