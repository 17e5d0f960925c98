/* A pack in steps: options, keys, file names, the partition of the inputs
 * among scan tasks, and the records the steps hand each other. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/bytes.h"
#include "common/error.h"
#include "common/io.h"
#include "dist/job.h"
#include "ingest/source.h"
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

static uint64_t scan_key(const prepack_job_options *o)
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
    h = mix_u64(h, (uint64_t)!!g->allow_trailing_bytes);
    return mix_u64(h, (uint64_t)o->store.dtype);
}

static uint64_t plan_key(const pp_job *j)
{
    const prepack_job_options *o = j->o;
    const prepack_plan_options *p = &o->plan;
    uint64_t h = mix_u64(j->scan_key, p->max_seq_len);
    h = mix_u64(h, (uint64_t)p->algo);
    h = mix_u64(h, (uint64_t)p->overlong);
    h = mix_u64(h, p->max_seqs_per_row);
    h = mix_u64(h, p->pad_multiple > 1 ? p->pad_multiple : 1);
    h = mix_u64(h, (uint64_t)!!p->shuffle_rows);
    h = mix_u64(h, p->shuffle_rows ? p->shuffle_seed : 0);
    h = mix_u64(h, o->writer.rows_per_frame); /* 0: the default */
    h = mix_u64(h, j->shard_rows);
    h = mix_u64(h, (uint64_t)(o->writer.level ? o->writer.level
                                              : PREPACK_DEFAULT_ZSTD_LEVEL));
    return mix_u64(h, o->batch_size ? o->batch_size
                                    : PREPACK_DEFAULT_BATCH_SIZE);
}

static int dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)) != NULL)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
                !strcmp(e->d_name, PP_JOB_DIR); /* a concurrent task's */
    closedir(d);
    return empty;
}

int pp_job_open(pp_job *j, const char *dir, const prepack_job_options *o,
                int create, prepack_diag *diag)
{
    memset(j, 0, sizeof *j);
    if (!dir || !o || (o->ninputs && !o->inputs))
        return pp_invalid_argument(diag);
    if (o->ninputs == 0)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "a job needs at least one input");
    if (o->writer.shard_bytes)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "a job in steps splits shards by rows (shard_rows, "
                       "--shard-rows): where shard_bytes ends a shard "
                       "depends on every frame written before it");
    if (o->writer.overwrite)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "a job in steps writes into an empty directory; "
                       "overwrite is for a set written in one process");
    for (size_t i = 0; i < o->ninputs; i++)
        if (!strcmp(o->inputs[i], "-"))
            return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "stdin ('-') cannot be split among scan tasks: "
                           "save it to a file");
    j->dir = dir;
    j->o = o;
    if (snprintf(j->job_dir, sizeof j->job_dir, "%s/" PP_JOB_DIR, dir) >=
        (int)sizeof j->job_dir - 64)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "directory name too long: %s", dir);
    j->shard_rows =
        o->writer.shard_rows ? o->writer.shard_rows : PREPACK_DEFAULT_SHARD_ROWS;
    j->scan_key = scan_key(o);
    j->plan_key = plan_key(j);
    if (!create)
        return PREPACK_OK;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot create %s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(j->job_dir, &st) != 0 && !dir_is_empty(dir))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s is not empty: a job in steps writes a new set "
                       "into an empty directory (or one holding this "
                       "job's %s)",
                       dir, PP_JOB_DIR);
    if (mkdir(j->job_dir, 0777) != 0 && errno != EEXIST)
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "cannot create %s: %s", j->job_dir, strerror(errno));
    return PREPACK_OK;
}

void pp_job_file(const pp_job *j, char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", j->job_dir, name);
}

int pp_job_finished(const pp_job *j)
{
    char manifest[4200];
    struct stat st;
    snprintf(manifest, sizeof manifest, "%s/manifest.json", j->dir);
    return stat(manifest, &st) == 0 && stat(j->job_dir, &st) != 0;
}

