/* Reading shard sets: the manifest, each shard's seek table, and row i by
 * decompressing the one frame that holds it (the last frame is cached).
 * Everything read is checked; damage is PREPACK_ECORRUPT naming the shard,
 * the frame and the cause, never a crash. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createDCtx_advanced */
#include <zstd.h>

#include "internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shards hold little-endian arrays; this reader copies them as is"
#endif

#define SKIPPABLE_MAGIC 0x184D2A5Eu
#define SEEKABLE_MAGIC 0x8F92EAB1u

typedef struct frame_entry {
    uint64_t offset;
    uint32_t compressed, decompressed, checksum;
} frame_entry;

typedef struct shard {
    char path[4400];
    uint64_t first_row, rows;
    frame_entry *frames;
    size_t nframes;
    prepack_diag *damage; /* open_damaged: why it failed its open, or NULL */
} shard;

struct prepack_reader {
    char dir[4096];
    prepack_allocator alloc_copy;  /* the caller's, when one was given */
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
    msgpack_unpacked unp;
    int unp_live;
    /* aligned copies of the row handed out */
    void *tokens;
    int32_t *cu;
    uint64_t *seq_ids;
    uint8_t *mask;
    uint32_t *starts;
    pp_batch_buffers *batch;
};

static uint32_t le32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static int corrupt(prepack_diag *diag, const char *path, const char *fmt,
                   ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int corrupt(prepack_diag *diag, const char *path, const char *fmt,
                   ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD, "%s: %s", path,
                   msg);
}

/* ---- opening ----------------------------------------------------------------- */

/* Reads and checks a shard's seek table: frames that tile the file up to
 * the table, one per rows_per_frame rows. */
static int read_seek_table(prepack_reader *r, shard *s, uint64_t size,
                           int fd, prepack_diag *diag)
{
    unsigned char foot[9];
    if (size < 17 || pp_read_at(fd, foot, 9, size - 9) != 0)
        return corrupt(diag, s->path, "too short for a seek table");
    uint32_t n = le32(foot);
    if (le32(foot + 5) != SEEKABLE_MAGIC || foot[4] != 0x80)
        return corrupt(diag, s->path, "no seek table at the end (cut short?)");
    uint64_t table = (uint64_t)n * 12 + 9 + 8;
    uint64_t want = (s->rows + r->m.rows_per_frame - 1) / r->m.rows_per_frame;
    if (table > size || n != want)
        return corrupt(diag, s->path,
                       "seek table lists %u frames, %llu rows need %llu", n,
                       (unsigned long long)s->rows, (unsigned long long)want);
    unsigned char *t = pp_alloc(r->alloc, (size_t)table, 1);
    s->frames = pp_calloc(r->alloc, n ? n : 1, sizeof *s->frames);
    if (!t || !s->frames) {
        pp_free(r->alloc, t);
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    }
    int rc = PREPACK_OK;
    if (pp_read_at(fd, t, (size_t)table, size - table) != 0)
        rc = corrupt(diag, s->path, "cannot read the seek table");
    else if (le32(t) != SKIPPABLE_MAGIC || le32(t + 4) != table - 8)
        rc = corrupt(diag, s->path, "bad seek table frame header");
    /* No frame may promise more than rows_per_frame rows of L tokens:
     * a hostile seek table cannot make the reader allocate beyond that. */
    uint64_t w = r->width, L = r->m.max_seq_len;
    uint64_t most = (uint64_t)r->m.rows_per_frame *
                        (L * (w + 4 + 8 + 4 + 1) + 4 + 128) + 16;
    uint64_t at = 0;
    for (uint32_t i = 0; rc == PREPACK_OK && i < n; i++) {
        const unsigned char *e = t + 8 + 12 * (size_t)i;
        frame_entry *f = &s->frames[i];
        f->offset = at;
        f->compressed = le32(e);
        f->decompressed = le32(e + 4);
        f->checksum = le32(e + 8);
        at += f->compressed;
        if (f->decompressed > most)
            rc = corrupt(diag, s->path,
                         "frame %u claims %u bytes, more than %llu rows of "
                         "%llu tokens can hold",
                         i, f->decompressed,
                         (unsigned long long)r->m.rows_per_frame,
                         (unsigned long long)L);
    }
    if (rc == PREPACK_OK && at != size - table)
        rc = corrupt(diag, s->path,
                     "frames cover %llu bytes, the file holds %llu before "
                     "its seek table",
                     (unsigned long long)at,
                     (unsigned long long)(size - table));
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
    int fd = open(s->path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", s->path, strerror(e));
    }
    int rc = PREPACK_OK;
    if ((uint64_t)st.st_size != info->bytes)
        rc = corrupt(diag, s->path, "%llu bytes, the manifest says %llu",
                     (unsigned long long)st.st_size,
                     (unsigned long long)info->bytes);
    if (rc == PREPACK_OK)
        rc = read_seek_table(r, s, (uint64_t)st.st_size, fd, diag);
    close(fd);
    return rc;
}

