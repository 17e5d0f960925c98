/* A pack in steps: options, keys, file names, the partition of the inputs
 * among scan tasks, and the records the steps hand each other. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "steps/job.h"
#include "ingest/source.h"
#include "ingest/tmpfile.h"
#include "shards/part.h"

/* ---- options and keys ------------------------------------------------------ */

/* The key of what a step's output depends on: written into every record
 * and checked by the next step, so a task rerun with other options, or a
 * directory holding another job, is refused rather than mixed in. */
static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    return XXH64(p, n, h);
}

static uint64_t mix_u64(uint64_t h, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    return mix(h, b, 8);
}

static uint64_t scan_key(const prepack_step_options *o)
{
    uint64_t h = mix(0, "prepack-scan-1", 14);
    h = mix_u64(h, o->ninputs);
    for (size_t i = 0; i < o->ninputs; i++)
        h = mix(h, o->inputs[i], strlen(o->inputs[i]) + 1);
    const prepack_ingest_options *g = &o->ingest;
    const char *field = g->field ? g->field : "input_ids";
    h = mix(h, field, strlen(field) + 1);
    h = mix_u64(h, (uint64_t)g->format);
    h = mix_u64(h, (uint64_t)g->has_doc_sep);
    h = mix_u64(h, g->has_doc_sep ? g->doc_sep : 0);
    h = mix_u64(h, (uint64_t)g->sep_position);
    h = mix_u64(h, (uint64_t) !!g->allow_trailing_bytes);
    if (o->text_key) /* NULL: the key token inputs always had */
        h = mix(h, o->text_key, strlen(o->text_key) + 1);
    return mix_u64(h, (uint64_t)o->store.dtype);
}

static uint64_t plan_key(const pp_job *j)
{
    const prepack_step_options *o = j->o;
    const prepack_plan_options *p = &o->plan;
    uint64_t h = mix_u64(j->scan_key, p->max_seq_len);
    h = mix_u64(h, (uint64_t)p->algo);
    h = mix_u64(h, (uint64_t)p->overlong);
    h = mix_u64(h, p->max_seqs_per_row);
    h = mix_u64(h, p->pad_multiple > 1 ? p->pad_multiple : 1);
    h = mix_u64(h, (uint64_t) !!p->shuffle_rows);
    h = mix_u64(h, p->shuffle_rows ? p->shuffle_seed : 0);
    h = mix_u64(h, o->writer.rows_per_frame); /* 0: the default */
    h = mix_u64(h, j->shard_rows);
    h = mix_u64(h, (uint64_t)(o->writer.level ? o->writer.level
                                              : PREPACK_DEFAULT_ZSTD_LEVEL));
    return mix_u64(h,
                   o->batch_size ? o->batch_size : PREPACK_DEFAULT_BATCH_SIZE);
}

/* Whether the directory behind fd holds nothing but a job directory (a
 * concurrent task's). */
static int dir_is_empty(int fd)
{
    int copy = dup(fd);
    DIR *d = copy >= 0 ? fdopendir(copy) : NULL;
    if (!d) {
        if (copy >= 0)
            close(copy);
        return 0;
    }
    rewinddir(d);
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)) != NULL)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
                !strcmp(e->d_name, PP_JOB_DIR);
    closedir(d);
    return empty;
}

static int check_options(const char *dir, const prepack_step_options *o,
                         prepack_diag *diag)
{
    if (!dir || !o || (o->ninputs && !o->inputs))
        return pp_invalid_argument(diag);
    if (o->ninputs == 0)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the steps need at least one input");
    if (o->ninputs > UINT32_MAX - 1)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the steps take at most %u inputs", UINT32_MAX - 1);
    if (o->writer.shard_bytes)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the steps split shards by rows (shard_rows, "
                       "--shard-rows): where shard_bytes ends a shard "
                       "depends on every frame written before it");
    if (o->writer.overwrite)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the steps write into an empty directory; "
                       "overwrite is for a set written in one process");
    for (size_t i = 0; i < o->ninputs; i++)
        if (!o->inputs[i] || !strcmp(o->inputs[i], "-"))
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "stdin ('-') cannot be split among scan tasks: "
                           "save it to a file");
    return PREPACK_OK;
}

