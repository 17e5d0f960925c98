/* Reading shard sets: the manifest, each shard's seek table, and row i by
 * decompressing the one frame that holds it (the last frame is cached).
 * Everything read is checked; damage is PREPACK_ECORRUPT naming the shard,
 * the frame and the cause, never a crash. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>
#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createDCtx_advanced */
#include <zstd.h>

#include "common/alloc.h"
#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "common/utf8.h"
#include "rows/batch.h"
#include "shards/manifest.h"
#include "shards/msgpack_check.h"
#include "shards/reader.h"
#include "shards/shard_format.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shards hold little-endian arrays; this reader copies them as is"
#endif

int pp_reader_corrupt(prepack_diag *diag, const char *path, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    pp_vfail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD, path, fmt, ap);
    va_end(ap);
    return PREPACK_ECORRUPT;
}

/* ---- opening ----------------------------------------------------------------- */

/* Whether what lies between the frames' end (`at`) and the seek table
 * (`end`) is what the version puts there: nothing, or (version 4) room
 * for an index of `frames` frames and whole ids, no more than
 * PP_ID_TABLE_MAX (its content is checked when the shard is first read). */
static int index_fits_width(uint64_t at, uint64_t end, uint64_t frames,
                            unsigned width)
{
    uint64_t least = pp_index_frame_bytes(0, width, frames);
    return at <= end && end - at >= least &&
           (end - at - least) % width == 0 &&
           (end - at - least) / width <= PP_ID_TABLE_MAX;
}

/* Whether the set's shards have an index (version 4, not plan-only): its
 * id table decodes the rows, its hashes check the frames. */
static int indexed(const prepack_reader *r)
{
    return r->m.version >= PP_FIRST_ID_CODE_VERSION && !r->m.references;
}

static int index_fits(const prepack_reader *r, uint64_t at, uint64_t end,
                      uint64_t frames)
{
    if (!indexed(r))
        return at == end;
    return index_fits_width(at, end, frames, r->width);
}

/* An index that is whole only at the other token width: an edited
 * token_dtype, said so rather than as a damaged index. */
static const char *const dtype_edited =
    "the manifest's token_dtype does not match the shards (their index "
    "holds ids of the other width)";

/* Reads and checks a shard's seek table: frames that tile the file up to
 * the table, one per rows_per_frame rows. */
static int read_seek_table(prepack_reader *r, shard *s, uint64_t size, int fd,
                           prepack_diag *diag)
{
    unsigned char foot[PP_SEEK_FOOTER_BYTES];
    if (size < pp_seek_table_bytes(0) ||
        pp_read_at(fd, foot, sizeof foot, size - sizeof foot) != 0)
        return pp_reader_corrupt(diag, s->path, "too short for a seek table");
    uint32_t n = pp_load_le32(foot);
    if (pp_load_le32(foot + 5) != PP_SEEKABLE_MAGIC ||
        foot[4] != PP_SEEK_CHECKSUMS)
        return pp_reader_corrupt(diag, s->path,
                                 "no seek table at the end (cut short?)");
    uint64_t table = pp_seek_table_bytes(n);
    uint64_t want = (s->rows + r->m.rows_per_frame - 1) / r->m.rows_per_frame;
    if (table > size || n != want)
        return pp_reader_corrupt(
            diag, s->path, "seek table lists %u frames, %llu rows need %llu", n,
            (unsigned long long)s->rows, (unsigned long long)want);
    unsigned char *t = pp_alloc(r->alloc, (size_t)table, 1);
    s->frames = pp_calloc(r->alloc, n ? n : 1, sizeof *s->frames);
    if (!t || !s->frames) {
        pp_free(r->alloc, t);
        return pp_out_of_memory(diag);
    }
    int rc = PREPACK_OK;
    if (pp_read_at(fd, t, (size_t)table, size - table) != 0)
        rc = pp_reader_corrupt(diag, s->path, "cannot read the seek table");
    else if (pp_load_le32(t) != PP_SKIPPABLE_MAGIC ||
             pp_load_le32(t + 4) != table - PP_SEEK_HEADER_BYTES)
        rc = pp_reader_corrupt(diag, s->path, "bad seek table frame header");
    /* No frame may promise more than rows_per_frame rows of L tokens:
     * a hostile seek table cannot make the reader allocate beyond that. */
    uint64_t L = r->m.max_seq_len;
    uint64_t most = pp_frame_bytes_bound(
        r->m.rows_per_frame, L,
        r->m.references ? PP_REF_BYTES
                        : pp_stored_token_bound(r->m.version, r->width));
    uint64_t at = 0;
    for (uint32_t i = 0; rc == PREPACK_OK && i < n; i++) {
        const unsigned char *e =
            t + PP_SEEK_HEADER_BYTES + PP_SEEK_ENTRY_BYTES * (size_t)i;
        frame_entry *f = &s->frames[i];
        f->offset = at;
        f->compressed = pp_load_le32(e);
        f->decompressed = pp_load_le32(e + 4);
        f->checksum = pp_load_le32(e + 8);
        at += f->compressed;
        if (f->decompressed > most)
            rc = pp_reader_corrupt(
                diag, s->path,
                "frame %u claims %u bytes, more than %llu rows of "
                "%llu tokens can hold",
                i, f->decompressed, (unsigned long long)r->m.rows_per_frame,
                (unsigned long long)L);
        else if (f->decompressed > pp_zstd_expansion_bound(f->compressed))
            rc = pp_reader_corrupt(diag, s->path,
                                   "frame %u claims %u bytes from %u "
                                   "compressed, more than zstd can expand to",
                                   i, f->decompressed, f->compressed);
    }
    s->index_offset = at;
    s->index_bytes = rc == PREPACK_OK && at <= size - table
                         ? size - table - at
                         : 0;
    if (rc == PREPACK_OK && !index_fits(r, at, size - table, n))
        rc = indexed(r) && index_fits_width(at, size - table, n,
                                            r->width == 2 ? 4 : 2)
                 ? pp_reader_corrupt(diag, s->path, "%s", dtype_edited)
                 : pp_reader_corrupt(
                       diag, s->path,
                       "frames cover %llu bytes, the file holds %llu "
                       "before its seek table%s",
                       (unsigned long long)at,
                       (unsigned long long)(size - table),
                       indexed(r) ? ", which must be the frames and the "
                                    "shard's index"
                                  : "");
    s->nframes = n;
    pp_free(r->alloc, t);
    return rc;
}

