/* The records the steps hand each other (job.h): one visitor per record
 * type for both directions, and the loaders, which take nothing on trust.
 * A record's trailing XXH64 is a checksum, not a key: a crafted record
 * can carry a correct one, so every count is bounded by the bytes that
 * hold it before it sizes an allocation or a loop, and every field the
 * later steps index with is checked against the others and against the
 * command line before use. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "steps/job.h"
#include "shards/part.h"

/* Reading: allocates n elements of `size` bytes, once the file is seen to
 * hold n records of at least `wire` bytes each. */
static void *rec_array(pp_rec *r, void **p, uint64_t n, size_t size,
                       size_t wire)
{
    if (r->reading) {
        *p = NULL;
        if (r->bad || n > (r->in_len - r->pos) / wire) {
            r->bad = 1; /* a count the file cannot hold */
            return NULL;
        }
        *p = calloc(n ? (size_t)n : 1, size);
        if (!*p)
            r->bad = 1;
    }
    return *p;
}

static const char SCAN_MAGIC[8] = "PPJSCAN3";
static const char PLAN_MAGIC[8] = "PPJPLAN2";
static const char WRITE_MAGIC[8] = "PPJWRIT2";

static void rec_magic(pp_rec *r, const char magic[8])
{
    char b[8];
    memcpy(b, magic, 8);
    pp_rec_bytes(r, b, 8);
    if (r->reading && memcmp(b, magic, 8) != 0)
        r->bad = 1;
}

/* Bytes on the wire at least: a part (its two blobs empty), a source. */
enum {
    PART_WIRE = 4 + 4 + 7 * 8 + 2 * 12,
    SOURCE_WIRE = 4 + 4 + 8 + 8 + 4 + 16
};

static void visit_part(pp_rec *r, pp_scan_part *p)
{
    pp_rec_u32(r, &p->input);
    pp_rec_u32(r, &p->format);
    pp_rec_u64(r, &p->sequences);
    pp_rec_u64(r, &p->tokens);
    pp_rec_u64(r, &p->documents);
    pp_rec_u64(r, &p->partial);
    pp_rec_u64(r, &p->sequences_total);
    pp_rec_u64(r, &p->bin_reached);
    pp_rec_u64(r, &p->bin_size);
    pp_rec_blob(r, &p->first_group, &p->first_group_len);
    pp_rec_blob(r, &p->last_group, &p->last_group_len);
}

static void visit_source(pp_rec *r, pp_scan_source *s)
{
    pp_rec_u32(r, &s->width);
    pp_rec_u32(r, &s->is_signed);
    pp_rec_u64(r, &s->size);
    pp_rec_u64(r, &s->stamp);
    pp_rec_u32(r, &s->input);
    pp_rec_u64(r, &s->dev);
    pp_rec_u64(r, &s->ino);
}

void pp_scan_meta_visit(pp_rec *r, pp_scan_meta *m)
{
    rec_magic(r, SCAN_MAGIC);
    pp_rec_u64(r, &m->key);
    pp_rec_u32(r, &m->task);
    pp_rec_u32(r, &m->ntasks);
    pp_rec_u64(r, &m->sequences);
    pp_rec_u64(r, &m->tokens);
    pp_rec_u32(r, &m->max_id);
    pp_rec_u32(r, &m->has_mask);
    pp_rec_u64(r, &m->lengths_hash);
    pp_rec_u64(r, &m->locs_size);
    pp_rec_u64(r, &m->locs_hash);
    pp_rec_u64(r, &m->mask_size);
    pp_rec_u64(r, &m->mask_hash);
    pp_rec_u32(r, &m->nparts);
    pp_rec_u32(r, &m->nsources);
    if (!rec_array(r, (void **)&m->parts, m->nparts, sizeof *m->parts,
                   PART_WIRE))
        return;
    for (uint32_t i = 0; i < m->nparts && !r->bad; i++)
        visit_part(r, &m->parts[i]);
    if (!rec_array(r, (void **)&m->sources, m->nsources, sizeof *m->sources,
                   SOURCE_WIRE))
        return;
    for (uint32_t i = 0; i < m->nsources && !r->bad; i++)
        visit_source(r, &m->sources[i]);
    pp_rec_u64(r, &m->njoins);
    if (!rec_array(r, (void **)&m->joins, m->njoins, 8, 8))
        return;
    for (uint64_t i = 0; i < m->njoins && !r->bad; i++)
        pp_rec_u64(r, &m->joins[i]);
}

