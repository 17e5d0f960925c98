/* Write task t of n: the shards pp_step_shards_of gives it, built from
 * plan.rows and the tokens where the scan tasks found them (their token
 * files, or the inputs themselves), through the same writer as prepack
 * pack, so the bytes are the same. The shards' names, sizes and hashes go
 * to write-T-of-N.meta, written last: what finalize checks. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "steps/job.h"
#include "ingest/store.h"
#include "shards/part.h"

/* A file mapped whole, read-only; opened on first use. */
typedef struct mapped {
    const unsigned char *data;
    uint64_t size;
    int tried;
} mapped;

/* What one scan task left: its sources and its locations. */
typedef struct scan_view {
    pp_scan_meta meta;
    mapped locs, mask;
    mapped *sources; /* [meta.nsources] */
} scan_view;

typedef struct writing {
    pp_job job;
    pp_plan_meta plan;
    scan_view *scans; /* [plan.scan_tasks] */
    /* the row being built */
    unsigned width;
    void *tokens;
    int32_t *cu;
    uint64_t *seq_ids;
    uint8_t *mask;
    uint32_t *starts;
    uint64_t mapped; /* token and location bytes read from mappings */
} writing;

/* Maps n bytes of fd (n > 0) read-only; the descriptor is the caller's. */
static int map_fd(mapped *m, int fd, uint64_t n, const char *dir,
                  const char *name, prepack_diag *diag)
{
    void *p = n <= SIZE_MAX
                  ? mmap(NULL, (size_t)n, PROT_READ, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
    if (p == MAP_FAILED)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot map %s/%s: %s", dir, name, strerror(errno));
    m->data = p;
    m->size = n;
    return PREPACK_OK;
}

/* Scan task t's file NAME, mapped whole once its bytes are seen to be
 * what the task's record says: `size` bytes, then their XXH64, equal to
 * `hash` (rule: every byte read back from a job file is covered by a hash
 * checked before use). The size is the record's, so the mapping is never
 * past the file. */
static int map_job_file(mapped *m, const pp_job *j, uint32_t t,
                        const char *name, uint64_t size, uint64_t hash,
                        prepack_diag *diag)
{
    m->tried = 1;
    uint64_t got;
    int fd = pp_rec_open(j->job_fd, name, &got);
    int rc = fd >= 0 && size <= UINT64_MAX - 8 && got == size + 8
                 ? PREPACK_OK
                 : PREPACK_ECORRUPT;
    if (rc == PREPACK_OK)
        rc = map_fd(m, fd, size + 8, j->job_dir, name, diag);
    if (fd >= 0)
        close(fd);
    if (rc == PREPACK_OK && (XXH64(m->data, (size_t)size, 0) != hash ||
                             pp_load_le(m->data + size, 8) != hash)) {
        munmap((void *)m->data, (size_t)m->size);
        m->data = NULL;
        rc = PREPACK_ECORRUPT;
    }
    if (rc == PREPACK_ECORRUPT)
        return pp_fail(diag, rc, PREPACK_NO_RECORD,
                       "%s/%s is missing or damaged (its size or hash is "
                       "not what the task recorded): rerun scan task %u",
                       j->job_dir, name, t);
    return rc;
}

static void unmap(mapped *m)
{
    if (m->data)
        munmap((void *)m->data, (size_t)m->size);
    m->data = NULL;
}

static int open_scans(writing *w, prepack_diag *diag)
{
    uint32_t n = w->plan.scan_tasks;
    w->scans = calloc(n, sizeof *w->scans);
    if (!w->scans)
        return pp_out_of_memory(diag);
    int rc = PREPACK_OK;
    for (uint32_t t = 0; rc == PREPACK_OK && t < n; t++) {
        scan_view *v = &w->scans[t];
        rc = pp_scan_meta_load(&w->job, t, n, &v->meta, diag);
        if (rc != PREPACK_OK)
            break;
        if (v->meta.sequences !=
            w->plan.scan_first[t + 1] - w->plan.scan_first[t])
            return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                           "scan task %u's result changed after the plan: "
                           "rerun prepack plan",
                           t);
        v->sources = calloc(v->meta.nsources, sizeof *v->sources);
        if (!v->sources)
            return pp_out_of_memory(diag);
        char name[64];
        pp_scan_name(name, sizeof name, t, "locs");
        rc = map_job_file(&v->locs, &w->job, t, name, v->meta.locs_size,
                          v->meta.locs_hash, diag);
        if (rc == PREPACK_OK && v->meta.mask_size) {
            pp_scan_name(name, sizeof name, t, "mask");
            rc = map_job_file(&v->mask, &w->job, t, name, v->meta.mask_size,
                              v->meta.mask_hash, diag);
        }
    }
    return rc;
}