static int open_shard(prepack_reader *r, const char *dir, size_t i,
                      uint64_t first_row, prepack_diag *diag)
{
    shard *s = &r->shards[i];
    const pp_shard_info *info = &r->m.shards[i];
    snprintf(s->path, sizeof s->path, "%s/%s", dir, info->file);
    s->first_row = first_row;
    s->rows = info->rows;
    /* never blocking: a FIFO named like a shard is refused, not waited on */
    int fd = open(s->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", s->path, strerror(e));
    }
    int rc = PREPACK_OK;
    if (!S_ISREG(st.st_mode))
        rc = pp_reader_corrupt(diag, s->path, "not a regular file");
    else if ((uint64_t)st.st_size != info->bytes)
        rc = pp_reader_corrupt(
            diag, s->path, "%llu bytes, the manifest says %llu",
            (unsigned long long)st.st_size, (unsigned long long)info->bytes);
    if (rc == PREPACK_OK)
        rc = read_seek_table(r, s, (uint64_t)st.st_size, fd, diag);
    close(fd);
    return rc;
}

/* The reader's decompression context. A streamed frame (stream_row) is
 * decompressed straight into the frame buffer, which holds the whole
 * frame and stays put: zstd's stable output buffer (an experimental
 * parameter, whose number the stable header names), so zstd keeps no
 * window of its own and copies nothing. A libzstd that refuses it
 * streams through its own buffer instead, the same bytes. */
static ZSTD_DCtx *create_dctx(const prepack_allocator *a)
{
    ZSTD_DCtx *d = NULL;
    if (!a) {
        d = ZSTD_createDCtx();
    } else {
        ZSTD_customMem mem = {pp_zstd_alloc, pp_zstd_free, (void *)a};
        d = ZSTD_createDCtx_advanced(mem);
    }
    if (d) {
        (void)ZSTD_DCtx_setParameter(d, ZSTD_d_experimentalParam2, 1);
        /* a frame's window is bounded by its content, which the seek
         * table bounds: streamed, as decompressed whole, any window a
         * frame header asks for is read (zstd's default limit would
         * refuse a large one only when streaming) */
        (void)ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax,
                                     sizeof(size_t) == 4 ? 30 : 31);
    }
    return d;
}

/* open_damaged: keeps why shard s failed its open in place of its
 * frames, so its rows and verify can report it. */
static int keep_damage(prepack_reader *r, shard *s, const prepack_diag *why,
                       prepack_diag *diag)
{
    pp_free(r->alloc, s->frames);
    s->frames = NULL;
    s->nframes = 0;
    s->damage = pp_alloc(r->alloc, 1, sizeof *s->damage);
    if (!s->damage)
        return pp_out_of_memory(diag);
    *s->damage = *why;
    return PREPACK_OK;
}

int prepack_reader_open(prepack_reader **out, const char *dir,
                        const prepack_reader_options *o, prepack_diag *diag)
{
    if (!out || !dir)
        return pp_invalid_argument(diag);
    *out = NULL;
    const prepack_allocator *a = o ? o->allocator : NULL;
    int rc = pp_check_allocator(a, diag);
    if (rc != PREPACK_OK)
        return rc;
    prepack_reader *r = pp_calloc(a, 1, sizeof *r);
    if (!r)
        return pp_out_of_memory(diag);
    r->alloc = pp_allocator_keep(&r->alloc_copy, a);
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    r->fd = -1;
    r->cached_shard = r->fd_shard = r->table_shard = r->stream.shard =
        SIZE_MAX;
    char path[4400];
    snprintf(path, sizeof path, "%s/" PP_MANIFEST_NAME, dir);
    rc = pp_manifest_read(path, r->alloc, &r->m, diag);
    if (rc == PREPACK_OK) {
        const prepack_allocator *ra = r->alloc;
        r->width = (unsigned)prepack_dtype_width(r->m.dtype);
        r->shards =
            pp_calloc(ra, r->m.nshards ? r->m.nshards : 1, sizeof *r->shards);
        size_t L = r->m.max_seq_len;
        r->tokens = pp_alloc(ra, L, r->width);
        r->cu = pp_alloc(ra, L + 1, sizeof *r->cu);
        r->seq_ids = pp_alloc(ra, L, sizeof *r->seq_ids);
        r->mask = pp_alloc(ra, L, 1);
        r->starts = pp_alloc(ra, L, sizeof *r->starts);
        r->dctx = create_dctx(ra);
        if (indexed(r))
            r->table = pp_calloc(ra, PP_ID_TABLE_MAX, r->width);
        if (!r->shards || !r->tokens || !r->cu || !r->seq_ids || !r->mask ||
            !r->starts || !r->dctx || (indexed(r) && !r->table))
            rc = pp_out_of_memory(diag);
    }
    if (rc == PREPACK_OK && r->m.references) {
        r->sources = pp_calloc(r->alloc, r->m.nsources ? r->m.nsources : 1,
                               sizeof *r->sources);
        r->scratch = pp_alloc(r->alloc, r->m.max_seq_len, 8);
        rc = r->sources && r->scratch
                 ? pp_sources_open(r->m.sources, r->m.nsources, r->sources,
                                   diag)
                 : pp_out_of_memory(diag);
    }
    int keep_damaged = o && o->open_damaged;
    for (size_t i = 0; rc == PREPACK_OK && i < r->m.nshards; i++) {
        prepack_diag why;
        memset(&why, 0, sizeof why);
        rc = open_shard(r, dir, i, r->rows, &why);
        r->rows += r->m.shards[i].rows;
        if (rc != PREPACK_OK && rc != PREPACK_ENOMEM && keep_damaged)
            rc = keep_damage(r, &r->shards[i], &why, diag);
        else if (rc != PREPACK_OK && diag)
            *diag = why;
    }
    if (rc != PREPACK_OK) {
        prepack_reader_free(r);
        return rc;
    }
    *out = r;
    return PREPACK_OK;
}

void prepack_reader_free(prepack_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    const prepack_allocator *a = r->alloc;
    for (size_t i = 0; r->shards && i < r->m.nshards; i++) {
        pp_free(a, r->shards[i].frames);
        pp_free(a, r->shards[i].damage);
    }
    pp_free(a, r->shards);
    pp_sources_close(r->sources, r->m.nsources);
    pp_free(a, r->sources);
    pp_free(a, r->scratch);
    pp_manifest_free(&r->m);
    if (r->unp_live)
        msgpack_unpacked_destroy(&r->unp);
    ZSTD_freeDCtx(r->dctx);
    pp_free(a, r->cbuf);
    pp_free(a, r->dbuf);
    pp_free(a, r->tokens);
    pp_free(a, r->cu);
    pp_free(a, r->seq_ids);
    pp_free(a, r->mask);
    pp_free(a, r->starts);
    pp_free(a, r->table);
    pp_free(a, r->stream.ends);
    pp_batch_buffers_free(a, r->batch);
    pp_batch_buffers_free(a, r->batch_into);
    prepack_allocator copy = r->alloc_copy; /* r itself goes with it */
    pp_free(a ? &copy : NULL, r);
}