int pp_step_begin(pp_step *s, pp_job *j, const char *dir,
                  const prepack_job_options *o, prepack_job_result *res,
                  prepack_diag *diag, const char *count_of, uint32_t task,
                  uint32_t ntasks)
{
    s->res = res ? res : &s->own_res;
    s->diag = diag ? diag : &s->own_diag;
    memset(s->res, 0, sizeof *s->res);
    memset(s->diag, 0, sizeof *s->diag);
    if (count_of && ntasks == 0)
        return pp_fail(s->diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "the %s task count must be at least 1", count_of);
    if (!count_of && (ntasks == 0 || task >= ntasks))
        return pp_fail(s->diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "task index %u is not below the task count %u", task,
                       ntasks);
    int rc = pp_job_open(j, dir, o, 0, s->diag);
    if (rc == PREPACK_OK && pp_job_finished(j))
        s->res->already_done = 1;
    return rc;
}

void pp_job_remove(const pp_job *j, const char *prefix)
{
    DIR *d = opendir(j->job_dir);
    if (!d)
        return;
    size_t n = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, n) != 0 || !strcmp(e->d_name, ".") ||
            !strcmp(e->d_name, ".."))
            continue;
        char path[4400];
        pp_job_file(j, path, sizeof path, e->d_name);
        unlink(path);
    }
    closedir(d);
}

void pp_scan_name(char *out, size_t cap, uint32_t t, const char *ext)
{
    snprintf(out, cap, "scan-%05u.%s", t, ext);
}

void pp_write_name(char *out, size_t cap, uint32_t t, uint32_t n)
{
    snprintf(out, cap, "write-%05u-of-%05u.meta", t, n);
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
    unsigned __int128 k = ((unsigned __int128)x * u->count + u->weight - 1) /
                          u->weight;
    return k > u->count ? u->count : (uint64_t)k;
}