/* An input read in place: the INPUT of the command line with the
 * record's index (never a path from the record), opened once and checked
 * through that descriptor against what the scan saw (size, mtime, inode),
 * then mapped. Not the device: a shared file system's files have the same
 * inode on every client but a device number each client assigns, and the
 * write task may run on another node than the scan. */
static int map_input(writing *w, uint32_t t, const pp_scan_source *s, mapped *m,
                     prepack_diag *diag)
{
    m->tried = 1;
    const pp_scan_meta *meta = &w->scans[t].meta;
    uint32_t format = 0;
    for (uint32_t i = 0; i < meta->nparts; i++)
        if (meta->parts[i].input == s->input)
            format = meta->parts[i].format;
    char path[4200];
    pp_job_input_file(&w->job, s->input, format, path, sizeof path);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    int same = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
               (uint64_t)st.st_size == s->size &&
               (uint64_t)st.st_mtim.tv_sec * 1000000000u +
                       (uint64_t)st.st_mtim.tv_nsec ==
                   s->stamp &&
               (uint64_t)st.st_ino == s->ino;
    int rc = same ? PREPACK_OK
                  : pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                            "%s changed (or went) after scan task %u read "
                            "it: rerun the job from scan",
                            path, t);
    if (rc == PREPACK_OK && s->size)
        rc = map_fd(m, fd, s->size, ".", path, diag);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Source k of scan task t, mapped on first use: its token file (k = 0),
 * or an input. */
static const mapped *source(writing *w, uint32_t t, uint32_t k,
                            prepack_diag *diag)
{
    scan_view *v = &w->scans[t];
    mapped *m = &v->sources[k];
    const pp_scan_source *s = &v->meta.sources[k];
    if (m->tried)
        return m->data || s->size == 0 ? m : NULL;
    char name[64];
    pp_scan_name(name, sizeof name, t, "tokens");
    int rc = k == 0 ? map_job_file(m, &w->job, t, name, s->size, s->stamp, diag)
                    : map_input(w, t, s, m, diag);
    return rc == PREPACK_OK ? m : NULL;
}

/* Appends item (seq, first, len) to the row at token `at`. */
static int add_item(writing *w, uint64_t seq, uint32_t first, uint32_t len,
                    uint32_t at, prepack_diag *diag)
{
    const uint64_t *sf = w->plan.scan_first;
    uint32_t lo = 0, hi = w->plan.scan_tasks;
    while (hi - lo > 1) { /* the task whose sequences hold seq */
        uint32_t mid = lo + (hi - lo) / 2;
        if (sf[mid] <= seq)
            lo = mid;
        else
            hi = mid;
    }
    scan_view *v = &w->scans[lo];
    uint64_t local = seq - sf[lo];
    if (seq >= w->plan.sequences || local >= v->meta.sequences)
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "plan.rows names sequence %llu, past the inputs: "
                       "rerun prepack plan",
                       (unsigned long long)seq);
    const unsigned char *loc = v->locs.data + local * PP_LOC_BYTES;
    uint32_t k = pp_load_le32(loc);
    uint64_t off = pp_load_le(loc + 4, 8);
    if (k >= v->meta.nsources)
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "scan task %u's locations are damaged: rerun it", lo);
    const pp_scan_source *s = &v->meta.sources[k];
    uint64_t need = ((uint64_t)first + len) * s->width;
    const mapped *m = len ? source(w, lo, k, diag) : NULL;
    if (len && (!m || off > s->size || need > s->size - off || off % s->width))
        return m ? pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                           "scan task %u's locations are damaged: rerun it", lo)
                 : diag->code; /* why source() failed */
    w->mapped += PP_LOC_BYTES + (uint64_t)len * s->width;
    if (len)
        pp_tokens_convert(m->data + off + (uint64_t)first * s->width, s->width,
                          (int)s->is_signed, len, w->width,
                          (unsigned char *)w->tokens + (size_t)at * w->width);
    if (!w->mask)
        return PREPACK_OK;
    uint64_t mask_at = off / s->width + first; /* within the tokens */
    if (k == 0 && v->mask.data && mask_at + len <= v->meta.mask_size)
        memcpy(w->mask + at, v->mask.data + mask_at, len);
    else
        memset(w->mask + at, 1, len);
    return PREPACK_OK;
}