static int link_refused(const char *what, prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                   "%s is a symbolic link or not a directory: the steps' "
                   "directories are never entered through a link (remove "
                   "it, or give the real directory)",
                   what);
}

static const int DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

/* DIR and DIR/.prepack-job opened without following a link; create makes
 * them (DIR empty but for a job directory) first. */
static int open_dirs(pp_job *j, int create, prepack_diag *diag)
{
    char buf[4096];
    const char *dir = pp_dir_path(j->dir, buf, sizeof buf);
    if (!dir)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       errno == ELOOP ? "%s ends in '..': give the directory "
                                        "by a path that names it"
                                      : "directory name too long: %s",
                       j->dir);
    if (create && mkdir(dir, 0777) != 0 && errno != EEXIST)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot create %s: %s", j->dir, strerror(errno));
    j->dir_fd = open(dir, DIR_FLAGS);
    if (j->dir_fd < 0 && errno == ENOENT)
        return PREPACK_OK; /* the steps say what to run first */
    if (j->dir_fd < 0)
        return errno == ELOOP || errno == ENOTDIR
                   ? link_refused(j->dir, diag)
                   : pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                             "cannot open %s: %s", j->dir, strerror(errno));
    j->job_fd = openat(j->dir_fd, PP_JOB_DIR, DIR_FLAGS);
    if (j->job_fd < 0 && errno == ENOENT && create) {
        if (!dir_is_empty(j->dir_fd))
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "%s is not empty: the steps write a new set "
                           "into an empty directory (or one holding "
                           "their %s)",
                           j->dir, PP_JOB_DIR);
        if (mkdirat(j->dir_fd, PP_JOB_DIR, 0777) != 0 && errno != EEXIST)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "cannot create %s: %s", j->job_dir, strerror(errno));
        j->job_fd = openat(j->dir_fd, PP_JOB_DIR, DIR_FLAGS);
    }
    if (j->job_fd < 0 && errno == ENOENT)
        return PREPACK_OK;
    if (j->job_fd < 0)
        return errno == ELOOP || errno == ENOTDIR
                   ? link_refused(j->job_dir, diag)
                   : pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                             "cannot open %s: %s", j->job_dir, strerror(errno));
    return PREPACK_OK;
}

int pp_job_open(pp_job *j, const char *dir, const prepack_step_options *o,
                int create, prepack_diag *diag)
{
    memset(j, 0, sizeof *j);
    j->dir_fd = j->job_fd = j->lock_fd = -1;
    int rc = check_options(dir, o, diag);
    if (rc != PREPACK_OK)
        return rc;
    j->dir = dir;
    j->o = o;
    if (snprintf(j->job_dir, sizeof j->job_dir, "%s/" PP_JOB_DIR, dir) >=
        (int)sizeof j->job_dir - 64)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "directory name too long: %s", dir);
    j->shard_rows = o->writer.shard_rows ? o->writer.shard_rows
                                         : PREPACK_DEFAULT_SHARD_ROWS;
    j->scan_key = scan_key(o);
    j->plan_key = plan_key(j);
    rc = open_dirs(j, create, diag);
    if (rc != PREPACK_OK)
        pp_job_close(j);
    return rc;
}