/* Reads rows[0..n) into the batch bt began. */
static int fill_batch(prepack_reader *r, pp_batcher *bt, const size_t *rows,
                      size_t n, prepack_batch *out, prepack_diag *diag)
{
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < n; i++) {
        prepack_row row;
        rc = prepack_reader_row(r, rows[i], &row, diag);
        if (rc == PREPACK_OK)
            rc = pp_batch_add_row(bt, &row, diag);
    }
    if (rc == PREPACK_OK)
        pp_batch_finish(bt, out);
    return rc;
}

int prepack_reader_batch_into(prepack_reader *r, const size_t *rows, size_t n,
                              const prepack_batch_options *o,
                              const prepack_batch_arrays *dst,
                              prepack_batch *out, prepack_diag *diag)
{
    if (!r || (!rows && n) || !out || !dst)
        return pp_invalid_argument(diag);
    memset(out, 0, sizeof *out);
    pp_batcher bt;
    int rc = pp_batch_begin_into(&bt, &r->batch_into, r->alloc, dst, n,
                                 r->m.max_seq_len, o, diag);
    return rc == PREPACK_OK ? fill_batch(r, &bt, rows, n, out, diag) : rc;
}

int prepack_reader_batch(prepack_reader *r, const size_t *rows, size_t n,
                         const prepack_batch_options *o, prepack_batch *out,
                         prepack_diag *diag)
{
    if (!r || (!rows && n) || !out)
        return pp_invalid_argument(diag);
    memset(out, 0, sizeof *out);
    pp_batcher bt;
    int rc =
        pp_batch_begin(&bt, &r->batch, r->alloc, n, r->m.max_seq_len, o, diag);
    return rc == PREPACK_OK ? fill_batch(r, &bt, rows, n, out, diag) : rc;
}

size_t prepack_reader_row_count(const prepack_reader *r)
{
    return r->rows;
}

uint32_t prepack_reader_pad_multiple(const prepack_reader *r)
{
    return r->m.pad_multiple > 1 ? r->m.pad_multiple : 1;
}

uint32_t prepack_reader_max_seq_len(const prepack_reader *r)
{
    return r->m.max_seq_len;
}

prepack_dtype prepack_reader_token_dtype(const prepack_reader *r)
{
    return r->m.dtype;
}

prepack_overlong prepack_reader_overlong(const prepack_reader *r)
{
    return r->m.overlong;
}

size_t prepack_reader_shard_count(const prepack_reader *r)
{
    return r->m.nshards;
}

uint64_t prepack_reader_shard_rows(const prepack_reader *r, size_t i)
{
    return r->shards[i].rows;
}

size_t prepack_reader_source_count(const prepack_reader *r)
{
    return r->m.references ? r->m.nsources : 0;
}

const char *prepack_reader_source(const prepack_reader *r, size_t i)
{
    return r->m.references && i < r->m.nsources ? r->m.sources[i].path : NULL;
}

/* ---- frames ------------------------------------------------------------------- */

/* Id i of the table, at the token width: a uint16 set's table takes
 * 32 KiB, which its decoder's lookups of two-byte codes find in cache
 * more often than 64 KiB. */
static void put_table_id(prepack_reader *r, size_t i, uint64_t id)
{
    if (r->width == 2)
        ((uint16_t *)r->table)[i] = (uint16_t)id;
    else
        ((uint32_t *)r->table)[i] = (uint32_t)id;
}

/* Shard si's index (version 4), read through the open descriptor and
 * checked (its frame's magic and sizes, then its hash): the id table
 * into r->table (host integers at the token width), each frame's hash
 * into its entry. */
static int load_index(prepack_reader *r, size_t si, prepack_diag *diag)
{
    shard *s = &r->shards[si];
    size_t bytes = (size_t)s->index_bytes; /* bounded by index_fits */
    size_t n = (size_t)(bytes - pp_index_frame_bytes(0, r->width,
                                                     s->nframes)) /
               r->width;
    unsigned char *f = pp_alloc(r->alloc, bytes, 1);
    if (!f)
        return pp_out_of_memory(diag);
    r->table_shard = SIZE_MAX;
    int rc = PREPACK_OK;
    const unsigned char *rest = f + PP_INDEX_FRAME_HEAD + PP_INDEX_HEAD;
    size_t nrest = bytes - PP_INDEX_FRAME_HEAD - PP_INDEX_HEAD;
    if (pp_read_at(r->fd, f, bytes, s->index_offset) != 0)
        rc = pp_reader_corrupt(diag, s->path, "cannot read its index");
    else if (pp_load_le32(f) == PP_INDEX_MAGIC &&
             pp_load_le32(f + 8) != n &&
             bytes == pp_index_frame_bytes(pp_load_le32(f + 8),
                                           r->width == 2 ? 4 : 2, s->nframes))
        rc = pp_reader_corrupt(diag, s->path, "%s", dtype_edited);
    else if (pp_load_le32(f) != PP_INDEX_MAGIC ||
             pp_load_le32(f + 4) != bytes - PP_INDEX_FRAME_HEAD ||
             pp_load_le32(f + 8) != n || pp_load_le32(f + 12) != s->nframes)
        rc = pp_reader_corrupt(diag, s->path,
                               "no index before the seek table, or a bad "
                               "index frame header");
    else if (XXH64(rest, nrest, 0) != pp_load_le(f + 16, 8))
        rc = pp_reader_corrupt(diag, s->path,
                               "its index does not match its hash");
    for (size_t i = 0; rc == PREPACK_OK && i < n; i++)
        put_table_id(r, i, pp_load_le(rest + i * r->width, r->width));
    for (size_t i = 0; rc == PREPACK_OK && i < s->nframes; i++)
        s->frames[i].hash = pp_load_le(rest + n * r->width + 8 * i, 8);
    if (rc == PREPACK_OK) {
        r->ntable = n;
        r->table_shard = si;
    }
    pp_free(r->alloc, f);
    return rc;
}

