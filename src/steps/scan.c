/* Scan task t of n: reads its part of the inputs into a token store, with
 * every check prepack pack makes, and leaves in the job directory what the
 * plan and the write tasks need (job.h):
 *   scan-T.lengths  u32 a sequence: what the planner takes
 *   scan-T.locs     where each sequence's tokens are (source, byte offset)
 *   scan-T.tokens   the tokens parsed from text inputs (source 0), and
 *   scan-T.mask     their loss mask, when an input had one
 *   scan-T.meta     written last: the parts read, the sources, the sizes
 *                   and hashes of the files above. Its presence (checksum
 *                   and key good) is what "task T is done" means. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "common/error.h"
#include "common/io.h"
#include "steps/job.h"
#include "ingest/store.h"

/* Writes n bytes to DIR/.prepack-job/NAME (temporary name, fsync,
 * rename); *hash = their xxh64. */
static int save_bytes(const pp_job *j, const char *name, const void *p,
                      uint64_t n, uint64_t *hash, prepack_diag *diag)
{
    pp_rec r;
    int rc = pp_rec_create(&r, j->job_fd, j->job_dir, name, diag);
    if (rc != PREPACK_OK)
        return rc;
    const unsigned char *b = p;
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done > (1u << 24) ? (1u << 24) : (size_t)(n - done);
        pp_rec_bytes(&r, (void *)(b + done), k);
        done += k;
    }
    *hash = XXH64_digest(r.hash);
    return pp_rec_save(&r, diag);
}

/* An input read in place, as the write tasks will check it: its size,
 * modification time, device and inode, from the descriptor ingest read
 * (so an input changed or replaced between scan and write is refused). */
static int stamp_input(const pp_store_source *src, pp_scan_source *out,
                       prepack_diag *diag)
{
    struct stat st;
    if (src->fd < 0 || fstat(src->fd, &st) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD, "cannot stat %s",
                       src->path ? src->path : "an input");
    out->stamp = (uint64_t)st.st_mtim.tv_sec * 1000000000u +
                 (uint64_t)st.st_mtim.tv_nsec;
    out->dev = (uint64_t)st.st_dev;
    out->ino = (uint64_t)st.st_ino;
    return PREPACK_OK;
}

/* Which input (by its index on the command line) a source read in place
 * is: the record names it so, never by path. */
static int input_of(const pp_job *j, const pp_scan_meta *m, const char *path,
                    uint32_t *input, prepack_diag *diag)
{
    for (uint32_t i = 0; path && i < m->nparts; i++) {
        char file[4200];
        pp_job_input_file(j, m->parts[i].input, m->parts[i].format, file,
                          sizeof file);
        if (!strcmp(file, path)) {
            *input = m->parts[i].input;
            return PREPACK_OK;
        }
    }
    return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                   "%s is read in place but is none of the inputs",
                   path ? path : "a source");
}

static int read_parts(const pp_job *j, prepack_store *s, uint32_t t, uint32_t n,
                      pp_scan_meta *m, prepack_diag *diag)
{
    size_t ni = j->o->ninputs;
    pp_unit *units = calloc(ni, sizeof *units);
    m->parts = calloc(ni, sizeof *m->parts);
    if (!units || !m->parts) {
        free(units);
        return pp_out_of_memory(diag);
    }
    uint64_t total = 0;
    int rc = pp_step_units(j, units, &total, diag);
    for (size_t i = 0; rc == PREPACK_OK && i < ni; i++) {
        pp_input_part part;
        if (!pp_step_part(&units[i], total, t, n, &part))
            continue;
        const char *path = j->o->inputs[i];
        rc = pp_ingest_part(s, path, units[i].format, &j->o->ingest, &part,
                            diag);
        prepack_input_info in;
        if (rc == PREPACK_OK)
            prepack_store_input(s, prepack_store_input_count(s) - 1, &in);
        if (rc == PREPACK_OK && part.whole && in.sequences == 0)
            rc = pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                         "%s: empty input: no sequences", path);
        if (rc != PREPACK_OK)
            break;
        pp_scan_part *p = &m->parts[m->nparts++];
        p->input = (uint32_t)i;
        p->format = (uint32_t)units[i].format;
        p->sequences = in.sequences;
        p->tokens = in.tokens;
        p->documents = in.documents;
        p->partial = in.partial_sequences;
        p->sequences_total = part.sequences_total;
        p->bin_reached = part.bin_reached;
        p->bin_size = part.bin_size;
        p->first_group = part.first_group; /* the meta owns them now */
        p->first_group_len = part.first_group_len;
        p->last_group = part.last_group;
        p->last_group_len = part.last_group_len;
    }
    free(units);
    return rc;
}

