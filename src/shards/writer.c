/* Writing shard sets: rows as msgpack maps, rows_per_frame of them in each
 * zstd frame, a seek table closing each shard, the manifest last. Every
 * file is written under a temporary name, fsynced and renamed, so a run
 * stopped at any moment leaves no manifest or a complete set. */
#define _GNU_SOURCE /* renameat2, RENAME_EXCHANGE, mkdtemp */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t inside the writer */
#include <xxhash.h>
#include <zstd.h>

#include "common/alloc.h"
#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "shards/compress_pool.h"
#include "shards/id_table.h"
#include "shards/manifest.h"
#include "shards/part.h"
#include "shards/shard_format.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shards hold little-endian arrays; this writer copies host memory"
#endif

/* A frame submitted for compression: its rows and tokens, and whether it
 * is the last of its shard (shard_rows reached, or the set's end). */
typedef struct frame_meta {
    uint32_t rows;
    uint64_t tokens;
    int ends_shard;
} frame_meta;

typedef struct seek_entry {
    uint32_t compressed, decompressed, checksum;
    uint64_t hash; /* XXH64 of the compressed bytes (version 4's index) */
} seek_entry;

/* A growing byte buffer msgpack packs into, through the writer's
 * allocator (msgpack's own sbuffer would use malloc). */
typedef struct frame_buffer {
    unsigned char *data;
    size_t size, cap;
    const prepack_allocator *alloc;
} frame_buffer;

static int frame_append(void *opaque, const char *p, size_t n)
{
    frame_buffer *f = opaque;
    if (n > SIZE_MAX - f->size || pp_grow(f->alloc, (void **)&f->data, &f->cap,
                                          f->size + n, 1) != PREPACK_OK)
        return -1;
    memcpy(f->data + f->size, p, n);
    f->size += n;
    return 0;
}

/* The rows of a set's first frame, copied and held back until they have
 * made the id table that codes them (version 4). */
typedef struct held_row {
    prepack_row row;              /* pointers unset: offsets below */
    size_t ids, cu, seq_ids, mask, starts; /* into bytes; SIZE_MAX: none */
} held_row;

typedef struct held_rows {
    unsigned char *bytes;
    size_t size, cap;
    held_row *rows;
    size_t n, cap_rows;
} held_rows;

struct prepack_writer {
    char dir[4096];
    uint32_t max_seq_len;
    prepack_dtype dtype;
    uint32_t rows_per_frame;
    uint64_t shard_rows;  /* rows a shard, or 0 (then shard_bytes) */
    uint64_t shard_bytes; /* close a shard once it holds this many bytes */
    int level;
    prepack_allocator alloc_copy;   /* the caller's, when one was given */
    const prepack_allocator *alloc; /* &alloc_copy or NULL (libc) */
    pp_pool *pool;                  /* compresses frames, maybe on workers */
    frame_buffer frame;             /* the frame being filled */
    msgpack_packer pk;
    uint32_t frame_rows;
    uint64_t frame_tokens;
    uint64_t rows_in_shard; /* rows handed out for the current shard */
    /* what each frame in the pool holds, in submission order (the pool
     * hands results back in that order) */
    frame_meta *pending;
    size_t pending_head, pending_count, pending_cap;
    /* the shard being written */
    int fd;
    char tmp_path[4200];
    char target[4096]; /* overwriting: where the set goes when finished */
    uint64_t shard_rows_done, shard_tokens, shard_bytes_written;
    XXH64_state_t hash;
    seek_entry *seek;
    size_t nseek, seek_cap;
    /* finished shards */
    pp_shard_info *shards;
    size_t nshards, shards_cap;
    uint64_t rows, tokens, bytes, raw_bytes;
    uint64_t first_shard; /* a part of a set: the first shard's number */
    int references;       /* plan-only: rows hold references, not tokens */
    /* a set that holds its tokens (version 4): its id table, one row's
     * id codes, and the first frame's rows until the table is made */
    pp_id_table *ids;
    unsigned char *codes;
    held_rows held;
    int finished;
};

/* ---- files ------------------------------------------------------------- */

static int io_fail(prepack_diag *diag, const char *what, const char *path)
{
    return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "%s %s: %s", what,
                   path, strerror(errno));
}

/* dir opened as a directory, never through a symbolic link (issue 26,
 * rule 2: nothing prepack creates, renames or deletes is reached through
 * one); the descriptor, or -1 (errno, ELOOP for a link). */
static int open_dir_nofollow(const char *dir)
{
    char buf[4096];
    const char *path = pp_dir_path(dir, buf, sizeof buf);
    if (!path)
        return -1;
    return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Why pp_dir_path refused dir. */
static int dir_path_fail(const char *dir, prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                   errno == ELOOP
                       ? "%s ends in '..': give the directory by a path "
                         "that names it"
                       : "directory name too long: %s",
                   dir);
}

/* Why open_dir_nofollow failed: O_DIRECTORY|O_NOFOLLOW on a link says
 * ENOTDIR or ELOOP, so a link is told by lstat. */