/* Frame f of shard si's compressed bytes into r->cbuf (r->dbuf sized
 * for its content), through the shard's descriptor, opened on first use;
 * version 4: the shard's index read first and the bytes checked against
 * it. Drops both caches, which share the buffers. */
static int read_frame_bytes(prepack_reader *r, size_t si, size_t f,
                            prepack_diag *diag)
{
    shard *s = &r->shards[si];
    frame_entry *e = &s->frames[f];
    r->cached_shard = r->stream.shard = SIZE_MAX;
    if (r->fd_shard != si) {
        if (r->fd >= 0)
            close(r->fd);
        r->fd = open(s->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (r->fd >= 0 && (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode))) {
            close(r->fd); /* swapped for a FIFO or a device since open */
            r->fd = -1;
            errno = EINVAL;
        }
        r->fd_shard = r->fd >= 0 ? si : SIZE_MAX;
        if (r->fd < 0)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "cannot open %s: %s", s->path,
                           errno == EINVAL ? "not a regular file"
                                           : strerror(errno));
    }
    if (indexed(r) && r->table_shard != si) {
        int rc = load_index(r, si, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    if (pp_grow(r->alloc, (void **)&r->cbuf, &r->cbuf_cap, e->compressed, 1) ||
        pp_grow(r->alloc, (void **)&r->dbuf, &r->dbuf_cap,
                (size_t)e->decompressed + 1, 1))
        return pp_out_of_memory(diag);
    if (pp_read_at(r->fd, r->cbuf, e->compressed, e->offset) != 0)
        return pp_reader_corrupt(diag, s->path, "frame %zu: cannot read", f);
    if (indexed(r) && XXH64(r->cbuf, e->compressed, 0) != e->hash)
        return pp_reader_corrupt(diag, s->path,
                                 "frame %zu: its bytes do not match the "
                                 "shard's index",
                                 f);
    /* exactly one zstd frame: ZSTD_decompressDCtx would read on into a
     * second one, or over a skippable one, and serve what they hold */
    size_t one = ZSTD_findFrameCompressedSize(r->cbuf, e->compressed);
    if (ZSTD_isError(one) || one != e->compressed ||
        pp_load_le32(r->cbuf) != ZSTD_MAGICNUMBER)
        return pp_reader_corrupt(diag, s->path,
                                 "frame %zu: not one zstd frame, as its "
                                 "seek table entry says",
                                 f);
    return PREPACK_OK;
}

/* Rows of frame f of shard si. */
static size_t rows_in_frame(const prepack_reader *r, size_t si, size_t f)
{
    uint64_t rows = r->shards[si].rows - (uint64_t)f * r->m.rows_per_frame;
    return (size_t)(rows < r->m.rows_per_frame ? rows : r->m.rows_per_frame);
}

/* Decompresses, checks and parses frame f of shard s into r->unp. */
int pp_reader_load_frame(prepack_reader *r, size_t si, size_t f,
                         prepack_diag *diag)
{
    if (r->cached_shard == si && r->cached_frame == f)
        return PREPACK_OK;
    shard *s = &r->shards[si];
    frame_entry *e = &s->frames[f];
    int rc = read_frame_bytes(r, si, f, diag);
    if (rc != PREPACK_OK)
        return rc;
    size_t n = ZSTD_decompressDCtx(
        r->dctx, r->dbuf, (size_t)e->decompressed + 1, r->cbuf, e->compressed);
    if (ZSTD_isError(n))
        return pp_reader_corrupt(diag, s->path, "frame %zu: %s", f,
                                 ZSTD_getErrorName(n));
    if (n != e->decompressed || (uint32_t)XXH64(r->dbuf, n, 0) != e->checksum)
        return pp_reader_corrupt(
            diag, s->path,
            "frame %zu: content does not match its seek table "
            "entry",
            f);
    if (r->unp_live)
        msgpack_unpacked_destroy(&r->unp);
    msgpack_unpacked_init(&r->unp);
    r->unp_live = 1;
    size_t off = 0;
    size_t rows = rows_in_frame(r, si, f);
    /* counts checked against the bytes first: msgpack-c allocates from
     * them as they are */
    msgpack_unpack_return ur =
        pp_msgpack_span(r->dbuf, n) != n
            ? MSGPACK_UNPACK_PARSE_ERROR
            : msgpack_unpack_next(&r->unp, (const char *)r->dbuf, n, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return pp_out_of_memory(diag);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != n ||
        r->unp.data.type != MSGPACK_OBJECT_ARRAY ||
        r->unp.data.via.array.size != rows)
        return pp_reader_corrupt(diag, s->path,
                                 "frame %zu: not a msgpack array of %zu rows",
                                 f, rows);
    r->cached_shard = si;
    r->cached_frame = f;
    return PREPACK_OK;
}

/* ---- rows ---------------------------------------------------------------------- */

/* The format's field names (docs/FORMAT.md, "Rows"), in either kind of
 * set: each may appear once in a row, and as a bin. */
enum row_field {
    INPUT_IDS, CU_SEQLENS, SEQ_IDS, LOSS_MASK, SEQ_STARTS, REF_SOURCE,
    REF_OFFSET, ROW_FIELDS
};
static const struct {
    const char *name;
    size_t length;
} row_fields[ROW_FIELDS] = {
    [INPUT_IDS] = {"input_ids", 9},   [CU_SEQLENS] = {"cu_seqlens", 10},
    [SEQ_IDS] = {"seq_ids", 7},       [LOSS_MASK] = {"loss_mask", 9},
    [SEQ_STARTS] = {"seq_starts", 10}, [REF_SOURCE] = {"ref_source", 10},
    [REF_OFFSET] = {"ref_offset", 10}};

/* A row's fields as check_row_keys found them: each bin's bytes, NULL
 * where the row has none (as the map's lookups by name gave them). */
typedef struct {
    const unsigned char *at[ROW_FIELDS];
    size_t size[ROW_FIELDS];
} row_bins;

/* Which of row_fields a key names, or -1. */
static int row_field_of(const msgpack_object_str *key)
{
    for (int k = 0; k < ROW_FIELDS; k++)
        if (key->size == row_fields[k].length &&
            memcmp(key->ptr, row_fields[k].name, key->size) == 0)
            return k;
    return -1;
}

/* A row map's keys, in map order: UTF-8 strings, each of the format's
 * field names at most once and a bin, whose bytes go to *bins (one pass
 * over the map for every field a row reads). A key twice would be read as its
 * first by this reader and its last by a dict (the pure-Python reader's,
 * whose row_map checks the same, in the same order, with the same
 * words), and a field that is not a bin would read as absent (a loss
 * mask dropped, every token trained). A field name is known UTF-8, so
 * only the other keys are checked for it. */
static int check_row_keys(const msgpack_object *map, row_bins *bins,
                          const char *path, size_t f, size_t j,
                          prepack_diag *diag)
{
    int seen[ROW_FIELDS] = {0};
    memset(bins, 0, sizeof *bins);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        int k = kv->key.type == MSGPACK_OBJECT_STR
                    ? row_field_of(&kv->key.via.str)
                    : -1;
        if (k < 0) {
            if (kv->key.type != MSGPACK_OBJECT_STR ||
                !pp_is_utf8((const unsigned char *)kv->key.via.str.ptr,
                            kv->key.via.str.size))
                return pp_reader_corrupt(diag, path,
                                         "frame %zu row %zu: a key that is "
                                         "not a UTF-8 string",
                                         f, j);
            continue;
        }
        if (seen[k]++)
            return pp_reader_corrupt(diag, path, "frame %zu row %zu: %s twice",
                                     f, j, row_fields[k].name);
        if (kv->val.type != MSGPACK_OBJECT_BIN)
            return pp_reader_corrupt(diag, path,
                                     "frame %zu row %zu: %s is not a bin", f,
                                     j, row_fields[k].name);
        bins->at[k] = (const unsigned char *)kv->val.via.bin.ptr;
        bins->size[k] = kv->val.via.bin.size;
    }
    return PREPACK_OK;
}

