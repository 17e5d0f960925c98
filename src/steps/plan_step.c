/* The plan step: every scan task's lengths, in task order, planned once,
 * exactly as prepack pack plans them; the rows written shard by shard to
 * plan.rows (each shard's bytes hashed, so a write task checks just what
 * it reads), then plan.meta last: the inputs, the report, the layout.
 *
 * plan.rows, per row: u32 k, then k items of u64 sequence id, u32 first
 * token, u32 tokens. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "steps/job.h"
#include "plan/plan.h"
#include "shards/part.h"

typedef struct planning {
    pp_job job;
    uint32_t ntasks;
    uint32_t *lengths;
    size_t n;
    uint32_t max_id, has_mask;
    pp_plan_meta meta;
    uint8_t *seen; /* per input: some task read part of it */
    uint64_t *reach, *bin_size, *total; /* Megatron, per input */
    /* groups: the joins over all tasks, and per input the last group
     * value read so far (malloc'd; NULL: the last record had none) */
    uint64_t *joins;
    size_t njoins, joins_cap;
    char **tail;
    size_t *tail_len;
} planning;

static int add_join(planning *p, uint64_t id, prepack_diag *diag)
{
    if (p->njoins == p->joins_cap) {
        size_t cap = p->joins_cap ? 2 * p->joins_cap : 1024;
        uint64_t *grown = realloc(p->joins, cap * sizeof *grown);
        if (!grown)
            return pp_out_of_memory(diag);
        p->joins = grown;
        p->joins_cap = cap;
    }
    p->joins[p->njoins++] = id;
    return PREPACK_OK;
}

/* A part's first record continues the group the input's previous part
 * ended with: the one join a task's cut hides from both tasks. */
static int join_across_cut(planning *p, const pp_scan_part *part,
                           uint64_t first, prepack_diag *diag)
{
    size_t k = part->input;
    int rc = PREPACK_OK;
    if (part->sequences == 0) /* no record: the tail stays */
        return PREPACK_OK;
    if (part->first_group && p->tail[k] &&
        part->first_group_len == p->tail_len[k] &&
        memcmp(part->first_group, p->tail[k], p->tail_len[k]) == 0)
        rc = add_join(p, first, diag);
    free(p->tail[k]);
    p->tail[k] = NULL;
    if (part->last_group) {
        p->tail[k] = malloc(part->last_group_len + 1);
        if (!p->tail[k])
            return pp_out_of_memory(diag);
        memcpy(p->tail[k], part->last_group, part->last_group_len + 1);
        p->tail_len[k] = part->last_group_len;
    }
    return rc;
}

/* The size a task's file must have (its hash is checked by the write
 * tasks, which read it). */
static int file_size_is(const pp_job *j, uint32_t t, const char *ext,
                        uint64_t want)
{
    char name[64];
    uint64_t size;
    pp_scan_name(name, sizeof name, t, ext);
    int fd = pp_rec_open(j->job_fd, name, &size);
    if (fd >= 0)
        close(fd);
    return fd >= 0 && want <= UINT64_MAX - 8 && size == want + 8;
}

/* Adds task t's parts to the inputs; local = the task's first sequence. */
static int merge_parts(planning *p, const pp_scan_meta *m, uint64_t first,
                       prepack_diag *diag)
{
    for (uint32_t i = 0; i < m->nparts; i++) {
        const pp_scan_part *part = &m->parts[i];
        if (part->input >= p->meta.ninputs)
            return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                           "scan task %u names input %u of %u: rerun it",
                           m->task, part->input, p->meta.ninputs);
        prepack_input_info *in = &p->meta.inputs[part->input];
        if (!p->seen[part->input]) {
            in->first_sequence = first;
            in->format = (prepack_format)part->format;
        }
        int rc = join_across_cut(p, part, first, diag);
        if (rc != PREPACK_OK)
            return rc;
        p->seen[part->input] = 1;
        in->sequences += part->sequences;
        in->tokens += part->tokens;
        in->documents += part->documents;
        in->partial_sequences += part->partial;
        first += part->sequences;
        size_t k = part->input;
        if (part->bin_reached > p->reach[k])
            p->reach[k] = part->bin_reached;
        p->bin_size[k] = part->bin_size;
        p->total[k] = part->sequences_total;
    }
    return PREPACK_OK;
}