void pp_job_close(pp_job *j)
{
    /* the lock file goes while still held: a run that opened it before
     * finds its name gone once it holds it, and tries again */
    if (j->lock_fd >= 0 && j->job_fd >= 0)
        unlinkat(j->job_fd, j->lock_name, 0);
    int *fds[] = {&j->lock_fd, &j->job_fd, &j->dir_fd};
    for (size_t i = 0; i < 3; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

/* Whether fd is still the file the name holds (not one a finished run
 * removed). */
static int still_named(int dirfd, const char *name, int fd)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 &&
           fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
           a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int try_lock(pp_job *j, const char *name, int *fd, prepack_diag *diag)
{
    *fd = openat(j->job_fd, name,
                 O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
    if (*fd < 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot open %s/%s: %s", j->job_dir, name,
                       errno == ELOOP ? "it is a symbolic link"
                                      : strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(*fd);
        *fd = -1;
        if (e == EWOULDBLOCK)
            return 1; /* held */
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot lock %s/%s: %s", j->job_dir, name, strerror(e));
    }
    return PREPACK_OK;
}

int pp_job_lock(pp_job *j, const char *name, const char *who,
                prepack_diag *diag)
{
    if (j->job_fd < 0)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s does not exist: run the scan tasks first",
                       j->job_dir);
    snprintf(j->lock_name, sizeof j->lock_name, "%s", name);
    for (int tries = 0; tries < 100; tries++) {
        int fd;
        int rc = try_lock(j, name, &fd, diag);
        if (rc == 1)
            return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                           "another run holds %s in %s: wait for it to end "
                           "(or end it), then rerun",
                           who, j->dir);
        if (rc != PREPACK_OK)
            return rc;
        if (still_named(j->job_fd, name, fd)) {
            j->lock_fd = fd;
            return PREPACK_OK;
        }
        close(fd);
    }
    return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                   "cannot lock %s/%s: it keeps being replaced", j->job_dir,
                   name);
}

void pp_job_file(const pp_job *j, char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", j->job_dir, name);
}

int pp_job_finished(const pp_job *j)
{
    struct stat st;
    return j->dir_fd >= 0 && j->job_fd < 0 &&
           fstatat(j->dir_fd, "manifest.json", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           S_ISREG(st.st_mode);
}

static void remove_leftover(const pp_job *j);

int pp_step_begin(pp_step *s, pp_job *j, const char *dir,
                  const prepack_step_options *o, prepack_step_result *res,
                  prepack_diag *diag, const char *count_of, uint32_t task,
                  uint32_t ntasks)
{
    s->res = res ? res : &s->own_res;
    s->diag = diag ? diag : &s->own_diag;
    memset(s->res, 0, sizeof *s->res);
    memset(s->diag, 0, sizeof *s->diag);
    memset(j, 0, sizeof *j);
    j->dir_fd = j->job_fd = j->lock_fd = -1;
    if (count_of && ntasks == 0)
        return pp_fail(s->diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the %s task count must be at least 1", count_of);
    if (!count_of && (ntasks == 0 || task >= ntasks))
        return pp_fail(s->diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "task index %u is not below the task count %u", task,
                       ntasks);
    int rc = pp_job_open(j, dir, o, 0, s->diag);
    if (rc == PREPACK_OK && pp_job_finished(j)) {
        s->res->already_done = 1;
        remove_leftover(j);
    }
    return rc;
}

/* ---- the job's own names ---------------------------------------------- */

static const char *skip_digits(const char *p)
{
    const char *q = p;
    while (*q >= '0' && *q <= '9')
        q++;
    return q > p && q - p <= 10 ? q : NULL;
}

static int one_of(const char *p, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p, names[i]))
            return 1;
    return 0;
}

/* A store's kept file: tmp-{tokens,mask}- and six random characters. */
static int kept_name(const char *p)
{
    const char *kinds[] = {"tmp-tokens-", "tmp-mask-"};
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(kinds[i]);
        if (!strncmp(p, kinds[i], n) && strlen(p + n) == PP_TMPFILE_RANDOM)
            return 1;
    }
    return 0;
}

/* Whether the job makes a file of this name (locks: its locks too). */
static int job_owns(const char *name, int locks)
{
    static const char *const scan[] = {
        "lengths",     "locs",     "tokens",     "mask",     "meta",
        "lengths.tmp", "locs.tmp", "tokens.tmp", "mask.tmp", "meta.tmp"};
    static const char *const plan[] = {"rows", "meta", "rows.tmp", "meta.tmp"};
    static const char *const write[] = {"meta", "meta.tmp"};
    const char *p;
    if (!strncmp(name, "scan-", 5) && (p = skip_digits(name + 5)) &&
        *p++ == '.')
        return one_of(p, scan, 10) || kept_name(p) ||
               (locks && !strcmp(p, "lock"));
    if (!strncmp(name, "plan.", 5))
        return one_of(name + 5, plan, 4) ||
               (locks && !strcmp(name + 5, "lock"));
    if (!strncmp(name, "write-", 6) && (p = skip_digits(name + 6)) &&
        !strncmp(p, "-of-", 4) && (p = skip_digits(p + 4)) && *p++ == '.')
        return one_of(p, write, 2) || (locks && !strcmp(p, "lock"));
    return locks && !strcmp(name, "finalize.lock");
}