/* Which of a row's fields disagree, named for the message (NULL: none).
 * The token count is the one figure read through token_dtype, so a size
 * that fits the other width says which side is wrong. */
static const char *bad_field(const prepack_reader *r, size_t nt, size_t nc,
                             size_t ns, const void *m, size_t nm,
                             const void *st, size_t nst)
{
    size_t T = nt / r->width, k = nc / 4 ? nc / 4 - 1 : 0;
    if (nt % r->width)
        return "input_ids is not a whole number of token_dtype values "
               "(does the manifest's token_dtype match the shards?)";
    if (T > r->m.max_seq_len)
        return "input_ids holds more than max_seq_len tokens";
    if (nc % 4 || k == 0 || k > r->m.max_seq_len)
        return "cu_seqlens is not 2 to L + 1 int32 values";
    if (ns != 8 * k)
        return "seq_ids is not one uint64 per sequence";
    if (m && nm != T)
        return "loss_mask is not one byte per token";
    if (st && nst != 4 * k)
        return "seq_starts is not one uint32 per sequence";
    return NULL;
}

/* Whether the row's token count agrees with its other fields (the end of
 * cu_seqlens, the loss mask's length) only when input_ids is read at the
 * other width: an edited token_dtype, not damaged rows. */
static int token_width_mismatch(const prepack_reader *r, size_t nt,
                                const void *c, size_t nc, const void *m,
                                size_t nm)
{
    unsigned other = r->width == 2 ? 4 : 2;
    int32_t last = 0;
    if (nc >= 4)
        memcpy(&last, (const unsigned char *)c + nc - 4, 4);
    size_t count = m ? nm : (size_t)(last > 0 ? last : 0);
    return nt % other == 0 && count * other == nt && count * r->width != nt;
}

static int copy_fields(prepack_reader *r, prepack_row *row, size_t T,
                       const void *c, size_t nc, const void *sq, size_t ns,
                       const void *m, size_t nm, const void *st, size_t nst,
                       const char *path, size_t f, size_t j,
                       prepack_diag *diag);

/* Sequence i's reference (`len` tokens at byte `at` of source s, from
 * chunk `start`) checked to name a source and lie inside its file on a
 * token boundary and, for Megatron, where the index entry of its
 * sequence id puts it. */
static int check_reference(const prepack_reader *r, uint32_t s, uint64_t at,
                           uint32_t start, uint32_t len, const char *path,
                           size_t f, size_t j, size_t i, prepack_diag *diag)
{
    if (s >= r->m.nsources)
        return pp_reader_corrupt(diag, path,
                                 "frame %zu row %zu: sequence %zu refers to "
                                 "source %u, outside the manifest's sources "
                                 "(%zu)",
                                 f, j, i, s, r->m.nsources);
    const pp_mapped_source *ms = &r->sources[s];
    if (at % ms->width)
        return pp_reader_corrupt(diag, path,
                                 "frame %zu row %zu: sequence %zu starts at "
                                 "byte %llu of %s, not a multiple of its "
                                 "%u-byte tokens",
                                 f, j, i, (unsigned long long)at, ms->path,
                                 ms->width);
    if (at > ms->size || (ms->size - at) / ms->width < len)
        return pp_reader_corrupt(
            diag, path,
            "frame %zu row %zu: sequence %zu refers to %u tokens at "
            "byte %llu of source %u, outside %s",
            f, j, i, len, (unsigned long long)at, s, ms->path);
    const char *why = NULL;
    int off = ms->has_index ? pp_set_source_check_entry(ms, r->seq_ids[i], at,
                                                        start, len, &why)
                            : 0;
    if (off < 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: cannot read the index (for %s frame %zu row "
                       "%zu): cut short since the set was opened?",
                       r->m.sources[s].index, path, f, j);
    if (off > 0)
        return pp_reader_corrupt(diag, path,
                                 "frame %zu row %zu: sequence %zu (id %llu, "
                                 "byte %llu of %s): %s",
                                 f, j, i, (unsigned long long)r->seq_ids[i],
                                 (unsigned long long)at, ms->path, why);
    return PREPACK_OK;
}

/* Sequence i of a plan-only row (its cu_seqlens checked) read from its
 * file into the row's tokens, each id checked to fit token_dtype. */
static int fetch_sequence(prepack_reader *r, uint32_t s, uint64_t at,
                          uint32_t start, const char *path, size_t f,
                          size_t j, size_t i, prepack_diag *diag)
{
    uint32_t len = (uint32_t)(r->cu[i + 1] - r->cu[i]);
    int rc = check_reference(r, s, at, start, len, path, f, j, i, diag);
    if (rc != PREPACK_OK)
        return rc;
    const pp_mapped_source *ms = &r->sources[s];
    uint32_t bad = 0;
    int64_t value = 0;
    void *out = (unsigned char *)r->tokens + (size_t)r->cu[i] * r->width;
    errno = 0; /* a short read sets none */
    int got = pp_set_source_read(ms, at, len, r->width, out, r->scratch,
                                 &bad, &value);
    if (got == PP_SET_SOURCE_SHORT)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "%s: cannot read %u tokens at byte %llu (for %s "
                       "frame %zu row %zu): %s",
                       ms->path, len, (unsigned long long)at, path, f, j,
                       errno ? strerror(errno)
                             : "the file ends first: cut short since the "
                               "set was opened?");
    if (got == PP_SET_SOURCE_RANGE)
        return pp_reader_corrupt(
            diag, path,
            "frame %zu row %zu: sequence %zu's token %u is %lld at byte "
            "%llu of %s, which does not fit token_dtype %s",
            f, j, i, bad, (long long)value,
            (unsigned long long)at + (uint64_t)bad * ms->width, ms->path,
            prepack_dtype_name(r->m.dtype));
    return PREPACK_OK;
}