void pp_scan_meta_free(pp_scan_meta *m)
{
    for (uint32_t i = 0; m->parts && i < m->nparts; i++) {
        free(m->parts[i].first_group);
        free(m->parts[i].last_group);
    }
    free(m->joins);
    m->joins = NULL;
    free(m->parts);
    free(m->sources);
    m->parts = NULL;
    m->sources = NULL;
}

static int width_ok(uint32_t w)
{
    return w == 1 || w == 2 || w == 4 || w == 8;
}

/* The parts: inputs of this job, in order, each once; their sequences
 * add up to the task's. */
static const char *scan_parts_fault(const pp_scan_meta *m, uint32_t ninputs)
{
    if (m->nparts > ninputs)
        return "more parts than inputs";
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m->nparts; i++) {
        const pp_scan_part *p = &m->parts[i];
        if (p->input >= ninputs || (i && p->input <= m->parts[i - 1].input))
            return "a part names no input of this job, or is out of order";
        if (!prepack_format_name((prepack_format)p->format) ||
            p->format == PREPACK_FORMAT_AUTO)
            return "a part has no format";
        if (p->sequences > m->sequences - sum)
            return "its parts hold more sequences than the task";
        sum += p->sequences;
    }
    if (sum != m->sequences)
        return "its parts and its sequences differ";
    return m->nparts || !m->sequences ? NULL : "it has sequences but no part";
}

/* The sources: 0 the task's own token file, the others inputs it read
 * (by index); the locations and the mask as large as the sequences say. */
static const char *scan_sources_fault(const pp_scan_meta *m, uint32_t ninputs)
{
    if (m->nsources == 0 || m->sources[0].input != UINT32_MAX)
        return "it has no token file";
    for (uint32_t i = 0; i < m->nsources; i++) {
        const pp_scan_source *s = &m->sources[i];
        if (!width_ok(s->width) || s->is_signed > 1 || s->size % s->width)
            return "a source has a bad token width or size";
        if (i && s->input >= ninputs)
            return "a source names no input of this job";
    }
    if (m->sequences > UINT64_MAX / PP_LOC_BYTES ||
        m->locs_size != m->sequences * PP_LOC_BYTES)
        return "its locations and its sequences differ";
    if (m->has_mask > 1 ||
        (m->mask_size &&
         m->mask_size != m->sources[0].size / m->sources[0].width))
        return "its loss mask and its tokens differ";
    return NULL;
}

/* The joins: sequences of the task, strictly increasing. */
static const char *scan_joins_fault(const pp_scan_meta *m)
{
    for (uint64_t i = 0; i < m->njoins; i++)
        if (m->joins[i] == 0 || m->joins[i] >= m->sequences ||
            (i && m->joins[i] <= m->joins[i - 1]))
            return "its groups name sequences out of order or past its own";
    return NULL;
}

const char *pp_scan_meta_fault(const pp_scan_meta *m, uint32_t ninputs)
{
    const char *why = scan_parts_fault(m, ninputs);
    if (!why)
        why = scan_sources_fault(m, ninputs);
    return why ? why : scan_joins_fault(m);
}

/* "%s: rerun ...": the message it extends copied first, since pp_fail
 * formats into the buffer it would read from. */
static int rerun(prepack_diag *diag, int rc, const char *what)
{
    char why[sizeof diag->message];
    snprintf(why, sizeof why, "%s", diag->message);
    return pp_fail(diag, rc, PREPACK_NO_RECORD, "%s: %s", why, what);
}