static int dir_open_fail(prepack_diag *diag, const char *dir)
{
    char buf[4096];
    int err = errno;
    const char *path = pp_dir_path(dir, buf, sizeof buf);
    struct stat st;
    if ((err == ELOOP || err == ENOTDIR) && path && lstat(path, &st) == 0 &&
        S_ISLNK(st.st_mode))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s is a symbolic link: prepack writes a set in the "
                       "directory itself, never through a link (give the "
                       "path it points to)",
                       dir);
    errno = err;
    return io_fail(diag, "cannot open", dir);
}

/* Why a directory in use is refused (none: PREPACK_OK): anything but a
 * shard set's files always, with how many and one of them named, since
 * overwrite replaces only a set; a set without overwrite. "--overwrite"
 * is the command's word; the Python package says overwrite=True
 * (_native.py's python_words). */
static int in_use_fail(const char *dir, int overwrite, size_t others,
                       const char *other, prepack_diag *diag)
{
    if (others)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s is not empty: it holds %zu %s not of a shard "
                       "set, e.g. '%s': choose another output directory or "
                       "empty it (--overwrite replaces only a shard set)",
                       dir, others, others == 1 ? "entry" : "entries",
                       other);
    if (!overwrite)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s is not empty: it holds a shard set (--overwrite "
                       "replaces it)",
                       dir);
    return PREPACK_OK;
}

/* Whether dir holds anything. With overwrite, whatever it holds must be
 * a shard set's files (the manifest, shards, temporaries): prepack never
 * replaces what it did not write. */
static int dir_in_use(const char *dir, int overwrite, int *in_use,
                      prepack_diag *diag)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return io_fail(diag, "cannot create", dir);
    int fd = open_dir_nofollow(dir);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int rc = dir_open_fail(diag, dir);
        if (fd >= 0)
            close(fd);
        return rc;
    }
    /* every entry counted, so that the refusal says what dir holds */
    struct dirent *e;
    size_t entries = 0, others = 0;
    char other[256] = "";
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        entries++;
        if (!pp_is_set_file(e->d_name) && others++ == 0)
            snprintf(other, sizeof other, "%s", e->d_name);
    }
    for (char *c = other; *c; c++) /* one line, whatever the name holds */
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    closedir(d);
    *in_use = entries > 0;
    return entries ? in_use_fail(dir, overwrite, others, other, diag)
                   : PREPACK_OK;
}

/* Overwriting: the new set is written in a fresh directory beside dir
 * (.NAME.prepack-<6 random characters>, same parent, so the same file system) and
 * swapped in whole by prepack_writer_finish; until then dir keeps the
 * old set, verified as it was. mkdtemp makes the directory with mkdir,
 * which never reuses an existing name nor follows a link planted there. */
static int make_staging_dir(const char *dir, char *out, size_t cap,
                            prepack_diag *diag)
{
    size_t n = strlen(dir); /* pp_dir_path's: no trailing "/" or "/." */
    if (!strcmp(dir, ".") || !strcmp(dir, "/"))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s: a set is replaced by writing the new one beside "
                       "it and renaming it into place, so give the "
                       "directory by its name (e.g. ../NAME), not as '%s'",
                       dir, dir);
    size_t slash = n;
    while (slash > 0 && dir[slash - 1] != '/')
        slash--;
    int len = snprintf(out, cap, "%.*s.%.*s.prepack-XXXXXX", (int)slash, dir,
                       (int)(n - slash), dir + slash);
    if (len < 0 || (size_t)len >= cap)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s: path too long", dir);
    if (!mkdtemp(out))
        return io_fail(diag, "cannot create a directory beside", dir);
    /* the new set takes the old one's mode, not mkdtemp's 0700: a set
     * readable by a group stays so when it is packed again */
    struct stat st;
    if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        chmod(out, st.st_mode & 07777);
    return PREPACK_OK;
}

/* Removes the shard-set files in dir, then dir itself: through a
 * descriptor opened without following a link, each name unlinked
 * relative to it (a link named like a shard goes, not what it names),
 * nothing recursed into. */
static void remove_set_dir(const char *dir)
{
    int fd = open_dir_nofollow(dir);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (pp_is_set_file(e->d_name))
            unlinkat(fd, e->d_name, 0);
    closedir(d);
    rmdir(dir); /* rmdir never follows a link: one there stays */
}

/* A temporary file created new at path: O_EXCL|O_NOFOLLOW, so never
 * through a link planted there nor into a file someone else holds open;
 * a leftover of an earlier run (or a link) at that name is unlinked
 * first, which removes the name only. The descriptor, or -1 (errno). */
static int create_tmp(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return -1;
    return open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0666);
}

/* Puts the finished set in staging at target's path in one step (the
 * old set moves to staging's path), then removes the old set. Where the
 * file system cannot exchange two names, two renames: between them
 * target's path is briefly missing, both sets whole on disk. */