/* Row by row from one shard's bytes of plan.rows into the writer; or,
 * `sample` > 0, only the ids of its first `sample` rows shown to the
 * writer for the set's id table (part.h). */
static int write_shard(writing *w, prepack_writer *wr, const unsigned char *p,
                       size_t n, uint32_t sample, prepack_diag *diag)
{
    const unsigned char *end = p + n;
    uint32_t L = w->plan.max_seq_len;
    for (uint32_t r = 0; p < end && (!sample || r < sample); r++) {
        if (end - p < 4)
            return PREPACK_ECORRUPT;
        uint32_t k = pp_load_le32(p);
        p += 4;
        if (k == 0 || k > L || (size_t)(end - p) / 16 < k)
            return PREPACK_ECORRUPT;
        uint32_t t = 0;
        w->cu[0] = 0;
        for (uint32_t i = 0; i < k; i++, p += 16) {
            uint64_t seq = pp_load_le(p, 8);
            uint32_t first = pp_load_le32(p + 8), len = pp_load_le32(p + 12);
            if (len > L - t)
                return PREPACK_ECORRUPT;
            int rc = add_item(w, seq, first, len, t, diag);
            if (rc != PREPACK_OK)
                return rc;
            w->seq_ids[i] = seq;
            if (w->starts)
                w->starts[i] = first;
            t += len;
            w->cu[i + 1] = (int32_t)t;
        }
        if (sample) {
            pp_writer_sample(wr, w->tokens, t);
            continue;
        }
        prepack_row row = {t,         k,        (prepack_dtype)w->plan.dtype,
                           w->tokens, w->cu,    w->seq_ids,
                           w->mask,   w->starts};
        int rc = prepack_writer_add(wr, &row, diag);
        if (rc != PREPACK_OK)
            return rc;
    }
    return PREPACK_OK;
}

static int alloc_row(writing *w, prepack_diag *diag)
{
    size_t L = w->plan.max_seq_len;
    w->width = (unsigned)prepack_dtype_width((prepack_dtype)w->plan.dtype);
    w->tokens = malloc(L * w->width);
    w->cu = malloc((L + 1) * sizeof *w->cu);
    w->seq_ids = malloc(L * sizeof *w->seq_ids);
    if (w->plan.has_mask)
        w->mask = malloc(L);
    if (w->plan.has_offsets)
        w->starts = malloc(L * sizeof *w->starts);
    if (!w->tokens || !w->cu || !w->seq_ids || (w->plan.has_mask && !w->mask) ||
        (w->plan.has_offsets && !w->starts))
        return pp_out_of_memory(diag);
    return PREPACK_OK;
}

/* Shards [s0, s1)'s rows from plan.rows, each shard's bytes checked
 * against the plan's hash before use. */