/* Scan task t: its result checked, its lengths appended. */
static int take_scan(planning *p, uint32_t t, prepack_diag *diag)
{
    pp_scan_meta m;
    int rc = pp_scan_meta_load(&p->job, t, p->ntasks, &m, diag);
    if (rc != PREPACK_OK)
        return rc;
    char name[64];
    pp_scan_name(name, sizeof name, t, "lengths");
    pp_rec r;
    int missing;
    rc = pp_rec_load(&r, p->job.job_fd, p->job.job_dir, name, &missing, diag);
    const char *bad =
        rc != PREPACK_OK || r.in_len != m.sequences * 4 ||
                XXH64(r.in, r.in_len, 0) != m.lengths_hash
            ? "lengths"
        : !file_size_is(&p->job, t, "locs", m.locs_size)         ? "locs"
        : !file_size_is(&p->job, t, "tokens", m.sources[0].size) ? "tokens"
        : m.mask_size && !file_size_is(&p->job, t, "mask", m.mask_size) ? "mask"
                                                                        : NULL;
    if (bad) {
        if (rc == PREPACK_OK)
            pp_rec_release(&r);
        pp_scan_meta_free(&m);
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "%s/scan-%05u.%s is missing or damaged (its size or "
                       "hash is not what the task recorded): rerun scan "
                       "task %u of %u",
                       p->job.job_dir, t, bad, t, p->ntasks);
    }
    uint32_t *grown = realloc(p->lengths, (p->n + m.sequences + 1) * 4);
    if (!grown) {
        pp_rec_release(&r);
        pp_scan_meta_free(&m);
        return pp_out_of_memory(diag);
    }
    p->lengths = grown;
    for (uint64_t i = 0; i < m.sequences; i++)
        p->lengths[p->n + i] = pp_load_le32(r.in + 4 * i);
    pp_rec_release(&r);
    p->meta.scan_first[t] = p->n;
    rc = merge_parts(p, &m, p->n, diag);
    for (uint64_t i = 0; rc == PREPACK_OK && i < m.njoins; i++)
        rc = add_join(p, p->n + m.joins[i], diag);
    p->n += m.sequences;
    p->max_id = m.max_id > p->max_id ? m.max_id : p->max_id;
    p->has_mask |= m.has_mask;
    pp_scan_meta_free(&m);
    return rc;
}

/* The checks prepack_ingest_file makes on a whole input, made once every
 * part of it is in. */
static int check_inputs(planning *p, prepack_diag *diag)
{
    const prepack_step_options *o = p->job.o;
    for (uint32_t i = 0; i < p->meta.ninputs; i++) {
        prepack_input_info *in = &p->meta.inputs[i];
        if (!p->seen[i])
            return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                           "no scan task read %s: rerun the scan tasks",
                           in->path);
        if (in->format == PREPACK_FORMAT_MEGATRON) {
            char prefix[4096], bin[4200], idx[4200];
            pp_megatron_prefix(in->path, prefix, sizeof prefix);
            snprintf(bin, sizeof bin, "%s.bin", prefix);
            snprintf(idx, sizeof idx, "%s.idx", prefix);
            int rc = pp_megatron_check_reach(
                bin, idx, p->bin_size[i], p->total[i], p->reach[i],
                o->ingest.allow_trailing_bytes, diag);
            if (rc != PREPACK_OK)
                return rc;
        }
        if (in->sequences == 0)
            return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                           "%s: empty input: no sequences", in->path);
    }
    return PREPACK_OK;
}

static int read_scans(planning *p, prepack_diag *diag)
{
    const prepack_step_options *o = p->job.o;
    pp_plan_meta *m = &p->meta;
    m->ninputs = (uint32_t)o->ninputs;
    m->scan_tasks = p->ntasks;
    m->scan_first = calloc((size_t)p->ntasks + 1, 8);
    m->inputs = calloc(o->ninputs, sizeof *m->inputs);
    p->seen = calloc(o->ninputs, 1);
    p->reach = calloc(o->ninputs, 8);
    p->bin_size = calloc(o->ninputs, 8);
    p->total = calloc(o->ninputs, 8);
    p->tail = calloc(o->ninputs, sizeof *p->tail);
    p->tail_len = calloc(o->ninputs, sizeof *p->tail_len);
    if (!m->scan_first || !m->inputs || !p->seen || !p->reach || !p->bin_size ||
        !p->total || !p->tail || !p->tail_len)
        return pp_out_of_memory(diag);
    for (size_t i = 0; i < o->ninputs; i++)
        if (!(m->inputs[i].path = strdup(o->inputs[i])))
            return pp_out_of_memory(diag);
    int rc = PREPACK_OK;
    for (uint32_t t = 0; rc == PREPACK_OK && t < p->ntasks; t++)
        rc = take_scan(p, t, diag);
    m->scan_first[p->ntasks] = p->n;
    return rc == PREPACK_OK ? check_inputs(p, diag) : rc;
}