int pp_scan_meta_load(const pp_job *j, uint32_t t, uint32_t n, pp_scan_meta *m,
                      prepack_diag *diag)
{
    char name[64], path[4400], what[128];
    pp_scan_name(name, sizeof name, t, "meta");
    pp_job_file(j, path, sizeof path, name);
    memset(m, 0, sizeof *m);
    pp_rec r;
    int missing = 0;
    int rc = pp_rec_load(&r, j->job_fd, j->job_dir, name, &missing, diag);
    if (rc != PREPACK_OK && missing)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "scan task %u of %u has no result in %s: run it "
                       "(prepack scan ... --task-index %u --task-count %u)",
                       t, n, j->job_dir, t, n);
    snprintf(what, sizeof what, "rerun scan task %u of %u", t, n);
    if (rc != PREPACK_OK)
        return rerun(diag, rc, what);
    pp_scan_meta_visit(&r, m);
    int bad = r.bad || r.pos != r.in_len;
    pp_rec_release(&r);
    const char *why = bad ? "it cannot be read" : NULL;
    if (!bad && (m->key != j->scan_key || m->task != t || m->ntasks != n))
        rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                     "%s was made by another job (other inputs or options, "
                     "or %u scan tasks, not %u): %s",
                     path, m->ntasks, n, what);
    else if (why || (why = pp_scan_meta_fault(m, (uint32_t)j->o->ninputs)))
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "%s is damaged (%s): %s", path, why, what);
    if (rc != PREPACK_OK)
        pp_scan_meta_free(m);
    return rc;
}

/* ---- plan.meta --------------------------------------------------------- */

static void visit_layout(pp_rec *r, prepack_layout *l)
{
    pp_rec_u64(r, &l->rows);
    pp_rec_u64(r, &l->slots);
    pp_rec_u64(r, &l->pad_tokens);
    pp_rec_f64(r, &l->pad_fraction);
    pp_rec_f64(r, &l->attention_cost);
}

static void visit_report(pp_rec *r, prepack_report *p)
{
    prepack_plan_stats *s = &p->plan;
    pp_rec_u32(r, &s->max_seq_len);
    uint64_t *u64s[] = {&s->sequences,
                        &s->input_tokens,
                        &s->items,
                        &s->tokens,
                        &s->rows,
                        &s->lower_bound,
                        &s->zero_length,
                        &s->overlong,
                        &s->truncated_tokens,
                        &s->split_chunks,
                        &s->dropped_sequences,
                        &s->dropped_tokens};
    for (size_t i = 0; i < sizeof u64s / sizeof *u64s; i++)
        pp_rec_u64(r, u64s[i]);
    pp_rec_f64(r, &s->efficiency);
    pp_rec_u32(r, &s->max_items_per_row);
    pp_rec_f64(r, &s->mean_items_per_row);
    prepack_length_summary *l = &p->lengths;
    uint32_t *u32s[] = {&l->min, &l->median, &l->p90, &l->p99, &l->max};
    for (size_t i = 0; i < 5; i++)
        pp_rec_u32(r, u32s[i]);
    pp_rec_u64(r, &l->over_max_seq_len);
    pp_rec_u32(r, &p->batch_size);
    visit_layout(r, &p->naive_batch);
    visit_layout(r, &p->padded_to_max);
    visit_layout(r, &p->packed);
    pp_rec_f64(r, &p->packed_dense_attention_cost);
}

enum { INPUT_WIRE = 4 + 4 + 5 * 8 };

static void visit_input(pp_rec *r, prepack_input_info *in)
{
    char path[4096];
    if (!r->reading)
        snprintf(path, sizeof path, "%s", in->path);
    pp_rec_str(r, path, sizeof path);
    if (r->reading && !r->bad && !(in->path = strdup(path)))
        r->bad = 1;
    uint32_t format = (uint32_t)in->format;
    pp_rec_u32(r, &format);
    in->format = (prepack_format)format;
    pp_rec_u64(r, &in->first_sequence);
    pp_rec_u64(r, &in->sequences);
    pp_rec_u64(r, &in->tokens);
    pp_rec_u64(r, &in->documents);
    pp_rec_u64(r, &in->partial_sequences);
}