/* A plan-only row: its tokens read from its sources, each
 * sequence's run checked to lie inside its file. */
static int fill_plan_only_row(prepack_reader *r, const row_bins *b,
                              prepack_row *row, const char *path, size_t f,
                              size_t j, prepack_diag *diag)
{
    size_t nc = b->size[CU_SEQLENS], ns = b->size[SEQ_IDS];
    size_t nm = b->size[LOSS_MASK], nst = b->size[SEQ_STARTS];
    size_t nsrc = b->size[REF_SOURCE], noff = b->size[REF_OFFSET];
    const void *c = b->at[CU_SEQLENS], *sq = b->at[SEQ_IDS];
    const void *m = b->at[LOSS_MASK], *st = b->at[SEQ_STARTS];
    const unsigned char *src = b->at[REF_SOURCE], *off = b->at[REF_OFFSET];
    if (!src || !off || !c || !sq)
        return pp_reader_corrupt(diag, path,
                                 "frame %zu row %zu: needs ref_source, "
                                 "ref_offset, cu_seqlens and seq_ids as bins",
                                 f, j);
    int32_t last = 0;
    if (nc >= 4)
        memcpy(&last, (const unsigned char *)c + nc - 4, 4);
    size_t T = last > 0 ? (size_t)last : 0;
    size_t k = nc / 4 ? nc / 4 - 1 : 0;
    const char *wrong = bad_field(r, T * r->width, nc, ns, m, nm, st, nst);
    if (!wrong && (nsrc != 4 * k || noff != 8 * k))
        wrong = "ref_source and ref_offset are not one uint32 and one "
                "uint64 per sequence";
    if (wrong)
        return pp_reader_corrupt(diag, path, "frame %zu row %zu: %s", f, j,
                                 wrong);
    int rc = copy_fields(r, row, T, c, nc, sq, ns, m, nm, st, nst, path, f,
                         j, diag);
    for (size_t i = 0; rc == PREPACK_OK && i < k; i++)
        rc = fetch_sequence(r, (uint32_t)pp_load_le(src + 4 * i, 4),
                            pp_load_le(off + 8 * i, 8),
                            st ? r->starts[i] : 0, path, f, j, i, diag);
    return rc;
}

/* A version 4 row: its T tokens (the end of cu_seqlens) decoded from
 * input_ids's id codes through the shard's table. */
static int fill_coded_row(prepack_reader *r, prepack_row *row,
                          const void *t, size_t nt, size_t T, const void *c,
                          size_t nc, const void *sq, size_t ns, const void *m,
                          size_t nm, const void *st, size_t nst,
                          const char *path, size_t f, size_t j,
                          prepack_diag *diag)
{
    const char *wrong = bad_field(r, T * r->width, nc, ns, m, nm, st, nst);
    if (!wrong && pp_decode_id_codes(r->tokens, r->width, t, nt, T, r->table,
                                     r->ntable) != 0)
        wrong = "input_ids is not the id codes of the row's tokens (cut "
                "short, bytes left over, or a rank past the id table)";
    if (wrong)
        return pp_reader_corrupt(diag, path, "frame %zu row %zu: %s", f, j,
                                 wrong);
    return copy_fields(r, row, T, c, nc, sq, ns, m, nm, st, nst, path, f, j,
                       diag);
}

int pp_reader_fill_row(prepack_reader *r, const msgpack_object *map,
                       prepack_row *row, const char *path, size_t f, size_t j,
                       prepack_diag *diag)
{
    size_t nt = 0, nc = 0, ns = 0, nm = 0, nst = 0;
    const void *t = NULL, *c = NULL, *sq = NULL, *m = NULL, *st = NULL;
    if (map->type != MSGPACK_OBJECT_MAP)
        return pp_reader_corrupt(diag, path, "frame %zu row %zu: not a map",
                                 f, j);
    row_bins b;
    int bad = check_row_keys(map, &b, path, f, j, diag);
    if (bad != PREPACK_OK)
        return bad;
    if (r->m.references)
        return fill_plan_only_row(r, &b, row, path, f, j, diag);
    c = b.at[CU_SEQLENS], nc = b.size[CU_SEQLENS];
    sq = b.at[SEQ_IDS], ns = b.size[SEQ_IDS];
    m = b.at[LOSS_MASK], nm = b.size[LOSS_MASK];
    st = b.at[SEQ_STARTS], nst = b.size[SEQ_STARTS];
    t = b.at[INPUT_IDS], nt = b.size[INPUT_IDS];
    if (!t || !c || !sq)
        return pp_reader_corrupt(diag, path,
                                 "frame %zu row %zu: needs input_ids, "
                                 "cu_seqlens and seq_ids as bins",
                                 f, j);
    int32_t last = 0;
    if (nc >= 4)
        memcpy(&last, (const unsigned char *)c + nc - 4, 4);
    if (indexed(r))
        return fill_coded_row(r, row, t, nt, last > 0 ? (size_t)last : 0, c,
                              nc, sq, ns, m, nm, st, nst, path, f, j, diag);
    /* version 3: uint32 ids in 3 bytes a token, the length says */
    unsigned stored = pp_stored_id_bytes(r->m.version, r->width, nt,
                                         last > 0 ? (size_t)last : 0);
    if (stored != r->width)
        nt = nt / stored * r->width; /* the bytes at the set's width */
    if (token_width_mismatch(r, nt, c, nc, m, nm))
        return pp_reader_corrupt(
            diag, path,
            "frame %zu row %zu: input_ids holds %zu bytes, which agrees "
            "with the row's other fields as %s tokens, not %s: the "
            "manifest's token_dtype does not match the shards",
            f, j, nt, r->width == 2 ? "uint32" : "uint16",
            prepack_dtype_name(r->m.dtype));
    const char *wrong = bad_field(r, nt, nc, ns, m, nm, st, nst);
    if (wrong)
        return pp_reader_corrupt(diag, path, "frame %zu row %zu: %s", f, j,
                                 wrong);
    pp_decode_ids(r->tokens, r->width, t, stored, nt / r->width);
    return copy_fields(r, row, nt / r->width, c, nc, sq, ns, m, nm, st, nst,
                       path, f, j, diag);
}