/* An overlong sequence named as pack names it: its input and index. */
static int plan_failed(const planning *p, int rc, prepack_diag *diag)
{
    if (rc == PREPACK_EOVERLONG)
        pp_plan_name_input(diag, p->meta.inputs, p->meta.ninputs, p->lengths,
                           p->n, p->njoins != 0, p->job.o->plan.max_seq_len);
    return rc;
}

/* plan.rows: each shard's rows, hashed shard by shard. */
static int write_rows(planning *p, const prepack_plan *plan, prepack_diag *diag)
{
    pp_plan_meta *m = &p->meta;
    pp_rec r;
    int rc =
        pp_rec_create(&r, p->job.job_fd, p->job.job_dir, "plan.rows", diag);
    if (rc != PREPACK_OK)
        return rc;
    prepack_item *items = malloc(((size_t)m->max_seq_len + 1) * sizeof *items);
    if (!items) {
        pp_rec_abandon(&r);
        return pp_out_of_memory(diag);
    }
    for (uint64_t s = 0; s < m->shards; s++) {
        m->shard_offset[s] = r.written;
        XXH64_state_t h;
        XXH64_reset(&h, 0);
        uint64_t end = (s + 1) * m->shard_rows < m->rows
                           ? (s + 1) * m->shard_rows
                           : m->rows;
        for (uint64_t row = s * m->shard_rows; row < end; row++) {
            uint32_t k = (uint32_t)prepack_plan_row_items(
                plan, (size_t)row, items, (size_t)m->max_seq_len + 1);
            unsigned char b[16];
            for (int i = 0; i < 4; i++)
                b[i] = (unsigned char)(k >> (8 * i));
            pp_rec_bytes(&r, b, 4);
            XXH64_update(&h, b, 4);
            for (uint32_t i = 0; i < k; i++) {
                for (int x = 0; x < 8; x++)
                    b[x] = (unsigned char)(items[i].seq_id >> (8 * x));
                for (int x = 0; x < 4; x++) {
                    b[8 + x] = (unsigned char)(items[i].offset >> (8 * x));
                    b[12 + x] = (unsigned char)(items[i].length >> (8 * x));
                }
                pp_rec_bytes(&r, b, 16);
                XXH64_update(&h, b, 16);
            }
        }
        m->shard_hash[s] = XXH64_digest(&h);
    }
    m->shard_offset[m->shards] = r.written;
    free(items);
    return pp_rec_save(&r, diag);
}

static int by_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The joins over all tasks, rising and each once (a scan's records may
 * name one twice), planned as prepack pack plans a store. */
static int plan_joins(planning *p, prepack_plan **plan, prepack_diag *diag)
{
    if (p->njoins) /* none: joins is NULL, which qsort may not take */
        qsort(p->joins, p->njoins, sizeof *p->joins, by_id);
    size_t kept = 0;
    for (size_t i = 0; i < p->njoins; i++)
        if (p->joins[i] > 0 && p->joins[i] < p->n &&
            (kept == 0 || p->joins[i] != p->joins[kept - 1]))
            p->joins[kept++] = p->joins[i];
    p->njoins = kept;
    return prepack_plan_joined(plan, p->lengths, p->n, p->joins, p->njoins,
                               &p->job.o->plan, diag);
}