/* The task's groups: which of its sequences join the one before (a
 * group cut between two tasks is joined again by the plan, from the
 * parts' first and last group values). */
static int save_joins(const prepack_store *s, pp_scan_meta *m,
                      prepack_diag *diag)
{
    size_t n = 0;
    const uint64_t *joins = pp_store_joins(s, &n);
    m->njoins = n;
    m->joins = malloc((n ? n : 1) * sizeof *m->joins);
    if (!m->joins)
        return pp_out_of_memory(diag);
    if (n)
        memcpy(m->joins, joins, n * sizeof *joins);
    return PREPACK_OK;
}

/* scan-T.lengths and scan-T.locs. */
static int save_sequences(const pp_job *j, const prepack_store *s, uint32_t t,
                          pp_scan_meta *m, prepack_diag *diag)
{
    size_t n = prepack_store_sequence_count(s);
    char name[64];
    pp_scan_name(name, sizeof name, t, "lengths");
    int rc = save_bytes(j, name, prepack_store_lengths(s), (uint64_t)n * 4,
                        &m->lengths_hash, diag);
    unsigned char *locs =
        rc == PREPACK_OK ? malloc(n ? n * PP_LOC_BYTES : 1) : NULL;
    if (rc == PREPACK_OK && !locs)
        rc = pp_out_of_memory(diag);
    for (size_t i = 0; rc == PREPACK_OK && i < n; i++) {
        uint32_t src;
        uint64_t off;
        pp_store_location(s, i, &src, &off);
        unsigned char *p = locs + i * PP_LOC_BYTES;
        for (int b = 0; b < 4; b++)
            p[b] = (unsigned char)(src >> (8 * b));
        for (int b = 0; b < 8; b++)
            p[4 + b] = (unsigned char)(off >> (8 * b));
    }
    pp_scan_name(name, sizeof name, t, "locs");
    if (rc == PREPACK_OK)
        rc = save_bytes(j, name, locs, (uint64_t)n * PP_LOC_BYTES,
                        &m->locs_hash, diag);
    m->locs_size = (uint64_t)n * PP_LOC_BYTES;
    free(locs);
    return rc;
}

/* A kept token file of the store (FROM, in the job directory), in place
 * as NAME: its hash appended (the format of every job file), fsync,
 * rename; all relative to the job directory's descriptor. */
static int place_file(const pp_job *j, const char *from, const char *name,
                      const void *data, uint64_t size, uint64_t *hash,
                      prepack_diag *diag)
{
    *hash = XXH64(data, (size_t)size, 0);
    unsigned char h[8];
    for (int i = 0; i < 8; i++)
        h[i] = (unsigned char)(*hash >> (8 * i));
    int fd = openat(j->job_fd, from, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    int ok = fd >= 0 && pwrite(fd, h, 8, (off_t)size) == 8 && fsync(fd) == 0;
    if (fd >= 0)
        ok &= close(fd) == 0;
    if (!ok || renameat(j->job_fd, from, j->job_fd, name) != 0)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "writing %s/%s failed: %s", j->job_dir, name,
                       strerror(errno));
    return PREPACK_OK;
}

/* The sources: 0 is the store's kept token file, renamed to
 * scan-T.tokens (and its mask to scan-T.mask); the rest by path. */
static int save_sources(const pp_job *j, prepack_store *s, uint32_t t,
                        pp_scan_meta *m, prepack_diag *diag)
{
    size_t ns = pp_store_source_count(s);
    m->sources = calloc(ns, sizeof *m->sources);
    if (!m->sources)
        return pp_out_of_memory(diag);
    m->nsources = (uint32_t)ns;
    char tok_path[4096], mask_path[4096];
    pp_store_take_files(s, tok_path, mask_path, sizeof tok_path);
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < ns; i++) {
        pp_store_source src;
        pp_store_source_get(s, i, &src);
        pp_scan_source *out = &m->sources[i];
        out->width = src.width;
        out->is_signed = (uint32_t)src.is_signed;
        out->size = src.size;
        if (i > 0) {
            rc = input_of(j, m, src.path, &out->input, diag);
            if (rc == PREPACK_OK)
                rc = stamp_input(&src, out, diag);
            continue;
        }
        char name[64];
        pp_scan_name(name, sizeof name, t, "tokens");
        out->input = UINT32_MAX;
        rc = place_file(j, tok_path, name, src.data, src.size, &out->stamp,
                        diag);
        if (rc == PREPACK_OK && src.mask) {
            pp_scan_name(name, sizeof name, t, "mask");
            m->mask_size = src.size / src.width;
            rc = place_file(j, mask_path, name, src.mask, m->mask_size,
                            &m->mask_hash, diag);
        }
    }
    if (rc != PREPACK_OK) { /* taken: the store no longer removes them */
        unlinkat(j->job_fd, tok_path, 0);
        if (mask_path[0])
            unlinkat(j->job_fd, mask_path, 0);
    }
    return rc;
}