/* The row's tokens once each sequence is padded to a multiple of m (a
 * set planned for context parallelism, which readers pad): what must fit
 * L, the one rule both readers and verify apply. */
static uint64_t padded_tokens(const int32_t *cu, size_t k, uint32_t m)
{
    uint64_t padded = 0;
    for (size_t i = 0; m > 1 && i < k; i++) {
        uint64_t l = (uint64_t)(cu[i + 1] - cu[i]);
        padded += (l + m - 1) / m * m;
    }
    return padded;
}

/* The fields every row has (T tokens; bad_field passed), checked, into
 * the reader's aligned copies. */
static int copy_fields(prepack_reader *r, prepack_row *row, size_t T,
                       const void *c, size_t nc, const void *sq, size_t ns,
                       const void *m, size_t nm, const void *st, size_t nst,
                       const char *path, size_t f, size_t j,
                       prepack_diag *diag)
{
    size_t k = nc / 4 - 1;
    memcpy(r->cu, c, nc);
    memcpy(r->seq_ids, sq, ns);
    if (m)
        memcpy(r->mask, m, nm);
    if (st)
        memcpy(r->starts, st, nst);
    if (r->cu[0] != 0 || r->cu[k] != (int32_t)T)
        return pp_reader_corrupt(diag, path,
                                 "frame %zu row %zu: cu_seqlens must run "
                                 "from 0 to the row's %zu tokens",
                                 f, j, T);
    for (size_t i = 0; i < k; i++)
        if (r->cu[i + 1] <= r->cu[i])
            return pp_reader_corrupt(diag, path,
                                     "frame %zu row %zu: cu_seqlens not "
                                     "strictly increasing",
                                     f, j);
    uint64_t padded = padded_tokens(r->cu, k, r->m.pad_multiple);
    if (padded > r->m.max_seq_len)
        return pp_reader_corrupt(diag, path,
                                 "frame %zu row %zu: its sequences padded "
                                 "to multiples of %u take %llu tokens, more "
                                 "than max_seq_len %u",
                                 f, j, r->m.pad_multiple,
                                 (unsigned long long)padded,
                                 r->m.max_seq_len);
    row->num_tokens = T;
    row->num_seqs = k;
    row->token_dtype = r->m.dtype;
    row->input_ids = r->tokens;
    row->cu_seqlens = r->cu;
    row->seq_ids = r->seq_ids;
    row->loss_mask = m ? r->mask : NULL;
    row->seq_starts = st ? r->starts : NULL;
    return PREPACK_OK;
}

/* ---- a frame read only as far as a row (version 4) ------------------------ */

/* The frame's msgpack array header at the start of what is decompressed:
 * where its first row starts (0: more bytes needed), or SIZE_MAX when it
 * is not an array of `rows` rows. */
static size_t array_header(const unsigned char *p, size_t n, size_t rows)
{
    if (n == 0)
        return 0;
    if ((p[0] & 0xf0) == 0x90)
        return (size_t)(p[0] & 0x0f) == rows ? 1 : SIZE_MAX;
    size_t len = p[0] == 0xdc ? 3 : p[0] == 0xdd ? 5 : 0;
    if (len == 0)
        return SIZE_MAX;
    if (n < len)
        return 0;
    uint64_t count = 0;
    for (size_t i = 1; i < len; i++)
        count = count << 8 | p[i];
    return count == rows ? len : SIZE_MAX;
}

/* Decompresses up to one more step of the streamed frame (the input fed
 * st->step bytes at a time, zstd writing straight into r->dbuf), and
 * when the frame ends checks it whole: its size, its seek table checksum
 * and that no input is left. */
enum { PP_STREAM_STEP = 16 * 1024 };

static int stream_more(prepack_reader *r, prepack_diag *diag)
{
    frame_stream *st = &r->stream;
    const shard *s = &r->shards[st->shard];
    const frame_entry *e = &s->frames[st->frame];
    size_t before = st->out.pos;
    ZSTD_inBuffer in = {r->cbuf, st->in_pos + st->step < e->compressed
                                     ? st->in_pos + st->step
                                     : e->compressed,
                        st->in_pos};
    size_t ret = ZSTD_decompressStream(r->dctx, &st->out, &in);
    st->in_pos = in.pos;
    if (ZSTD_isError(ret))
        return pp_reader_corrupt(diag, s->path, "frame %zu: %s", st->frame,
                                 ZSTD_getErrorName(ret));
    if (ret == 0) {
        st->ended = 1;
        if (st->out.pos != e->decompressed || in.pos != e->compressed ||
            (uint32_t)XXH64(r->dbuf, st->out.pos, 0) != e->checksum)
            return pp_reader_corrupt(diag, s->path,
                                     "frame %zu: content does not match its "
                                     "seek table entry",
                                     st->frame);
    } else if (in.pos == e->compressed && st->out.pos == before) {
        return pp_reader_corrupt(diag, s->path, "frame %zu: cut short",
                                 st->frame);
    }
    return PREPACK_OK;
}

/* Starts streaming frame f of shard si for row j: its bytes read and
 * checked against the index, nothing decompressed yet. A read that starts
 * at row 0 is most likely reading the frame in order: it takes the whole
 * frame in one step (zstd's fastest); any other, PP_STREAM_STEP bytes of
 * input at a time, to stop soon after row j. */
static int stream_start(prepack_reader *r, size_t si, size_t f, size_t j,
                        prepack_diag *diag)
{
    int rc = read_frame_bytes(r, si, f, diag);
    if (rc != PREPACK_OK)
        return rc;
    frame_stream *st = &r->stream;
    size_t rows = rows_in_frame(r, si, f);
    if (pp_grow(r->alloc, (void **)&st->ends, &st->ends_cap, rows + 1,
                sizeof *st->ends))
        return pp_out_of_memory(diag);
    ZSTD_DCtx_reset(r->dctx, ZSTD_reset_session_only);
    st->out = (ZSTD_outBuffer){r->dbuf,
                               (size_t)r->shards[si].frames[f].decompressed + 1,
                               0};
    st->in_pos = 0;
    st->step = j == 0 ? SIZE_MAX / 2 : PP_STREAM_STEP;
    st->known = 0;
    st->ended = 0;
    st->shard = si;
    st->frame = f;
    return PREPACK_OK;
}