static int swap_into_place(const char *staging, const char *target,
                           prepack_diag *diag)
{
    if (renameat2(AT_FDCWD, staging, AT_FDCWD, target, RENAME_EXCHANGE) != 0) {
        if (errno != EINVAL && errno != ENOSYS)
            return io_fail(diag, "cannot swap the new set into", target);
        char old[4400];
        snprintf(old, sizeof old, "%s.old", staging);
        if (rename(target, old) != 0)
            return io_fail(diag, "cannot move aside", target);
        if (rename(staging, target) != 0) {
            int rc = io_fail(diag, "cannot rename the new set to", target);
            rename(old, target); /* put the old set back */
            return rc;
        }
        remove_set_dir(old);
    } else {
        remove_set_dir(staging); /* the old set, now at staging's path */
    }
    char parent[4200];
    snprintf(parent, sizeof parent, "%s/..", target);
    pp_sync_dir(parent);
    return PREPACK_OK;
}

/* ---- creating ------------------------------------------------------------- */

/* The largest rows_per_frame <= want whose frames stay under 4 GiB
 * decompressed (a seek-table entry holds 32 bits). */
static uint32_t frame_rows_that_fit(uint32_t want, uint32_t L, unsigned w)
{
    uint64_t fit = (UINT64_C(0xFFFFFFFF) - pp_frame_bytes_bound(0, L, w)) /
                   pp_row_bytes_bound(L, w);
    return fit < want ? (uint32_t)(fit ? fit : 1) : want;
}

/* rows_per_frame 0: rows of L tokens that hold about
 * PREPACK_DEFAULT_FRAME_TOKENS (2^20, at least one row), whatever the
 * width: 1.3-1.5 MiB of id codes on real text (format version 4), the
 * size at which independent frames of repetitive text come within 1.05x
 * of one zstd stream of the same ids (docs/BENCHMARKS.md). */
static uint32_t default_frame_rows(uint32_t L)
{
    uint64_t rows = PREPACK_DEFAULT_FRAME_TOKENS / L;
    return rows ? (uint32_t)rows : 1;
}

/* The most bytes a token takes in a row of this writer's sets: an id
 * code (at most the width and an escape byte), or a plan-only row's
 * reference. */
static unsigned stored_token_bytes(unsigned width, int references)
{
    return references ? PP_REF_BYTES
                      : pp_stored_token_bound(pp_set_version(0), width);
}

static int create(prepack_writer **out, const char *dir, uint32_t max_seq_len,
                  prepack_dtype token_dtype, const prepack_writer_options *o,
                  int part, prepack_diag *diag);

int prepack_writer_create(prepack_writer **out, const char *dir,
                          uint32_t max_seq_len, prepack_dtype token_dtype,
                          const prepack_writer_options *o, prepack_diag *diag)
{
    return create(out, dir, max_seq_len, token_dtype, o, 0, diag);
}

int pp_writer_create_part(prepack_writer **out, const char *dir,
                          uint32_t max_seq_len, prepack_dtype token_dtype,
                          const prepack_writer_options *o, uint64_t first_shard,
                          prepack_diag *diag)
{
    int rc = create(out, dir, max_seq_len, token_dtype, o, 1, diag);
    if (rc == PREPACK_OK)
        (*out)->first_shard = first_shard;
    return rc;
}