static int read_plan_rows(const writing *w, uint64_t s0, uint64_t s1,
                          unsigned char **out, prepack_diag *diag)
{
    const pp_plan_meta *m = &w->plan;
    uint64_t lo = m->shard_offset[s0], hi = m->shard_offset[s1], size = 0;
    int fd = pp_rec_open(w->job.job_fd, "plan.rows", &size);
    /* the slice bounded by the file before it sizes the buffer */
    int ok = fd >= 0 && size >= 8 && hi <= size - 8;
    *out = ok ? malloc((size_t)(hi - lo) + 1) : NULL;
    ok = ok && *out && pp_read_at(fd, *out, (size_t)(hi - lo), lo) == 0;
    if (fd >= 0)
        close(fd);
    for (uint64_t s = s0; ok && s < s1; s++)
        ok = XXH64(*out + (m->shard_offset[s] - lo),
                   m->shard_offset[s + 1] - m->shard_offset[s],
                   0) == m->shard_hash[s];
    if (!ok)
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "%s/plan.rows is missing or damaged: rerun prepack "
                       "plan",
                       w->job.job_dir);
    return PREPACK_OK;
}

/* The set's first frame (the first rows of shard 0) shown to the writer
 * for the id table, so every task codes ids as prepack pack does. */
static int sample_first_frame(writing *w, prepack_writer *wr,
                              prepack_diag *diag)
{
    const pp_plan_meta *m = &w->plan;
    unsigned char *rows = NULL;
    int rc = read_plan_rows(w, 0, 1, &rows, diag);
    if (rc == PREPACK_OK)
        rc = write_shard(w, wr, rows, m->shard_offset[1] - m->shard_offset[0],
                         pp_writer_rows_per_frame(wr), diag);
    if (rc == PREPACK_ECORRUPT && !diag->message[0])
        rc = pp_fail(diag, rc, PREPACK_NO_RECORD,
                     "plan.rows is damaged: rerun prepack plan");
    if (rc == PREPACK_OK)
        rc = pp_writer_sampled(wr, diag);
    free(rows);
    return rc;
}

static int write_shards(writing *w, uint32_t task, uint32_t ntasks, uint64_t s0,
                        uint64_t s1, pp_write_meta *out, prepack_diag *diag)
{
    const pp_plan_meta *m = &w->plan;
    unsigned char *rows = NULL;
    int rc = read_plan_rows(w, s0, s1, &rows, diag);
    if (rc == PREPACK_OK)
        rc = open_scans(w, diag);
    if (rc == PREPACK_OK)
        rc = alloc_row(w, diag);
    prepack_writer *wr = NULL;
    prepack_writer_options wo = w->job.o->writer;
    wo.shard_rows = m->shard_rows;
    wo.rows_per_frame = m->rows_per_frame;
    wo.level = m->level;
    if (rc == PREPACK_OK && s1 > s0)
        rc = pp_writer_create_part(&wr, w->job.dir, m->max_seq_len,
                                   (prepack_dtype)m->dtype, &wo, s0, diag);
    if (rc == PREPACK_OK && wr)
        rc = sample_first_frame(w, wr, diag);
    for (uint64_t s = s0; rc == PREPACK_OK && s < s1; s++) {
        rc = write_shard(w, wr,
                         rows + (m->shard_offset[s] - m->shard_offset[s0]),
                         m->shard_offset[s + 1] - m->shard_offset[s], 0, diag);
        if (rc == PREPACK_ECORRUPT && !diag->message[0])
            rc = pp_fail(diag, rc, PREPACK_NO_RECORD,
                         "plan.rows is damaged: rerun prepack plan");
    }
    if (rc == PREPACK_OK && wr)
        rc = pp_writer_finish_part(wr, diag);
    size_t count = 0;
    const pp_shard_info *infos = wr ? pp_writer_shards(wr, &count) : NULL;
    if (rc == PREPACK_OK && count != s1 - s0)
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "write task %u wrote %zu shards, not %llu: rerun "
                     "prepack plan",
                     task, count, (unsigned long long)(s1 - s0));
    if (rc == PREPACK_OK) {
        out->key = w->job.plan_key;
        out->task = task;
        out->ntasks = ntasks;
        out->rows_per_frame = m->rows_per_frame;
        out->first = s0;
        out->count = count;
        out->shards = calloc(count ? count : 1, sizeof *out->shards);
        if (!out->shards)
            rc = pp_out_of_memory(diag);
        else if (count)
            memcpy(out->shards, infos, count * sizeof *infos);
    }
    prepack_writer_free(wr); /* unfinished: removes its shards */
    free(rows);
    return rc;
}