static ZSTD_DCtx *create_dctx(const prepack_allocator *a)
{
    if (!a)
        return ZSTD_createDCtx();
    ZSTD_customMem mem = {pp_zstd_alloc, pp_zstd_free, (void *)a};
    return ZSTD_createDCtx_advanced(mem);
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
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    *s->damage = *why;
    return PREPACK_OK;
}

int prepack_reader_open(prepack_reader **out, const char *dir,
                        const prepack_reader_options *o, prepack_diag *diag)
{
    if (!out || !dir)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "invalid argument");
    *out = NULL;
    const prepack_allocator *a = o ? o->allocator : NULL;
    if (pp_allocator_incomplete(a))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "allocator needs all three functions");
    prepack_reader *r = pp_calloc(a, 1, sizeof *r);
    if (!r)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    if (a) {
        r->alloc_copy = *a;
        r->alloc = &r->alloc_copy;
    }
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    r->fd = -1;
    r->cached_shard = r->fd_shard = SIZE_MAX;
    char path[4400];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    int rc = pp_manifest_read(path, r->alloc, &r->m, diag);
    if (rc == PREPACK_OK) {
        const prepack_allocator *ra = r->alloc;
        r->width = r->m.dtype == PREPACK_DTYPE_UINT16 ? 2 : 4;
        r->shards = pp_calloc(ra, r->m.nshards ? r->m.nshards : 1,
                              sizeof *r->shards);
        size_t L = r->m.max_seq_len;
        r->tokens = pp_alloc(ra, L, r->width);
        r->cu = pp_alloc(ra, L + 1, sizeof *r->cu);
        r->seq_ids = pp_alloc(ra, L, sizeof *r->seq_ids);
        r->mask = pp_alloc(ra, L, 1);
        r->starts = pp_alloc(ra, L, sizeof *r->starts);
        r->dctx = create_dctx(ra);
        if (!r->shards || !r->tokens || !r->cu || !r->seq_ids || !r->mask ||
            !r->starts || !r->dctx)
            rc = pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                         "out of memory");
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
    pp_batch_buffers_free(a, r->batch);
    prepack_allocator copy = r->alloc_copy; /* r itself goes with it */
    pp_free(a ? &copy : NULL, r);
}

int prepack_reader_batch(prepack_reader *r, const size_t *rows, size_t n,
                         const prepack_batch_options *o, prepack_batch *out,
                         prepack_diag *diag)
{
    if (!r || (!rows && n) || !out)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "invalid argument");
    return pp_reader_batch(r, r->alloc, &r->batch, rows, n, o, out, diag);
}

size_t prepack_reader_row_count(const prepack_reader *r)
{
    return r->rows;
}

uint32_t prepack_reader_max_seq_len(const prepack_reader *r)
{
    return r->m.max_seq_len;
}

prepack_dtype prepack_reader_token_dtype(const prepack_reader *r)
{
    return r->m.dtype;
}

/* ---- frames ------------------------------------------------------------------- */