/* part: dir exists and holds the job's other files; shards only. */
static int create(prepack_writer **out, const char *dir, uint32_t max_seq_len,
                  prepack_dtype token_dtype, const prepack_writer_options *o,
                  int part, prepack_diag *diag)
{
    prepack_writer_options none = {0};
    if (!out || !dir || max_seq_len == 0 ||
        (token_dtype != PREPACK_DTYPE_UINT16 &&
         token_dtype != PREPACK_DTYPE_UINT32))
        return pp_invalid_argument(diag);
    *out = NULL;
    if (!o)
        o = &none;
    /* "DIR/." and "DIR/" name DIR: one spelling, so that the link check,
     * the staging directory beside DIR and the swap all see DIR itself */
    char dir_buf[4096];
    const char *dir_path = pp_dir_path(dir, dir_buf, sizeof dir_buf);
    if (!dir_path)
        return dir_path_fail(dir, diag);
    dir = dir_path;
    if (o->shard_rows && o->shard_bytes)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "shard_rows and shard_bytes: give one of the two");
    int rc = pp_check_allocator(o->allocator, diag);
    if (rc != PREPACK_OK)
        return rc;
    unsigned w = (unsigned)prepack_dtype_width(token_dtype);
    unsigned most = o->references ? w : stored_token_bytes(w, 0);
    if ((uint64_t)max_seq_len * most >= UINT64_C(0xFFFFFFFF))
        return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "max_seq_len %u x %u bytes a token does not fit a "
                       "msgpack bin (under 2^32 bytes)",
                       max_seq_len, most);
    int in_use = 0;
    char staging[4096] = "";
    if (part && o->shard_bytes)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "shard_bytes decides each shard on the compressed "
                       "sizes of all the frames before it: a set written "
                       "in parts takes shard_rows");
    rc = part ? PREPACK_OK : dir_in_use(dir, o->overwrite, &in_use, diag);
    if (rc == PREPACK_OK && in_use)
        rc = make_staging_dir(dir, staging, sizeof staging, diag);
    if (rc != PREPACK_OK)
        return rc;
    prepack_writer *wr = pp_calloc(o->allocator, 1, sizeof *wr);
    if (!wr) {
        if (*staging)
            rmdir(staging);
        return pp_out_of_memory(diag);
    }
    snprintf(wr->dir, sizeof wr->dir, "%s", *staging ? staging : dir);
    if (*staging)
        snprintf(wr->target, sizeof wr->target, "%s", dir);
    wr->alloc = pp_allocator_keep(&wr->alloc_copy, o->allocator);
    wr->max_seq_len = max_seq_len;
    wr->dtype = token_dtype;
    wr->references = o->references;
    wr->rows_per_frame = frame_rows_that_fit(
        o->rows_per_frame ? o->rows_per_frame
                          : default_frame_rows(max_seq_len),
        max_seq_len, stored_token_bytes(w, o->references));
    /* exactly shard_rows rows a shard (the last frame of each may be
     * short), or, with shard_bytes, as many frames as reach that size */
    wr->shard_bytes = o->shard_bytes;
    wr->shard_rows = o->shard_bytes ? 0
                     : o->shard_rows ? o->shard_rows
                                     : PREPACK_DEFAULT_SHARD_ROWS;
    wr->level = o->level ? o->level : PREPACK_DEFAULT_ZSTD_LEVEL;
    wr->fd = -1;
    if (!o->references &&
        (!(wr->ids = pp_id_table_create(w, wr->alloc)) ||
         !(wr->codes = pp_alloc(wr->alloc, max_seq_len, w + 1)))) {
        prepack_writer_free(wr);
        return pp_out_of_memory(diag);
    }
    wr->frame.alloc = wr->alloc;
    msgpack_packer_init(&wr->pk, &wr->frame, frame_append);
    if (pp_pool_create(&wr->pool, o->threads, wr->level, wr->alloc)) {
        prepack_writer_free(wr);
        return pp_out_of_memory(diag);
    }
    *out = wr;
    return PREPACK_OK;
}

void prepack_writer_free(prepack_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp_path);
    }
    /* Unfinished: the shards it completed are of no use without a
     * manifest; leave the directory as the run found it (emptied). */
    for (size_t i = 0; !w->finished && i < w->nshards; i++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", w->dir, w->shards[i].file);
        unlink(path);
    }
    if (!w->finished && *w->target) /* the staging dir: the old set stays */
        remove_set_dir(w->dir);
    pp_pool_free(w->pool);
    pp_free(w->alloc, w->frame.data);
    pp_free(w->alloc, w->seek);
    pp_free(w->alloc, w->shards);
    pp_free(w->alloc, w->pending);
    pp_id_table_free(w->ids);
    pp_free(w->alloc, w->codes);
    pp_free(w->alloc, w->held.bytes);
    pp_free(w->alloc, w->held.rows);
    prepack_allocator copy = w->alloc_copy; /* w itself goes with it */
    pp_free(w->alloc ? &copy : NULL, w);
}

uint64_t prepack_writer_bytes(const prepack_writer *w)
{
    return w->bytes + w->shard_bytes_written;
}

/* ---- shards and frames ------------------------------------------------------ */

static int shard_write(prepack_writer *w, const void *p, size_t n,
                       prepack_diag *diag)
{
    if (pp_write_all(w->fd, p, n) != 0)
        return io_fail(diag, "writing", w->tmp_path);
    XXH64_update(&w->hash, p, n);
    w->shard_bytes_written += n;
    return PREPACK_OK;
}

static int open_shard(prepack_writer *w, prepack_diag *diag)
{
    char name[PP_SHARD_NAME_MAX];
    pp_shard_name(name, w->first_shard + w->nshards);
    snprintf(w->tmp_path, sizeof w->tmp_path, "%s/%s" PP_TMP_SUFFIX, w->dir,
             name);
    w->fd = create_tmp(w->tmp_path);
    if (w->fd < 0)
        return io_fail(diag, "cannot create", w->tmp_path);
    XXH64_reset(&w->hash, 0);
    w->shard_rows_done = w->shard_tokens = w->shard_bytes_written = 0;
    w->nseek = 0;
    return PREPACK_OK;
}

static int end_shard(prepack_writer *w, prepack_diag *diag);
static int release_held(prepack_writer *w, prepack_diag *diag);

/* Appends a compressed frame to the current shard (opening one if none
 * is), in submission order, and ends the shard after it when the frame
 * is its last or the shard has reached shard_bytes. Deciding here, on
 * the frames' compressed sizes in order, keeps the split the same for
 * any thread count. */