static void release(writing *w)
{
    for (uint32_t t = 0; w->scans && t < w->plan.scan_tasks; t++) {
        scan_view *v = &w->scans[t];
        for (uint32_t k = 0; v->sources && k < v->meta.nsources; k++)
            unmap(&v->sources[k]);
        free(v->sources);
        unmap(&v->locs);
        unmap(&v->mask);
        pp_scan_meta_free(&v->meta);
    }
    free(w->scans);
    free(w->tokens);
    free(w->cu);
    free(w->seq_ids);
    free(w->mask);
    free(w->starts);
    pp_plan_meta_free(&w->plan);
}

int pp_job_shard_good(const pp_job *j, const pp_shard_info *s, int hash)
{
    uint64_t size, h = 0;
    int fd = strchr(s->file, '/') ? -1 : pp_rec_open(j->dir_fd, s->file, &size);
    if (fd < 0)
        return 0;
    int ok = size == s->bytes &&
             (!hash || (pp_hash_fd(fd, size, &h) == 0 && h == s->xxh64));
    close(fd);
    return ok;
}

static int already_written(const pp_job *j, const pp_plan_meta *plan,
                           uint32_t t, uint32_t n)
{
    pp_write_meta m;
    int missing;
    prepack_diag ignored;
    if (pp_write_meta_load(j, t, n, plan->shards, plan->shard_rows, &m,
                           &missing, &ignored) != PREPACK_OK)
        return 0;
    int ok = 1;
    for (uint64_t i = 0; ok && i < m.count; i++)
        ok = pp_job_shard_good(j, &m.shards[i], 1);
    free(m.shards);
    return ok;
}

static int write_task(writing *w, uint32_t task, uint32_t ntasks,
                      prepack_step_result *res, prepack_diag *diag)
{
    char name[64];
    pp_write_lock_name(name, sizeof name, task, ntasks);
    char who[64];
    snprintf(who, sizeof who, "write task %u of %u", task, ntasks);
    int rc =
        w->job.job_fd < 0
            ? pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                      "%s has no plan: run prepack plan first", w->job.job_dir)
            : pp_job_lock(&w->job, name, who, diag);
    if (rc == PREPACK_OK)
        rc = pp_plan_meta_load(&w->job, &w->plan, diag);
    if (rc != PREPACK_OK)
        return rc;
    if (already_written(&w->job, &w->plan, task, ntasks)) {
        res->already_done = 1;
        return PREPACK_OK;
    }
    uint64_t s0, s1;
    pp_step_shards_of(w->plan.shards, task, ntasks, &s0, &s1);
    pp_write_name(name, sizeof name, task, ntasks);
    unlinkat(w->job.job_fd, name, 0);
    pp_write_meta out;
    memset(&out, 0, sizeof out);
    rc = write_shards(w, task, ntasks, s0, s1, &out, diag);
    pp_rec r;
    if (rc == PREPACK_OK)
        rc = pp_rec_create(&r, w->job.job_fd, w->job.job_dir, name, diag);
    if (rc == PREPACK_OK) {
        pp_write_meta_visit(&r, &out);
        rc = pp_rec_save(&r, diag);
    }
    if (rc == PREPACK_OK) {
        fsync(w->job.job_fd);
        res->shards = out.count;
        res->bytes_mapped = w->mapped;
        for (uint64_t i = 0; i < out.count; i++) {
            res->rows += out.shards[i].rows;
            res->tokens += out.shards[i].tokens;
            res->bytes_written += out.shards[i].bytes;
        }
    }
    free(out.shards);
    return rc;
}

int prepack_step_write(const char *dir, const prepack_step_options *o,
                       uint32_t task, uint32_t ntasks, prepack_step_result *res,
                       prepack_diag *diag)
{
    pp_step step;
    writing w;
    memset(&w, 0, sizeof w);
    int rc =
        pp_step_begin(&step, &w.job, dir, o, res, diag, NULL, task, ntasks);
    if (rc == PREPACK_OK && !step.res->already_done)
        rc = write_task(&w, task, ntasks, step.res, step.diag);
    release(&w);
    pp_job_close(&w.job);
    return rc;
}