/* Decompresses, checks and parses frame f of shard s into r->unp. */
static int load_frame(prepack_reader *r, size_t si, size_t f,
                      prepack_diag *diag)
{
    if (r->cached_shard == si && r->cached_frame == f)
        return PREPACK_OK;
    shard *s = &r->shards[si];
    frame_entry *e = &s->frames[f];
    r->cached_shard = SIZE_MAX;
    if (r->fd_shard != si) {
        if (r->fd >= 0)
            close(r->fd);
        r->fd = open(s->path, O_RDONLY);
        r->fd_shard = r->fd >= 0 ? si : SIZE_MAX;
        if (r->fd < 0)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "cannot open %s: %s", s->path, strerror(errno));
    }
    if (pp_grow(r->alloc, (void **)&r->cbuf, &r->cbuf_cap, e->compressed, 1) ||
        pp_grow(r->alloc, (void **)&r->dbuf, &r->dbuf_cap,
                (size_t)e->decompressed + 1, 1))
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    if (pp_read_at(r->fd, r->cbuf, e->compressed, e->offset) != 0)
        return corrupt(diag, s->path, "frame %zu: cannot read", f);
    size_t n = ZSTD_decompressDCtx(r->dctx, r->dbuf, (size_t)e->decompressed + 1,
                                   r->cbuf, e->compressed);
    if (ZSTD_isError(n))
        return corrupt(diag, s->path, "frame %zu: %s", f,
                       ZSTD_getErrorName(n));
    if (n != e->decompressed ||
        (uint32_t)XXH64(r->dbuf, n, 0) != e->checksum)
        return corrupt(diag, s->path,
                       "frame %zu: content does not match its seek table "
                       "entry",
                       f);
    if (r->unp_live)
        msgpack_unpacked_destroy(&r->unp);
    msgpack_unpacked_init(&r->unp);
    r->unp_live = 1;
    size_t off = 0;
    uint64_t rows = s->rows - (uint64_t)f * r->m.rows_per_frame;
    if (rows > r->m.rows_per_frame)
        rows = r->m.rows_per_frame;
    /* counts checked against the bytes first: msgpack-c allocates from
     * them as they are */
    msgpack_unpack_return ur =
        pp_msgpack_span(r->dbuf, n) != n
            ? MSGPACK_UNPACK_PARSE_ERROR
            : msgpack_unpack_next(&r->unp, (const char *)r->dbuf, n, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory");
    if (ur != MSGPACK_UNPACK_SUCCESS || off != n || r->unp.data.type != MSGPACK_OBJECT_ARRAY ||
        r->unp.data.via.array.size != rows)
        return corrupt(diag, s->path,
                       "frame %zu: not a msgpack array of %llu rows", f,
                       (unsigned long long)rows);
    r->cached_shard = si;
    r->cached_frame = f;
    return PREPACK_OK;
}

/* ---- rows ---------------------------------------------------------------------- */

/* The bin under `key` in a row map, or NULL (size in *n). */
static const void *field(const msgpack_object *map, const char *key,
                         size_t *n)
{
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR &&
            kv->key.via.str.size == klen &&
            memcmp(kv->key.via.str.ptr, key, klen) == 0) {
            if (kv->val.type != MSGPACK_OBJECT_BIN)
                return NULL;
            *n = kv->val.via.bin.size;
            return kv->val.via.bin.ptr;
        }
    }
    return NULL;
}

static int fill_row(prepack_reader *r, const msgpack_object *map,
                    prepack_row *row, const char *path, size_t f, size_t j,
                    prepack_diag *diag)
{
    size_t nt = 0, nc = 0, ns = 0, nm = 0, nst = 0;
    const void *t = NULL, *c = NULL, *sq = NULL, *m = NULL, *st = NULL;
    if (map->type == MSGPACK_OBJECT_MAP) {
        t = field(map, "input_ids", &nt);
        c = field(map, "cu_seqlens", &nc);
        sq = field(map, "seq_ids", &ns);
        m = field(map, "loss_mask", &nm);
        st = field(map, "seq_starts", &nst);
    }
    size_t T = nt / r->width, k = nc / 4 ? nc / 4 - 1 : 0;
    if (!t || !c || !sq || nt % r->width || nc % 4 || T > r->m.max_seq_len ||
        k == 0 || k > r->m.max_seq_len || ns != 8 * k ||
        (m && nm != T) || (st && nst != 4 * k))
        return corrupt(diag, path, "frame %zu row %zu: bad fields", f, j);
    memcpy(r->tokens, t, nt);
    memcpy(r->cu, c, nc);
    memcpy(r->seq_ids, sq, ns);
    if (m)
        memcpy(r->mask, m, nm);
    if (st)
        memcpy(r->starts, st, nst);
    if (r->cu[0] != 0 || r->cu[k] != (int32_t)T)
        return corrupt(diag, path, "frame %zu row %zu: cu_seqlens must run "
                       "from 0 to the row's %zu tokens", f, j, T);
    for (size_t i = 0; i < k; i++)
        if (r->cu[i + 1] <= r->cu[i])
            return corrupt(diag, path, "frame %zu row %zu: cu_seqlens not "
                           "strictly increasing", f, j);
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
    int rc = load_frame(r, lo, f, diag);
    if (rc != PREPACK_OK)
        return rc;
    return fill_row(r, &r->unp.data.via.array.ptr[j], row, s->path, f, j,
                    diag);
}