static int write_result(prepack_writer *w, const pp_frame_result *f,
                        prepack_diag *diag)
{
    if (f->error)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "compressing a frame failed: %s",
                       ZSTD_getErrorName(f->error));
    frame_meta m = w->pending[w->pending_head++];
    w->pending_count--;
    int rc = w->fd < 0 ? open_shard(w, diag) : PREPACK_OK;
    if (rc == PREPACK_OK &&
        pp_grow(w->alloc, (void **)&w->seek, &w->seek_cap, w->nseek + 1,
                sizeof *w->seek) != PREPACK_OK)
        rc = pp_out_of_memory(diag);
    if (rc != PREPACK_OK)
        return rc;
    seek_entry *e = &w->seek[w->nseek++];
    e->compressed = (uint32_t)f->size;
    e->decompressed = (uint32_t)f->raw_size;
    e->checksum = f->checksum;
    e->hash = f->hash;
    w->raw_bytes += f->raw_size;
    rc = shard_write(w, f->data, f->size, diag);
    if (rc != PREPACK_OK)
        return rc;
    w->shard_rows_done += m.rows;
    w->shard_tokens += m.tokens;
    if (m.ends_shard || (w->shard_bytes && w->shard_bytes_written >=
                                               w->shard_bytes))
        rc = end_shard(w, diag);
    return rc;
}

/* Writes finished frames: all of them when wait, else those ready. */
static int drain(prepack_writer *w, int wait, prepack_diag *diag)
{
    pp_frame_result f;
    int rc = PREPACK_OK;
    while (rc == PREPACK_OK && !pp_pool_empty(w->pool) &&
           pp_pool_take(w->pool, wait, &f))
        rc = write_result(w, &f, diag);
    return rc;
}

/* Hands the rows gathered so far, as one frame, to the compressors;
 * ends_shard: the shard ends with it. */