int pp_job_part(const pp_unit *u, uint64_t total, uint32_t t, uint32_t n,
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

int pp_job_units(const pp_job *j, pp_unit *units, uint64_t *total,
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

void pp_job_shards_of(uint64_t shards, uint32_t t, uint32_t n, uint64_t *first,
                      uint64_t *end)
{
    *first = (uint64_t)((unsigned __int128)shards * t / n);
    *end = (uint64_t)((unsigned __int128)shards * (t + 1) / n);
}

/* ---- records ------------------------------------------------------------------ */

/* Reading: allocates n elements of `size` bytes, once the file is seen to
 * hold n records of at least `wire` bytes each. */
static void *rec_array(pp_rec *r, void **p, size_t n, size_t size, size_t wire)
{
    if (r->reading) {
        *p = NULL;
        if (r->bad || n > (r->in_len - r->pos) / wire + 1) {
            r->bad = 1; /* a count the file cannot hold */
            return NULL;
        }
        *p = calloc(n ? n : 1, size);
        if (!*p)
            r->bad = 1;
    }
    return *p;
}

static const char SCAN_MAGIC[8] = "PPJSCAN2";
static const char PLAN_MAGIC[8] = "PPJPLAN1";
static const char WRITE_MAGIC[8] = "PPJWRIT1";

static void rec_magic(pp_rec *r, const char magic[8])
{
    char b[8];
    memcpy(b, magic, 8);
    pp_rec_bytes(r, b, 8);
    if (r->reading && memcmp(b, magic, 8) != 0)
        r->bad = 1;
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
    pp_rec_u64(r, &m->mask_size);
    pp_rec_u64(r, &m->mask_hash);
    pp_rec_u32(r, &m->nparts);
    pp_rec_u32(r, &m->nsources);
    if (!rec_array(r, (void **)&m->parts, m->nparts, sizeof *m->parts, 64) ||
        !rec_array(r, (void **)&m->sources, m->nsources, sizeof *m->sources,
                   28))
        return;
    for (uint32_t i = 0; i < m->nparts; i++) {
        pp_scan_part *p = &m->parts[i];
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
    for (uint32_t i = 0; i < m->nsources; i++) {
        pp_scan_source *s = &m->sources[i];
        pp_rec_u32(r, &s->width);
        pp_rec_u32(r, &s->is_signed);
        pp_rec_u64(r, &s->size);
        pp_rec_u64(r, &s->stamp);
        pp_rec_str(r, s->path, sizeof s->path);
        if (r->reading && s->width != 1 && s->width != 2 && s->width != 4 &&
            s->width != 8)
            r->bad = 1;
    }
    pp_rec_u64(r, &m->njoins);
    if (!rec_array(r, (void **)&m->joins, (size_t)m->njoins, 8, 8))
        return;
    for (uint64_t i = 0; i < m->njoins; i++)
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

int pp_scan_meta_load(const pp_job *j, uint32_t t, uint32_t n,
                      pp_scan_meta *m, prepack_diag *diag)
{
    char name[64], path[4400];
    pp_scan_name(name, sizeof name, t, "meta");
    pp_job_file(j, path, sizeof path, name);
    memset(m, 0, sizeof *m);
    pp_rec r;
    int missing = 0;
    int rc = pp_rec_load(&r, path, &missing, diag);
    if (rc != PREPACK_OK && missing)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "scan task %u of %u has no result in %s: run it "
                       "(prepack scan ... --task-index %u --task-count %u)",
                       t, n, j->job_dir, t, n);
    if (rc != PREPACK_OK)
        return pp_fail(diag, rc, PREPACK_NO_RECORD,
                       "%s: rerun scan task %u of %u", diag->message, t, n);
    pp_scan_meta_visit(&r, m);
    int bad = r.bad || r.pos != r.in_len;
    pp_rec_release(&r);
    if (bad)
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "%s is damaged: rerun scan task %u of %u", path, t, n);
    else if (m->key != j->scan_key || m->task != t || m->ntasks != n)
        rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                     "%s was made by another job (other inputs or options, "
                     "or %u scan tasks, not %u): rerun scan task %u of %u",
                     path, m->ntasks, n, t, n);
    if (rc != PREPACK_OK)
        pp_scan_meta_free(m);
    return rc;
}

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
    uint64_t *u64s[] = {&s->sequences,   &s->input_tokens,     &s->items,
                        &s->tokens,      &s->rows,             &s->lower_bound,
                        &s->zero_length, &s->overlong,         &s->truncated_tokens,
                        &s->split_chunks, &s->dropped_sequences, &s->dropped_tokens};
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
    if (!rec_array(r, (void **)&m->scan_first, (size_t)m->scan_tasks + 1, 8,
                   8) ||
        !rec_array(r, (void **)&m->inputs, m->ninputs, sizeof *m->inputs, 48) ||
        !rec_array(r, (void **)&m->shard_offset, m->shards + 1, 8, 8) ||
        !rec_array(r, (void **)&m->shard_hash, m->shards, 8, 8))
        return;
    for (uint32_t i = 0; i <= m->scan_tasks; i++)
        pp_rec_u64(r, &m->scan_first[i]);
    for (uint32_t i = 0; i < m->ninputs && !r->bad; i++) {
        prepack_input_info *in = &m->inputs[i];
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
    visit_report(r, &m->report);
    for (uint64_t s = 0; s <= m->shards; s++)
        pp_rec_u64(r, &m->shard_offset[s]);
    for (uint64_t s = 0; s < m->shards; s++)
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

int pp_plan_meta_load(const pp_job *j, pp_plan_meta *m, prepack_diag *diag)
{
    char path[4400];
    pp_job_file(j, path, sizeof path, "plan.meta");
    memset(m, 0, sizeof *m);
    pp_rec r;
    int missing = 0;
    int rc = pp_rec_load(&r, path, &missing, diag);
    if (rc != PREPACK_OK && missing)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "%s has no plan: run prepack plan first", j->job_dir);
    if (rc != PREPACK_OK)
        return pp_fail(diag, rc, PREPACK_NO_RECORD, "%s: rerun prepack plan",
                       diag->message);
    pp_plan_meta_visit(&r, m);
    int bad = r.bad || r.pos != r.in_len;
    pp_rec_release(&r);
    if (bad)
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "%s is damaged: rerun prepack plan", path);
    else if (m->key != j->plan_key)
        rc = pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                     "%s was made with other inputs or options than this "
                     "step's: rerun prepack plan with the job's options",
                     path);
    if (rc != PREPACK_OK)
        pp_plan_meta_free(m);
    return rc;
}

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
    for (uint64_t i = 0; i < m->count; i++) {
        pp_shard_info *s = &m->shards[i];
        pp_rec_str(r, s->file, sizeof s->file);
        pp_rec_u64(r, &s->rows);
        pp_rec_u64(r, &s->tokens);
        pp_rec_u64(r, &s->bytes);
        pp_rec_u64(r, &s->xxh64);
    }
}