void pp_plan_meta_visit(pp_rec *r, pp_plan_meta *m)
{
    rec_magic(r, PLAN_MAGIC);
    pp_rec_u64(r, &m->key);
    pp_rec_u32(r, &m->scan_tasks);
    pp_rec_u32(r, &m->max_seq_len);
    pp_rec_u32(r, &m->dtype);
    pp_rec_u32(r, &m->has_mask);
    pp_rec_u32(r, &m->has_offsets);
    pp_rec_u32(r, &m->rows_per_frame);
    pp_rec_i32(r, &m->level);
    pp_rec_u64(r, &m->shard_rows);
    pp_rec_u64(r, &m->rows);
    pp_rec_u64(r, &m->items);
    pp_rec_u64(r, &m->shards);
    pp_rec_u64(r, &m->sequences);
    pp_rec_u32(r, &m->ninputs);
    /* each array bounded before its count + 1 is taken */
    if (r->reading &&
        (m->shards >= UINT64_MAX / 16 || m->scan_tasks == UINT32_MAX))
        r->bad = 1;
    if (!rec_array(r, (void **)&m->scan_first, (uint64_t)m->scan_tasks + 1, 8,
                   8) ||
        !rec_array(r, (void **)&m->inputs, m->ninputs, sizeof *m->inputs,
                   INPUT_WIRE) ||
        !rec_array(r, (void **)&m->shard_offset, m->shards + 1, 8, 8) ||
        !rec_array(r, (void **)&m->shard_hash, m->shards, 8, 8))
        return;
    for (uint32_t i = 0; i <= m->scan_tasks && !r->bad; i++)
        pp_rec_u64(r, &m->scan_first[i]);
    for (uint32_t i = 0; i < m->ninputs && !r->bad; i++)
        visit_input(r, &m->inputs[i]);
    visit_report(r, &m->report);
    for (uint64_t s = 0; s <= m->shards && !r->bad; s++)
        pp_rec_u64(r, &m->shard_offset[s]);
    for (uint64_t s = 0; s < m->shards && !r->bad; s++)
        pp_rec_u64(r, &m->shard_hash[s]);
}

void pp_plan_meta_free(pp_plan_meta *m)
{
    for (uint32_t i = 0; m->inputs && i < m->ninputs; i++)
        free((void *)m->inputs[i].path);
    free(m->inputs);
    free(m->scan_first);
    free(m->shard_offset);
    free(m->shard_hash);
    memset(m, 0, sizeof *m);
}

/* The inputs are the command line's (rule: a path read from a job file
 * is never opened), their sequences in order. */
static const char *plan_inputs_fault(const pp_plan_meta *m,
                                     const prepack_step_options *o)
{
    if (m->ninputs != o->ninputs)
        return "its inputs are not the command line's";
    uint64_t next = 0;
    for (uint32_t i = 0; i < m->ninputs; i++) {
        const prepack_input_info *in = &m->inputs[i];
        if (strcmp(in->path, o->inputs[i]) != 0)
            return "its inputs are not the command line's";
        if (!prepack_format_name(in->format) ||
            in->format == PREPACK_FORMAT_AUTO)
            return "an input has no format";
        if (in->first_sequence != next || in->sequences > m->sequences - next)
            return "its inputs' sequences are out of order";
        next += in->sequences;
    }
    return next == m->sequences ? NULL : "its inputs' sequences differ";
}

/* The layout this job's options give; scan_first and shard_offset
 * monotonic. */
static const char *plan_layout_fault(const pp_plan_meta *m, const pp_job *j)
{
    const prepack_step_options *o = j->o;
    if (m->max_seq_len != o->plan.max_seq_len || m->max_seq_len == 0 ||
        m->shard_rows != j->shard_rows ||
        (m->dtype != PREPACK_DTYPE_UINT16 &&
         m->dtype != PREPACK_DTYPE_UINT32) ||
        m->has_mask > 1 || m->has_offsets > 1 || m->rows_per_frame == 0 ||
        m->shards != m->rows / m->shard_rows + (m->rows % m->shard_rows != 0))
        return "its layout is not this job's";
    if (m->scan_tasks == 0 || m->scan_first[0] != 0 ||
        m->scan_first[m->scan_tasks] != m->sequences)
        return "its scan tasks' sequences do not add up";
    for (uint32_t t = 0; t < m->scan_tasks; t++)
        if (m->scan_first[t + 1] < m->scan_first[t])
            return "its scan tasks' sequences are out of order";
    const prepack_plan_stats *st = &m->report.plan;
    if (st->rows != m->rows || st->items != m->items ||
        st->sequences != m->sequences || !isfinite(st->efficiency) ||
        !isfinite(st->mean_items_per_row) ||
        !isfinite(m->report.packed_dense_attention_cost))
        return "its report is not its plan's";
    if (m->shard_offset[0] != 0)
        return "its shards' rows are out of order";
    for (uint64_t s = 0; s < m->shards; s++)
        if (m->shard_offset[s + 1] <= m->shard_offset[s])
            return "its shards' rows are out of order";
    return NULL;
}