static int flush_frame(prepack_writer *w, int ends_shard, prepack_diag *diag)
{
    if (w->frame_rows == 0)
        return PREPACK_OK;
    if (w->ids && !pp_id_table_made(w->ids)) { /* the set's first frame */
        int rc = release_held(w, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    if (w->pending_head > 0 && w->pending_head >= w->pending_cap / 2) {
        memmove(w->pending, w->pending + w->pending_head,
                w->pending_count * sizeof *w->pending);
        w->pending_head = 0;
    }
    if (pp_grow(w->alloc, (void **)&w->pending, &w->pending_cap,
                w->pending_head + w->pending_count + 1,
                sizeof *w->pending) != PREPACK_OK)
        return pp_out_of_memory(diag);
    /* The frame began with a 5-byte msgpack array 32 header (0xdd and a
     * big-endian count) whose count is known only now: patch it in. */
    pp_store_be32((unsigned char *)w->frame.data + 1, w->frame_rows);
    int rc = PREPACK_OK;
    pp_frame_result f;
    while (rc == PREPACK_OK && pp_pool_full(w->pool) &&
           pp_pool_take(w->pool, 1, &f))
        rc = write_result(w, &f, diag);
    if (rc != PREPACK_OK)
        return rc;
    w->pending[w->pending_head + w->pending_count++] =
        (frame_meta){w->frame_rows, w->frame_tokens, ends_shard};
    pp_pool_submit(w->pool, w->frame.data, w->frame.size);
    w->frame.data = NULL; /* the pool owns it now */
    w->frame.size = w->frame.cap = 0;
    w->frame_rows = 0;
    w->frame_tokens = 0;
    return drain(w, 0, diag);
}

/* The seek table (shard_format.h), in a skippable frame. */
static int write_seek_table(prepack_writer *w, prepack_diag *diag)
{
    size_t bytes = (size_t)pp_seek_table_bytes(w->nseek);
    unsigned char *t = pp_alloc(w->alloc, bytes, 1);
    if (!t)
        return pp_out_of_memory(diag);
    pp_store_le32(t, PP_SKIPPABLE_MAGIC);
    pp_store_le32(t + 4, (uint32_t)(bytes - PP_SEEK_HEADER_BYTES));
    unsigned char *p = t + PP_SEEK_HEADER_BYTES;
    for (size_t i = 0; i < w->nseek; i++, p += PP_SEEK_ENTRY_BYTES) {
        pp_store_le32(p, w->seek[i].compressed);
        pp_store_le32(p + 4, w->seek[i].decompressed);
        pp_store_le32(p + 8, w->seek[i].checksum);
    }
    pp_store_le32(p, (uint32_t)w->nseek);
    p[4] = PP_SEEK_CHECKSUMS;
    pp_store_le32(p + 5, PP_SEEKABLE_MAGIC);
    int rc = shard_write(w, t, bytes, diag);
    pp_free(w->alloc, t);
    return rc;
}

/* A version 4 shard's index (shard_format.h): the set's id table and
 * each frame's hash, in a skippable frame before the seek table. */
static int write_index(prepack_writer *w, prepack_diag *diag)
{
    size_t n, width = prepack_dtype_width(w->dtype);
    const unsigned char *ids = pp_id_table_ids(w->ids, &n);
    size_t bytes = (size_t)pp_index_frame_bytes(n, (unsigned)width, w->nseek);
    unsigned char *t = pp_alloc(w->alloc, bytes, 1);
    if (!t)
        return pp_out_of_memory(diag);
    unsigned char *rest = t + PP_INDEX_FRAME_HEAD + PP_INDEX_HEAD;
    memcpy(rest, ids, n * width);
    for (size_t i = 0; i < w->nseek; i++)
        pp_store_le64(rest + n * width + 8 * i, w->seek[i].hash);
    pp_store_le32(t, PP_INDEX_MAGIC);
    pp_store_le32(t + 4, (uint32_t)(bytes - PP_INDEX_FRAME_HEAD));
    pp_store_le32(t + 8, (uint32_t)n);
    pp_store_le32(t + 12, (uint32_t)w->nseek);
    pp_store_le64(t + 16, XXH64(rest, bytes - (size_t)(rest - t), 0));
    int rc = shard_write(w, t, bytes, diag);
    pp_free(w->alloc, t);
    return rc;
}

/* Closes the current shard after its last frame: the seek table, fsync,
 * the rename to its final name. */
static int end_shard(prepack_writer *w, prepack_diag *diag)
{
    int rc = w->ids ? write_index(w, diag) : PREPACK_OK;
    if (rc == PREPACK_OK)
        rc = write_seek_table(w, diag);
    if (rc == PREPACK_OK && fsync(w->fd) != 0)
        rc = io_fail(diag, "fsync", w->tmp_path);
    if (rc == PREPACK_OK &&
        pp_grow(w->alloc, (void **)&w->shards, &w->shards_cap, w->nshards + 1,
                sizeof *w->shards) != PREPACK_OK)
        rc = pp_out_of_memory(diag);
    if (rc != PREPACK_OK)
        return rc;
    close(w->fd);
    w->fd = -1;
    pp_shard_info *s = &w->shards[w->nshards];
    pp_shard_name(s->file, w->first_shard + w->nshards);
    char final[4400];
    snprintf(final, sizeof final, "%s/%s", w->dir, s->file);
    if (rename(w->tmp_path, final) != 0) {
        /* closed already, so prepack_writer_free would not remove it */
        rc = io_fail(diag, "cannot rename", w->tmp_path);
        unlink(w->tmp_path);
        return rc;
    }
    s->rows = w->shard_rows_done;
    s->tokens = w->shard_tokens;
    s->bytes = w->shard_bytes_written;
    s->xxh64 = XXH64_digest(&w->hash);
    w->nshards++;
    w->bytes += w->shard_bytes_written;
    w->shard_bytes_written = 0;
    return PREPACK_OK;
}

/* ---- rows -------------------------------------------------------------------- */

static int add_row(prepack_writer *w, const prepack_row *row,
                   const prepack_row_references *references,
                   prepack_diag *diag);

static int pack_bin(msgpack_packer *pk, const char *key, const void *data,
                    size_t bytes)
{
    return msgpack_pack_str_with_body(pk, key, strlen(key)) ||
           msgpack_pack_bin_with_body(pk, data, bytes);
}

/* A row's map: input_ids, or in a plan-only set ref_source and
 * ref_offset in its place, then the fields every row has. */
static int pack_row(prepack_writer *w, const prepack_row *row,
                    const prepack_row_references *references)
{
    msgpack_packer *pk = &w->pk;
    size_t k = row->num_seqs, t = row->num_tokens;
    size_t keys = 3 + (size_t)(references != NULL) +
                  (size_t)(row->loss_mask != NULL) +
                  (size_t)(row->seq_starts != NULL);
    int bad = msgpack_pack_map(pk, keys);
    if (references)
        bad = bad || pack_bin(pk, "ref_source", references->source, k * 4) ||
              pack_bin(pk, "ref_offset", references->offset, k * 8);
    else /* id codes (format version 4) */
        bad = bad ||
              pack_bin(pk, "input_ids", w->codes,
                       pp_id_table_encode(w->ids, w->codes, row->input_ids, t));
    return bad ||
           pack_bin(pk, "cu_seqlens", row->cu_seqlens, (k + 1) * 4) ||
           pack_bin(pk, "seq_ids", row->seq_ids, k * 8) ||
           (row->loss_mask && pack_bin(pk, "loss_mask", row->loss_mask, t)) ||
           (row->seq_starts &&
            pack_bin(pk, "seq_starts", row->seq_starts, k * 4));
}

int prepack_writer_add(prepack_writer *w, const prepack_row *row,
                       prepack_diag *diag)
{
    if (!w || !row)
        return pp_invalid_argument(diag);
    if (w->references)
        return pp_fail(diag, PREPACK_EINVAL, w->rows,
                       "a plan-only writer takes rows by reference "
                       "(prepack_writer_add_references)");
    return add_row(w, row, NULL, diag);
}

int prepack_writer_add_references(prepack_writer *w, const prepack_row *row,
                                  const prepack_row_references *references,
                                  prepack_diag *diag)
{
    if (!w || !row || !references || !references->source || !references->offset)
        return pp_invalid_argument(diag);
    if (!w->references)
        return pp_fail(diag, PREPACK_EINVAL, w->rows,
                       "this writer holds tokens; references need "
                       "prepack_writer_options.references");
    return add_row(w, row, references, diag);
}

/* Packs a row (number `at` of the set) into the frame being filled. */
static int frame_row(prepack_writer *w, const prepack_row *row,
                     const prepack_row_references *references, uint64_t at,
                     prepack_diag *diag)
{
    static const unsigned char array32[5] = {0xdd, 0, 0, 0, 0};
    if (w->frame.size == 0 &&
        frame_append(&w->frame, (const char *)array32, 5) != 0)
        return pp_out_of_memory(diag);
    if (pack_row(w, row, references))
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "out of memory packing row %llu",
                       (unsigned long long)at);
    return PREPACK_OK;
}

/* Appends n bytes at p to the held bytes, 8-byte aligned; *at: where
 * (SIZE_MAX for none: p NULL). */
static int hold_bytes(prepack_writer *w, const void *p, size_t n, size_t *at)
{
    held_rows *h = &w->held;
    *at = SIZE_MAX;
    if (!p)
        return PREPACK_OK;
    size_t start = (h->size + 7) & ~(size_t)7;
    if (pp_grow(w->alloc, (void **)&h->bytes, &h->cap, start + n + 1, 1))
        return PREPACK_ENOMEM;
    memcpy(h->bytes + start, p, n);
    h->size = start + n;
    *at = start;
    return PREPACK_OK;
}

/* A row of the set's first frame: counted into the id table and copied,
 * to be packed once the table is made (release_held). */
static int hold_row(prepack_writer *w, const prepack_row *row,
                    prepack_diag *diag)
{
    held_rows *h = &w->held;
    size_t t = row->num_tokens, k = row->num_seqs;
    if (pp_grow(w->alloc, (void **)&h->rows, &h->cap_rows, h->n + 1,
                sizeof *h->rows))
        return pp_out_of_memory(diag);
    held_row *r = &h->rows[h->n];
    r->row = *row;
    if (hold_bytes(w, row->input_ids, t * prepack_dtype_width(w->dtype),
                   &r->ids) ||
        hold_bytes(w, row->cu_seqlens, (k + 1) * 4, &r->cu) ||
        hold_bytes(w, row->seq_ids, k * 8, &r->seq_ids) ||
        hold_bytes(w, row->loss_mask, t, &r->mask) ||
        hold_bytes(w, row->seq_starts, k * 4, &r->starts))
        return pp_out_of_memory(diag);
    pp_id_table_count(w->ids, row->input_ids, t);
    h->n++;
    return PREPACK_OK;
}

static void *held_array(const held_rows *h, size_t at)
{
    return at == SIZE_MAX ? NULL : h->bytes + at;
}

/* Makes the id table from the held rows, then packs them. */
static int release_held(prepack_writer *w, prepack_diag *diag)
{
    held_rows *h = &w->held;
    if (pp_id_table_make(w->ids) != PREPACK_OK)
        return pp_out_of_memory(diag);
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < h->n; i++) {
        held_row *r = &h->rows[i];
        prepack_row row = r->row;
        row.input_ids = held_array(h, r->ids);
        row.cu_seqlens = held_array(h, r->cu);
        row.seq_ids = held_array(h, r->seq_ids);
        row.loss_mask = held_array(h, r->mask);
        row.seq_starts = held_array(h, r->starts);
        rc = frame_row(w, &row, NULL, w->rows - h->n + i, diag);
    }
    pp_free(w->alloc, h->bytes);
    pp_free(w->alloc, h->rows);
    memset(h, 0, sizeof *h);
    return rc;
}