static int task_file_good(const pp_job *j, uint32_t t, const char *ext,
                          uint64_t want, uint64_t hash)
{
    char name[64];
    uint64_t size, h;
    pp_scan_name(name, sizeof name, t, ext);
    return pp_rec_verify(j->job_fd, name, &size, &h) == 0 && size == want &&
           h == hash;
}

static int already_done(const pp_job *j, uint32_t t, uint32_t n)
{
    pp_scan_meta m;
    prepack_diag ignored;
    if (pp_scan_meta_load(j, t, n, &m, &ignored) != PREPACK_OK)
        return 0;
    int ok =
        task_file_good(j, t, "lengths", m.sequences * 4, m.lengths_hash) &&
        task_file_good(j, t, "locs", m.locs_size, m.locs_hash) &&
        task_file_good(j, t, "tokens", m.sources[0].size, m.sources[0].stamp) &&
        (!m.mask_size ||
         task_file_good(j, t, "mask", m.mask_size, m.mask_hash));
    pp_scan_meta_free(&m);
    return ok;
}

/* The task's files from its store (filled: its parts read, m->parts
 * recorded), the record last; on failure nothing of the task stays. */
static int save_task(pp_job *j, prepack_store *s, uint32_t task,
                     uint32_t ntasks, pp_scan_meta *m,
                     prepack_step_result *res, prepack_diag *diag)
{
    int rc = prepack_store_finish(s, diag);
    if (rc == PREPACK_OK)
        rc = save_joins(s, m, diag);
    if (rc == PREPACK_OK)
        rc = save_sequences(j, s, task, m, diag);
    if (rc == PREPACK_OK)
        rc = save_sources(j, s, task, m, diag);
    if (rc == PREPACK_OK) {
        m->key = j->scan_key;
        m->task = task;
        m->ntasks = ntasks;
        m->sequences = prepack_store_sequence_count(s);
        m->tokens = prepack_store_token_count(s);
        m->max_id = pp_store_max_id(s);
        m->has_mask = (uint32_t)prepack_store_has_loss_mask(s);
        char name[64];
        pp_scan_name(name, sizeof name, task, "meta");
        pp_rec r;
        rc = pp_rec_create(&r, j->job_fd, j->job_dir, name, diag);
        if (rc == PREPACK_OK) {
            pp_scan_meta_visit(&r, m);
            rc = pp_rec_save(&r, diag);
        }
        if (rc == PREPACK_OK && fsync(j->job_fd) != 0)
            rc = pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                         "fsync of %s failed", j->job_dir);
    }
    if (rc == PREPACK_OK) {
        res->sequences = m->sequences;
        res->tokens = m->tokens;
        res->bytes_written = m->sequences * (4 + PP_LOC_BYTES) +
                             (m->nsources ? m->sources[0].size : 0) +
                             m->mask_size;
    }
    return rc;
}

/* A new store for task's files, its kept files in the job directory
 * (named after the task: its rerun removes them), a killed run's files
 * removed first. */
static int task_store(pp_job *j, uint32_t task, prepack_store **s,
                      prepack_diag *diag)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "scan-%05u.", task);
    pp_job_remove(j, prefix);
    prepack_store_options so = j->o->store;
    so.tmp_dir = j->job_dir;
    so.lengths_only = 0;
    char keep[64];
    snprintf(keep, sizeof keep, "scan-%05u.tmp-", task);
    return pp_store_create_kept(s, &so, keep, j->job_fd, diag);
}

static void remove_task(const pp_job *j, uint32_t task)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "scan-%05u.", task);
    pp_job_remove(j, prefix); /* nothing half-written stays */
}

/* The task's files, from its part of the inputs; the record last. */
static int scan_task(pp_job *j, uint32_t task, uint32_t ntasks,
                     prepack_step_result *res, prepack_diag *diag)
{
    prepack_store *s = NULL;
    pp_scan_meta m;
    memset(&m, 0, sizeof m);
    int rc = task_store(j, task, &s, diag);
    if (rc == PREPACK_OK)
        rc = read_parts(j, s, task, ntasks, &m, diag);
    if (rc == PREPACK_OK)
        rc = save_task(j, s, task, ntasks, &m, res, diag);
    if (rc != PREPACK_OK)
        remove_task(j, task);
    pp_scan_meta_free(&m);
    prepack_store_free(s);
    return rc;
}