/* ---- verifying ------------------------------------------------------------------ */

size_t prepack_reader_shard_count(const prepack_reader *r)
{
    return r->m.nshards;
}

uint64_t prepack_reader_shard_rows(const prepack_reader *r, size_t i)
{
    return r->shards[i].rows;
}

static int check_file_hash(const prepack_reader *r, const shard *s,
                           uint64_t want, prepack_diag *diag)
{
    int fd = open(s->path, O_RDONLY);
    if (fd < 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s: %s", s->path, strerror(errno));
    XXH64_state_t state, *h = &state;
    XXH64_reset(h, 0);
    unsigned char *buf = pp_alloc(r->alloc, 1 << 20, 1);
    int rc = buf ? PREPACK_OK
                 : pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                           "out of memory");
    ssize_t got;
    while (rc == PREPACK_OK && (got = read(fd, buf, 1 << 20)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                         "reading %s: %s", s->path, strerror(errno));
        else
            XXH64_update(h, buf, (size_t)got);
    }
    if (rc == PREPACK_OK && XXH64_digest(h) != want)
        rc = corrupt(diag, s->path, "xxh64 %016llx, the manifest says %016llx",
                     (unsigned long long)XXH64_digest(h),
                     (unsigned long long)want);
    pp_free(r->alloc, buf);
    close(fd);
    return rc;
}

/* Whether `name` is the file of one of the manifest's shards. */
static int listed(const prepack_reader *r, const char *name)
{
    if (strcmp(name, "manifest.json") == 0)
        return 1;
    for (size_t i = 0; i < r->m.nshards; i++)
        if (strcmp(name, r->m.shards[i].file) == 0)
            return 1;
    return 0;
}

/* Shard-set files in the directory that the manifest does not list: a
 * stray shard or a temporary file left by another run. Each is reported;
 * returns how many. */
static size_t report_strays(const prepack_reader *r,
                            void (*report)(void *, const prepack_diag *),
                            void *opaque)
{
    DIR *dir = opendir(r->dir);
    if (!dir)
        return 0; /* the shards were opened: nothing more to learn here */
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (!pp_is_set_file(e->d_name) || listed(r, e->d_name))
            continue;
        prepack_diag d;
        memset(&d, 0, sizeof d);
        pp_fail(&d, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                "%s/%s: not listed in the manifest (left by another run?)",
                r->dir, e->d_name);
        n++;
        if (report)
            report(opaque, &d);
    }
    closedir(dir);
    return n;
}

size_t prepack_reader_verify(prepack_reader *r,
                             void (*report)(void *opaque,
                                            const prepack_diag *d),
                             void *opaque)
{
    size_t problems = 0;
    prepack_diag d;
#define PROBLEM()                                                            \
    do {                                                                     \
        problems++;                                                          \
        if (report)                                                          \
            report(opaque, &d);                                              \
    } while (0)
    for (size_t si = 0; si < r->m.nshards; si++) {
        shard *s = &r->shards[si];
        if (s->damage) { /* found at open: its frames cannot be trusted */
            d = *s->damage;
            PROBLEM();
            continue;
        }
        memset(&d, 0, sizeof d);
        if (check_file_hash(r, s, r->m.shards[si].xxh64, &d) != PREPACK_OK)
            PROBLEM();
        for (size_t f = 0; f < s->nframes; f++) {
            memset(&d, 0, sizeof d);
            if (load_frame(r, si, f, &d) != PREPACK_OK) {
                PROBLEM();
                continue;
            }
            uint32_t n = r->unp.data.via.array.size;
            for (uint32_t j = 0; j < n; j++) {
                prepack_row row;
                memset(&d, 0, sizeof d);
                if (fill_row(r, &r->unp.data.via.array.ptr[j], &row, s->path,
                             f, j, &d) != PREPACK_OK)
                    PROBLEM();
            }
        }
    }
#undef PROBLEM
    return problems + report_strays(r, report, opaque);
}