static int add_row(prepack_writer *w, const prepack_row *row,
                   const prepack_row_references *references, prepack_diag *diag)
{
    if (w->finished || row->token_dtype != w->dtype ||
        row->num_tokens > w->max_seq_len || row->num_seqs == 0)
        return pp_fail(diag, PREPACK_EINVAL, w->rows,
                       "row %llu does not fit this shard set",
                       (unsigned long long)w->rows);
    int rc = w->ids && !pp_id_table_made(w->ids)
                 ? hold_row(w, row, diag)
                 : frame_row(w, row, references, w->rows, diag);
    if (rc != PREPACK_OK)
        return rc;
    w->rows++;
    w->tokens += row->num_tokens;
    w->frame_tokens += row->num_tokens;
    int ends_shard = w->shard_rows && ++w->rows_in_shard == w->shard_rows;
    if (ends_shard)
        w->rows_in_shard = 0;
    if (++w->frame_rows == w->rows_per_frame || ends_shard)
        rc = flush_frame(w, ends_shard, diag);
    return rc;
}

/* ---- the manifest ------------------------------------------------------------ */

/* An empty set must say why it is empty (readers refuse one that does
 * not: it is what a truncated manifest looks like). */
static int says_nothing_to_place(const prepack_manifest_info *info)
{
    if (info && info->report)
        return info->report->plan.items == 0;
    return info && info->store && prepack_store_input_count(info->store) &&
           prepack_store_sequence_count(info->store) == 0;
}