/* The step's start for both kinds of scan: the task checked, the job
 * opened (created) and the task's lock held; *done when its output is
 * there and verifies. */
static int begin_scan(pp_job *j, const char *dir,
                      const prepack_step_options *o, uint32_t task,
                      uint32_t ntasks, pp_step *step, prepack_step_result *res,
                      prepack_diag *diag, int *done)
{
    *done = 0;
    int rc = pp_step_begin(step, j, dir, o, res, diag, NULL, task, ntasks);
    if (rc != PREPACK_OK || step->res->already_done) {
        pp_job_close(j);
        *done = rc == PREPACK_OK;
        return rc;
    }
    pp_job_close(j);
    if ((rc = pp_job_open(j, dir, o, 1, step->diag)) != PREPACK_OK)
        return rc;
    char lock[64], who[64];
    pp_scan_name(lock, sizeof lock, task, "lock");
    snprintf(who, sizeof who, "scan task %u", task);
    rc = pp_job_lock(j, lock, who, step->diag);
    if (rc == PREPACK_OK && already_done(j, task, ntasks))
        *done = step->res->already_done = 1;
    return rc;
}

int prepack_step_scan(const char *dir, const prepack_step_options *o,
                      uint32_t task, uint32_t ntasks, prepack_step_result *res,
                      prepack_diag *diag)
{
    if (o && o->text_key) {
        prepack_diag *d = diag;
        prepack_diag own;
        if (!d)
            d = &own;
        memset(d, 0, sizeof *d);
        if (res)
            memset(res, 0, sizeof *res);
        return pp_fail(d, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "text inputs are scanned by the Python package "
                       "(python -m prepack scan --tokenizer ...)");
    }
    pp_step step;
    pp_job j;
    int done;
    int rc = begin_scan(&j, dir, o, task, ntasks, &step, res, diag, &done);
    if (rc == PREPACK_OK && !done)
        rc = scan_task(&j, task, ntasks, step.res, step.diag);
    pp_job_close(&j);
    return rc;
}

/* ---- a scan task whose caller fills the store (text) ------------------ */

struct prepack_step_scanner {
    pp_job job;
    pp_step step;
    uint32_t task, ntasks;
    prepack_store *store;
    prepack_step_range *ranges;
    size_t nranges;
};

int prepack_step_scan_open(prepack_step_scanner **out, const char *dir,
                           const prepack_step_options *o, uint32_t task,
                           uint32_t ntasks, prepack_step_range *ranges,
                           size_t *nranges, prepack_store **store,
                           prepack_step_result *res, prepack_diag *diag)
{
    prepack_diag own;
    if (!diag)
        diag = &own;
    if (!out || !ranges || !nranges || !store || !o)
        return pp_invalid_argument(diag);
    *out = NULL;
    *store = NULL;
    *nranges = 0;
    prepack_step_scanner *sc = calloc(1, sizeof *sc);
    if (!sc)
        return pp_out_of_memory(diag);
    int done;
    int rc = begin_scan(&sc->job, dir, o, task, ntasks, &sc->step, res, diag,
                        &done);
    pp_unit *units = NULL;
    uint64_t total = 0;
    if (rc == PREPACK_OK && !done) {
        units = calloc(o->ninputs, sizeof *units);
        sc->ranges = calloc(o->ninputs, sizeof *sc->ranges);
        rc = units && sc->ranges ? pp_step_units(&sc->job, units, &total,
                                                 sc->step.diag)
                                 : pp_out_of_memory(sc->step.diag);
    }
    for (size_t i = 0; rc == PREPACK_OK && !done && i < o->ninputs; i++) {
        pp_input_part part;
        if (!pp_step_part(&units[i], total, task, ntasks, &part))
            continue;
        if (!part.whole && units[i].split != 1)
            rc = pp_fail(sc->step.diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                         "%s: only JSON lines are cut among text scan tasks",
                         o->inputs[i]);
        prepack_step_range *r = &sc->ranges[sc->nranges++];
        r->input = (uint32_t)i;
        r->whole = part.whole;
        r->begin = part.whole ? 0 : part.begin;
        r->end = part.whole ? units[i].weight : part.end;
    }
    free(units);
    if (rc == PREPACK_OK && !done)
        rc = task_store(&sc->job, task, &sc->store, sc->step.diag);
    if (rc != PREPACK_OK || done) {
        prepack_step_scan_free(sc);
        return rc;
    }
    sc->task = task;
    sc->ntasks = ntasks;
    memcpy(ranges, sc->ranges, sc->nranges * sizeof *ranges);
    *nranges = sc->nranges;
    *store = sc->store;
    *out = sc;
    return PREPACK_OK;
}