static int plan_and_save(planning *p, prepack_step_result *res,
                         prepack_diag *diag)
{
    const prepack_step_options *o = p->job.o;
    pp_plan_meta *m = &p->meta;
    prepack_plan *plan = NULL;
    int rc = plan_joins(p, &plan, diag);
    if (rc != PREPACK_OK)
        return plan_failed(p, rc, diag);
    rc = prepack_report_compute(plan, p->lengths, p->n, o->batch_size,
                                &m->report);
    prepack_dtype dtype = o->store.dtype != PREPACK_DTYPE_AUTO ? o->store.dtype
                          : p->max_id > UINT16_MAX ? PREPACK_DTYPE_UINT32
                                                   : PREPACK_DTYPE_UINT16;
    m->key = p->job.plan_key;
    m->max_seq_len = o->plan.max_seq_len;
    m->dtype = (uint32_t)dtype;
    m->has_mask = p->has_mask;
    m->has_offsets = (uint32_t)pp_plan_has_offsets(plan);
    m->rows_per_frame =
        pp_writer_frame_rows(o->writer.rows_per_frame, m->max_seq_len, dtype);
    m->level = o->writer.level ? o->writer.level : PREPACK_DEFAULT_ZSTD_LEVEL;
    m->shard_rows = p->job.shard_rows;
    m->rows = prepack_plan_row_count(plan);
    m->items = prepack_plan_item_count(plan);
    m->sequences = p->n;
    m->shards = (m->rows + m->shard_rows - 1) / m->shard_rows;
    m->shard_offset = calloc(m->shards + 1, 8);
    m->shard_hash = calloc(m->shards ? m->shards : 1, 8);
    if (rc == PREPACK_OK && (!m->shard_offset || !m->shard_hash))
        rc = pp_out_of_memory(diag);
    if (rc == PREPACK_OK)
        rc = write_rows(p, plan, diag);
    prepack_plan_free(plan);
    pp_rec r;
    if (rc == PREPACK_OK)
        rc =
            pp_rec_create(&r, p->job.job_fd, p->job.job_dir, "plan.meta", diag);
    if (rc == PREPACK_OK) {
        pp_plan_meta_visit(&r, m);
        rc = pp_rec_save(&r, diag);
    }
    if (rc == PREPACK_OK)
        fsync(p->job.job_fd);
    res->sequences = p->n;
    res->tokens = m->report.plan.tokens;
    res->rows = m->rows;
    res->shards = m->shards;
    res->bytes_written = m->shard_offset ? m->shard_offset[m->shards] : 0;
    return rc;
}

static int already_planned(const pp_job *j, uint32_t ntasks)
{
    pp_plan_meta m;
    prepack_diag ignored;
    if (pp_plan_meta_load(j, &m, &ignored) != PREPACK_OK)
        return 0;
    uint64_t size, hash;
    int ok = m.scan_tasks == ntasks &&
             pp_rec_verify(j->job_fd, "plan.rows", &size, &hash) == 0 &&
             size == m.shard_offset[m.shards];
    pp_plan_meta_free(&m);
    return ok;
}

static int plan_job(planning *p, uint32_t scan_tasks, prepack_step_result *res,
                    prepack_diag *diag)
{
    if (p->job.job_fd < 0)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s has no scan results: run the %u scan tasks "
                       "first (prepack scan ... --task-index I "
                       "--task-count %u)",
                       p->job.dir, scan_tasks, scan_tasks);
    int rc = pp_job_lock(&p->job, "plan.lock", "the plan", diag);
    if (rc != PREPACK_OK)
        return rc;
    if (already_planned(&p->job, scan_tasks)) {
        res->already_done = 1;
        return PREPACK_OK;
    }
    p->ntasks = scan_tasks;
    rc = read_scans(p, diag);
    if (rc == PREPACK_OK) { /* the old plan, if any, goes only now */
        pp_job_remove(&p->job, "plan.");
        rc = plan_and_save(p, res, diag);
        if (rc != PREPACK_OK) /* nothing half-written stays */
            pp_job_remove(&p->job, "plan.");
    }
    return rc;
}

int prepack_step_plan(const char *dir, const prepack_step_options *o,
                      uint32_t scan_tasks, prepack_step_result *res,
                      prepack_diag *diag)
{
    pp_step step;
    planning p;
    memset(&p, 0, sizeof p);
    int rc =
        pp_step_begin(&step, &p.job, dir, o, res, diag, "scan", 0, scan_tasks);
    if (rc == PREPACK_OK && !step.res->already_done)
        rc = plan_job(&p, scan_tasks, step.res, step.diag);
    pp_job_close(&p.job);
    free(p.lengths);
    free(p.seen);
    free(p.reach);
    free(p.bin_size);
    free(p.total);
    for (size_t i = 0; p.tail && i < o->ninputs; i++)
        free(p.tail[i]);
    free(p.tail);
    free(p.tail_len);
    free(p.joins);
    pp_plan_meta_free(&p.meta);
    return rc;
}