int prepack_writer_finish(prepack_writer *w, const prepack_manifest_info *info,
                          prepack_diag *diag)
{
    int rc = flush_frame(w, 1, diag);
    if (rc == PREPACK_OK)
        rc = drain(w, 1, diag);
    if (rc == PREPACK_OK && w->fd >= 0) /* shard_bytes: the last shard */
        rc = end_shard(w, diag);
    if (rc != PREPACK_OK)
        return rc;
    if (w->nshards == 0 && !says_nothing_to_place(info))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s: a set of no rows needs the report (info->report) "
                       "that says nothing was placed; readers refuse an "
                       "empty set that does not say so",
                       w->dir);
    size_t ninputs = info && info->store ? prepack_store_input_count(info->store)
                                         : 0;
    prepack_input_info *inputs =
        ninputs ? pp_alloc(w->alloc, ninputs, sizeof *inputs) : NULL;
    if (ninputs && !inputs)
        return pp_out_of_memory(diag);
    for (size_t i = 0; i < ninputs; i++)
        prepack_store_input(info->store, i, &inputs[i]);
    pp_manifest_fields m = {w->max_seq_len, prepack_dtype_name(w->dtype),
                            w->rows_per_frame, w->level, w->shards, w->nshards,
                            info ? info->plan : NULL, inputs, ninputs,
                            info ? info->report : NULL, w->references,
                            pp_set_version(w->references), NULL, 0};
    pp_set_source *sources = NULL;
    if (w->references && !(info && info->store))
        rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                     "a plan-only set needs info->store: the files its "
                     "rows reference");
    else if (w->references)
        rc = pp_sources_describe(info->store, w->alloc, &sources, &m.nsources,
                                 diag);
    m.sources = sources;
    if (rc == PREPACK_OK)
        rc = pp_manifest_save(w->dir, &m, diag);
    pp_sources_free(w->alloc, sources, m.nsources);
    pp_free(w->alloc, inputs);
    if (rc != PREPACK_OK)
        return rc;
    if (*w->target) {
        rc = swap_into_place(w->dir, w->target, diag);
        if (rc != PREPACK_OK) {
            char final[4400]; /* the old set stays; this one goes with free */
            snprintf(final, sizeof final, "%s/" PP_MANIFEST_NAME, w->dir);
            unlink(final);
            return rc;
        }
    }
    w->finished = 1;
    return PREPACK_OK;
}

int pp_manifest_save(const char *dir, const pp_manifest_fields *m,
                     prepack_diag *diag)
{
    char tmp[4400], final[4400];
    snprintf(tmp, sizeof tmp, "%s/" PP_MANIFEST_NAME PP_TMP_SUFFIX, dir);
    snprintf(final, sizeof final, "%s/" PP_MANIFEST_NAME, dir);
    int fd = create_tmp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int rc = io_fail(diag, "cannot create", tmp);
        if (fd >= 0)
            close(fd);
        return rc;
    }
    pp_manifest_write(f, m);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        unlink(tmp);
        return io_fail(diag, "writing", tmp);
    }
    if (rename(tmp, final) != 0) {
        int rc = io_fail(diag, "cannot rename", tmp);
        unlink(tmp);
        return rc;
    }
    pp_sync_dir(dir);
    return PREPACK_OK;
}

/* ---- a part of a set (src/steps's write tasks) -------------------------------- */

int pp_writer_finish_part(prepack_writer *w, prepack_diag *diag)
{
    int rc = flush_frame(w, 1, diag);
    if (rc == PREPACK_OK)
        rc = drain(w, 1, diag);
    if (rc == PREPACK_OK && w->fd >= 0)
        rc = end_shard(w, diag);
    if (rc != PREPACK_OK)
        return rc;
    pp_sync_dir(w->dir);
    w->finished = 1;
    return PREPACK_OK;
}

void pp_writer_sample(prepack_writer *w, const void *ids, size_t n)
{
    if (w->ids && !pp_id_table_made(w->ids))
        pp_id_table_count(w->ids, ids, n);
}

int pp_writer_sampled(prepack_writer *w, prepack_diag *diag)
{
    if (!w->ids || pp_id_table_made(w->ids))
        return PREPACK_OK;
    if (w->rows)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the id table is sampled before the first row");
    return pp_id_table_make(w->ids) == PREPACK_OK ? PREPACK_OK
                                                  : pp_out_of_memory(diag);
}

const pp_shard_info *pp_writer_shards(const prepack_writer *w, size_t *n)
{
    *n = w->nshards;
    return w->shards;
}

uint32_t pp_writer_rows_per_frame(const prepack_writer *w)
{
    return w->rows_per_frame;
}

uint32_t pp_writer_frame_rows(uint32_t want, uint32_t max_seq_len,
                              prepack_dtype dtype)
{
    unsigned w = (unsigned)prepack_dtype_width(dtype);
    return frame_rows_that_fit(want ? want : default_frame_rows(max_seq_len),
                               max_seq_len, stored_token_bytes(w, 0));
}