static const char *in_path(const prepack_store *s, size_t k)
{
    prepack_input_info in;
    prepack_store_input(s, k, &in);
    return in.path ? in.path : "unnamed";
}

static char *copy_text(const char *p, size_t *len)
{
    *len = p ? strlen(p) : 0;
    return p ? strdup(p) : NULL;
}

/* One part: range r, read into the store's input k (NULL: none, an
 * empty part). */
static int add_part(prepack_step_scanner *sc, const prepack_step_range *r,
                    const prepack_input_info *in, const char *first,
                    const char *last, pp_scan_meta *m, prepack_diag *diag)
{
    const char *path = sc->job.o->inputs[r->input];
    if (r->whole && (!in || in->sequences == 0))
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: empty input: no sequences", path);
    pp_scan_part *p = &m->parts[m->nparts++];
    p->input = r->input;
    p->format = in ? (uint32_t)in->format : (uint32_t)PREPACK_FORMAT_JSONL;
    if (in) {
        p->sequences = in->sequences;
        p->tokens = in->tokens;
        p->documents = in->documents;
        p->partial = in->partial_sequences;
        p->first_group = copy_text(first, &p->first_group_len);
        p->last_group = copy_text(last, &p->last_group_len);
        if ((first && !p->first_group) || (last && !p->last_group))
            return pp_out_of_memory(diag);
    }
    return PREPACK_OK;
}

/* m->parts from the store's inputs: one a range, in range order, named
 * as the range's input; a range cut from a file (not whole) whose lines
 * held no record may have none. */
static int parts_of_store(prepack_step_scanner *sc,
                          const char *const *first_groups,
                          const char *const *last_groups, pp_scan_meta *m,
                          prepack_diag *diag)
{
    const prepack_step_options *o = sc->job.o;
    size_t n = prepack_store_input_count(sc->store), k = 0;
    m->parts = calloc(sc->nranges ? sc->nranges : 1, sizeof *m->parts);
    if (!m->parts)
        return pp_out_of_memory(diag);
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < sc->nranges; i++) {
        const prepack_step_range *r = &sc->ranges[i];
        prepack_input_info in;
        if (k < n)
            prepack_store_input(sc->store, k, &in);
        int named = k < n && in.path && !strcmp(in.path, o->inputs[r->input]);
        if (named)
            k++;
        rc = add_part(sc, r, named ? &in : NULL,
                      first_groups ? first_groups[i] : NULL,
                      last_groups ? last_groups[i] : NULL, m, diag);
    }
    if (rc == PREPACK_OK && k != n)
        rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                     "scan task %u: the store's input %zu (%s) is none of "
                     "the task's parts, in order",
                     sc->task, k, in_path(sc->store, k));
    return rc;
}

int prepack_step_scan_save(prepack_step_scanner *sc,
                           const char *const *first_groups,
                           const char *const *last_groups,
                           prepack_step_result *res, prepack_diag *diag)
{
    prepack_step_result own_res;
    prepack_diag own;
    res = res ? res : &own_res;
    diag = diag ? diag : &own;
    memset(res, 0, sizeof *res);
    memset(diag, 0, sizeof *diag);
    if (!sc || !sc->store)
        return pp_invalid_argument(diag);
    pp_scan_meta m;
    memset(&m, 0, sizeof m);
    int rc = parts_of_store(sc, first_groups, last_groups, &m, diag);
    if (rc == PREPACK_OK)
        rc = save_task(&sc->job, sc->store, sc->task, sc->ntasks, &m, res,
                       diag);
    if (rc != PREPACK_OK)
        remove_task(&sc->job, sc->task);
    pp_scan_meta_free(&m);
    prepack_store_free(sc->store); /* saved or not, it is spent */
    sc->store = NULL;
    return rc;
}

void prepack_step_scan_free(prepack_step_scanner *sc)
{
    if (!sc)
        return;
    if (sc->store) { /* opened, never saved: its files go */
        prepack_store_free(sc->store);
        remove_task(&sc->job, sc->task);
    }
    pp_job_close(&sc->job);
    free(sc->ranges);
    free(sc);
}