static void remove_owned(int fd, const char *prefix, int locks)
{
    int copy = fd >= 0 ? dup(fd) : -1;
    DIR *d = copy >= 0 ? fdopendir(copy) : NULL;
    if (!d) {
        if (copy >= 0)
            close(copy);
        return;
    }
    rewinddir(d);
    size_t n = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, prefix, n) && job_owns(e->d_name, locks))
            unlinkat(fd, e->d_name, 0); /* a link itself, if one */
    closedir(d);
}

void pp_job_remove(const pp_job *j, const char *prefix)
{
    remove_owned(j->job_fd, prefix, 0);
}

/* The job directory is renamed before it is emptied: a finalize killed
 * while removing its files leaves a finished set (manifest.json and no
 * job directory) and this name, which the next step removes, never a job
 * directory without its plan. */
#define PP_JOB_DIR_GONE PP_JOB_DIR "-removed"

void pp_job_remove_all(pp_job *j)
{
    if (j->dir_fd < 0)
        return;
    int moved =
        renameat(j->dir_fd, PP_JOB_DIR, j->dir_fd, PP_JOB_DIR_GONE) == 0;
    if (moved)
        fsync(j->dir_fd);
    remove_owned(j->job_fd, "", 1);
    unlinkat(j->dir_fd, moved ? PP_JOB_DIR_GONE : PP_JOB_DIR,
             AT_REMOVEDIR); /* empty only */
    fsync(j->dir_fd);
}

/* What a finalize killed while removing the job directory left. */
static void remove_leftover(const pp_job *j)
{
    int fd = openat(j->dir_fd, PP_JOB_DIR_GONE, DIR_FLAGS);
    if (fd < 0)
        return;
    remove_owned(fd, "", 1);
    close(fd);
    unlinkat(j->dir_fd, PP_JOB_DIR_GONE, AT_REMOVEDIR);
    fsync(j->dir_fd);
}

void pp_job_input_file(const pp_job *j, uint32_t i, uint32_t format, char *out,
                       size_t cap)
{
    const char *path = j->o->inputs[i];
    if (format != PREPACK_FORMAT_MEGATRON) {
        snprintf(out, cap, "%s", path);
        return;
    }
    char prefix[4096];
    pp_megatron_prefix(path, prefix, sizeof prefix);
    snprintf(out, cap, "%s.bin", prefix);
}

void pp_scan_name(char *out, size_t cap, uint32_t t, const char *ext)
{
    snprintf(out, cap, "scan-%05u.%s", t, ext);
}

void pp_write_name(char *out, size_t cap, uint32_t t, uint32_t n)
{
    snprintf(out, cap, "write-%05u-of-%05u.meta", t, n);
}

void pp_write_lock_name(char *out, size_t cap, uint32_t t, uint32_t n)
{
    snprintf(out, cap, "write-%05u-of-%05u.lock", t, n);
}

/* ---- the partition --------------------------------------------------------- */

/* Inputs lie end to end on a line of bytes (their weights); task t of n
 * owns [start(t), start(t + 1)), the last task to the end. A whole input
 * goes to the task owning its first byte; a split one is cut where the
 * task boundaries fall (JSONL: at the next line start; llm.c and raw: at
 * the next document start; Megatron: sequence k sits at byte
 * floor(k x weight / count) of its input). Every task
 * computes the same cut from the same stat() sizes. */
static uint64_t start_of(uint32_t t, uint32_t n, uint64_t total)
{
    return (uint64_t)((unsigned __int128)total * t / n);
}