int pp_plan_meta_load(const pp_job *j, pp_plan_meta *m, prepack_diag *diag)
{
    char path[4400];
    pp_job_file(j, path, sizeof path, "plan.meta");
    memset(m, 0, sizeof *m);
    pp_rec r;
    int missing = 0;
    int rc =
        pp_rec_load(&r, j->job_fd, j->job_dir, "plan.meta", &missing, diag);
    if (rc != PREPACK_OK && missing)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s has no plan: run prepack plan first", j->job_dir);
    if (rc != PREPACK_OK)
        return rerun(diag, rc, "rerun prepack plan");
    pp_plan_meta_visit(&r, m);
    int bad = r.bad || r.pos != r.in_len;
    pp_rec_release(&r);
    const char *why = bad ? "it cannot be read" : NULL;
    if (!bad && m->key != j->plan_key)
        rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                     "%s was made with other inputs or options than this "
                     "step's: rerun prepack plan with the job's options",
                     path);
    else if (why || (why = plan_inputs_fault(m, j->o)) ||
             (why = plan_layout_fault(m, j)))
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "%s is damaged (%s): rerun prepack plan", path, why);
    if (rc != PREPACK_OK)
        pp_plan_meta_free(m);
    return rc;
}

/* ---- write-T-of-M.meta ------------------------------------------------- */

void pp_write_meta_visit(pp_rec *r, pp_write_meta *m)
{
    rec_magic(r, WRITE_MAGIC);
    pp_rec_u64(r, &m->key);
    pp_rec_u32(r, &m->task);
    pp_rec_u32(r, &m->ntasks);
    pp_rec_u32(r, &m->rows_per_frame);
    pp_rec_u64(r, &m->first);
    pp_rec_u64(r, &m->count);
    if (!rec_array(r, (void **)&m->shards, m->count, sizeof *m->shards, 36))
        return;
    for (uint64_t i = 0; i < m->count && !r->bad; i++) {
        pp_shard_info *s = &m->shards[i];
        pp_rec_str(r, s->file, sizeof s->file);
        pp_rec_u64(r, &s->rows);
        pp_rec_u64(r, &s->tokens);
        pp_rec_u64(r, &s->bytes);
        pp_rec_u64(r, &s->xxh64);
    }
}

int pp_write_meta_load(const pp_job *j, uint32_t t, uint32_t n, uint64_t shards,
                       uint64_t shard_rows, pp_write_meta *m, int *missing,
                       prepack_diag *diag)
{
    char name[64], path[4400];
    pp_write_name(name, sizeof name, t, n);
    pp_job_file(j, path, sizeof path, name);
    memset(m, 0, sizeof *m);
    uint64_t s0, s1;
    pp_step_shards_of(shards, t, n, &s0, &s1);
    pp_rec r;
    int rc = pp_rec_load(&r, j->job_fd, j->job_dir, name, missing, diag);
    char what[96];
    snprintf(what, sizeof what, "rerun write task %u of %u", t, n);
    if (rc != PREPACK_OK)
        return *missing ? rc : rerun(diag, rc, what);
    pp_write_meta_visit(&r, m);
    int bad = r.bad || r.pos != r.in_len;
    pp_rec_release(&r);
    /* the plan key first: shards written under another plan are not
     * this set's, however well they verify */
    bad = bad || m->key != j->plan_key || m->task != t || m->ntasks != n ||
          m->first != s0 || m->count != s1 - s0;
    for (uint64_t i = 0; !bad && i < m->count; i++) {
        char want[PP_SHARD_NAME_MAX];
        pp_shard_name(want, (size_t)(s0 + i));
        bad = strcmp(m->shards[i].file, want) != 0 || m->shards[i].rows == 0 ||
              m->shards[i].rows > shard_rows;
    }
    if (bad) {
        free(m->shards);
        m->shards = NULL;
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "%s is damaged or from another plan: %s", path, what);
    }
    return PREPACK_OK;
}