/* Finds the bytes of the next row of the streamed frame (st->known), or
 * decompresses more when they are not all there yet. */
static int stream_next_row(prepack_reader *r, size_t rows, prepack_diag *diag)
{
    frame_stream *st = &r->stream;
    const unsigned char *d = r->dbuf;
    size_t have = st->out.pos, got = 0;
    if (st->known == 0) { /* the array header, then row 0's start */
        size_t at = array_header(d, have, rows);
        if (at == SIZE_MAX || (at == 0 && st->ended))
            return pp_reader_corrupt(diag, r->shards[st->shard].path,
                                     "frame %zu: not a msgpack array of %zu "
                                     "rows",
                                     st->frame, rows);
        if (at == 0)
            return stream_more(r, diag);
        st->ends[0] = at;
    }
    got = pp_msgpack_span(d + st->ends[st->known], have - st->ends[st->known]);
    if (got) {
        st->ends[st->known + 1] = st->ends[st->known] + got;
        st->known++;
        return PREPACK_OK;
    }
    if (st->ended)
        return pp_reader_corrupt(diag, r->shards[st->shard].path,
                                 "frame %zu: not a msgpack array of %zu rows",
                                 st->frame, rows);
    return stream_more(r, diag);
}

/* The streamed frame read on to its end and checked whole before any
 * more of its rows is handed out: stream_more checks its size and its
 * seek table checksum, then every row must be found and the last must
 * end where the frame does. */
static int stream_whole(prepack_reader *r, size_t rows, prepack_diag *diag)
{
    frame_stream *st = &r->stream;
    int rc = PREPACK_OK;
    while (rc == PREPACK_OK && !st->ended)
        rc = stream_more(r, diag);
    while (rc == PREPACK_OK && st->known < rows)
        rc = stream_next_row(r, rows, diag);
    if (rc == PREPACK_OK && st->ends[rows] != st->out.pos)
        rc = pp_reader_corrupt(diag, r->shards[st->shard].path,
                               "frame %zu: not a msgpack array of %zu rows",
                               st->frame, rows);
    return rc;
}

/* Row j of frame f of shard si in r->unp (a msgpack map), the frame
 * decompressed only as far as that row's end: a version 4 frame's bytes
 * are checked against the shard's index before zstd sees them, so a
 * random row read decompresses half a frame on average; reading on in
 * the same frame continues where it stopped. A read that starts at row
 * 0 (reading in order), or that reaches the last row or the frame's end,
 * reads the frame to its end and checks it whole (stream_whole) before it
 * hands out a row, as the whole-frame path does. Each row is bounded
 * (pp_msgpack_span) before msgpack-c allocates for it. A frame found
 * damaged is marked so: every later read of it takes the whole-frame
 * path, which refuses it before any row. (A random read may have served
 * rows of such a frame before the damage further on was reached: their
 * bytes were the ones the index holds, which only a writer of hostile
 * sets, with every hash made to agree, can make damaged.) */
static int stream_row(prepack_reader *r, size_t si, size_t f, size_t j,
                      prepack_diag *diag)
{
    frame_stream *st = &r->stream;
    int fresh = st->shard != si || st->frame != f;
    int rc = fresh ? stream_start(r, si, f, j, diag) : PREPACK_OK;
    size_t rows = rows_in_frame(r, si, f);
    if (rc == PREPACK_OK && fresh && j == 0) /* in order: all of it */
        rc = stream_whole(r, rows, diag);
    while (rc == PREPACK_OK && st->known <= j) {
        rc = stream_next_row(r, rows, diag);
        if (rc == PREPACK_OK && (st->known == rows || st->ended))
            rc = stream_whole(r, rows, diag);
    }
    if (rc != PREPACK_OK) {
        if (rc == PREPACK_ECORRUPT)
            r->shards[si].frames[f].damaged = 1;
        st->shard = SIZE_MAX;
        return rc;
    }
    if (r->unp_live)
        msgpack_unpacked_destroy(&r->unp);
    msgpack_unpacked_init(&r->unp);
    r->unp_live = 1;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(
        &r->unp, (const char *)r->dbuf + st->ends[j],
        st->ends[j + 1] - st->ends[j], &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return pp_out_of_memory(diag);
    if (ur != MSGPACK_UNPACK_SUCCESS)
        return pp_reader_corrupt(diag, r->shards[si].path,
                                 "frame %zu row %zu: not msgpack", f, j);
    return PREPACK_OK;
}

int prepack_reader_row(prepack_reader *r, size_t i, prepack_row *row,
                       prepack_diag *diag)
{
    if (i >= r->rows)
        return pp_fail(diag, PREPACK_EINVAL, i, "row %zu of %zu", i, r->rows);
    size_t lo = 0, hi = r->m.nshards;
    while (hi - lo > 1) { /* the shard holding row i */
        size_t mid = (lo + hi) / 2;
        if (r->shards[mid].first_row <= i)
            lo = mid;
        else
            hi = mid;
    }
    shard *s = &r->shards[lo];
    if (s->damage) {
        if (diag)
            *diag = *s->damage;
        return s->damage->code;
    }
    size_t in_shard = (size_t)(i - s->first_row);
    size_t f = in_shard / r->m.rows_per_frame;
    size_t j = in_shard % r->m.rows_per_frame;
    if (indexed(r) && !s->frames[f].damaged) {
        int rc = stream_row(r, lo, f, j, diag);
        return rc == PREPACK_OK ? pp_reader_fill_row(r, &r->unp.data, row,
                                                     s->path, f, j, diag)
                                : rc;
    }
    int rc = pp_reader_load_frame(r, lo, f, diag);
    if (rc != PREPACK_OK)
        return rc;
    return pp_reader_fill_row(r, &r->unp.data.via.array.ptr[j], row, s->path, f,
                              j, diag);
}

/* Every row's cost, one pass in order: the model is the planner's
 * (prepack_row_cost, plan/balance.c); only the rows are the reader's. */
int prepack_reader_row_costs(prepack_reader *r, const prepack_cost_model *m,
                             double *out, prepack_diag *diag)
{
    if (!r || !m || (!out && prepack_reader_row_count(r)))
        return pp_invalid_argument(diag);
    for (size_t i = 0; i < prepack_reader_row_count(r); i++) {
        prepack_row row;
        int rc = prepack_reader_row(r, i, &row, diag);
        if (rc != PREPACK_OK)
            return rc;
        out[i] = prepack_row_cost(m, &row);
    }
    return PREPACK_OK;
}