/* The first sequence at or past byte x of a Megatron input. */
static uint64_t first_sequence_at(const pp_unit *u, uint64_t x)
{
    if (x == 0)
        return 0;
    unsigned __int128 k =
        ((unsigned __int128)x * u->count + u->weight - 1) / u->weight;
    return k > u->count ? u->count : (uint64_t)k;
}

int pp_step_part(const pp_unit *u, uint64_t total, uint32_t t, uint32_t n,
                 pp_input_part *part)
{
    memset(part, 0, sizeof *part);
    uint64_t lo = start_of(t, n, total);
    uint64_t hi = t + 1 < n ? start_of(t + 1, n, total) : UINT64_MAX;
    if (!u->split || u->weight == 0) { /* whole: the owner of its start */
        part->whole = 1;
        return lo <= u->at && u->at < hi;
    }
    uint64_t end = u->at + u->weight;
    if (!(lo < end && hi > u->at))
        return 0;
    uint64_t b = lo > u->at ? lo - u->at : 0;
    uint64_t e = hi < end ? hi - u->at : u->weight;
    if (u->split == 1) {
        part->begin = b;
        part->end = e;
    } else {
        part->begin = first_sequence_at(u, b);
        part->end = hi < end ? first_sequence_at(u, e) : u->count;
    }
    return 1;
}

/* Whether a JSONL input is plain text, which a task can enter at any
 * byte (the JSONL reader's source tells compression by magic bytes). */
static int is_plain_text(const char *path)
{
    pp_source *src = NULL;
    prepack_diag ignored;
    if (pp_source_open(&src, path, NULL, &ignored) != PREPACK_OK)
        return 0;
    int plain = pp_source_is_plain(src);
    pp_source_close(src);
    return plain;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* A Megatron input: its .bin's size and the .idx header's sequence count
 * (a bad header makes it whole: its reader then names the fault). */
static void weigh_megatron(const char *path, pp_unit *u)
{
    char prefix[4096], name[4200];
    pp_megatron_prefix(path, prefix, sizeof prefix);
    snprintf(name, sizeof name, "%s.bin", prefix);
    u->weight = file_size(name);
    snprintf(name, sizeof name, "%s.idx", prefix);
    unsigned char h[34];
    int fd = open(name, O_RDONLY);
    int ok = fd >= 0 && pp_read_at(fd, h, sizeof h, 0) == 0 &&
             !memcmp(h, "MMIDIDX\0\0", 9);
    if (fd >= 0)
        close(fd);
    u->count = ok ? pp_load_le(h + 18, 8) : 0;
    u->split = ok && u->count > 0 ? 2 : 0;
}

int pp_step_units(const pp_job *j, pp_unit *units, uint64_t *total,
                  prepack_diag *diag)
{
    uint64_t at = 0;
    for (size_t i = 0; i < j->o->ninputs; i++) {
        const char *path = j->o->inputs[i];
        pp_unit *u = &units[i];
        memset(u, 0, sizeof *u);
        u->format = j->o->ingest.format;
        if (!prepack_format_name(u->format))
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "unknown format %d", (int)u->format);
        if (u->format == PREPACK_FORMAT_AUTO) {
            int rc = prepack_format_detect(path, &u->format, diag);
            if (rc != PREPACK_OK)
                return rc;
        }
        if (u->format == PREPACK_FORMAT_ARROW)
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "%s: Arrow and Parquet inputs are read by the "
                           "Python package",
                           path);
        if (u->format == PREPACK_FORMAT_MEGATRON) {
            weigh_megatron(path, u);
        } else {
            u->weight = file_size(path);
            /* compressed JSONL is read whole; llm.c and raw files are cut
             * at document starts like plain JSONL at line starts */
            u->split = u->format != PREPACK_FORMAT_JSONL || is_plain_text(path);
        }
        u->at = at;
        at += u->weight;
    }
    *total = at;
    return PREPACK_OK;
}

void pp_step_shards_of(uint64_t shards, uint32_t t, uint32_t n, uint64_t *first,
                       uint64_t *end)
{
    *first = (uint64_t)((unsigned __int128)shards * t / n);
    *end = (uint64_t)((unsigned __int128)shards * (t + 1) / n);
}
