/* The finalize step: every shard the plan calls for, from the write task
 * that owns it, present with the size (and hash) the task recorded; then
 * manifest.json, written last exactly as prepack pack writes it, and the
 * job directory removed, leaving the same files as a one-process pack. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/io.h"
#include "dist/job.h"

/* Write task t's record, checked against the plan. */
static int take_part(const pp_job *j, const pp_plan_meta *plan, uint32_t t,
                     uint32_t n, pp_shard_info *shards, prepack_diag *diag)
{
    char name[64], path[4400];
    pp_write_name(name, sizeof name, t, n);
    pp_job_file(j, path, sizeof path, name);
    uint64_t s0, s1;
    pp_job_shards_of(plan->shards, t, n, &s0, &s1);
    pp_rec r;
    int missing;
    int rc = pp_rec_load(&r, path, &missing, diag);
    if (rc != PREPACK_OK)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "write task %u of %u has %s result in %s: %s it "
                       "(prepack write ... --task-index %u --task-count %u)",
                       t, n, missing ? "no" : "a damaged", j->job_dir,
                       missing ? "run" : "rerun", t, n);
    pp_write_meta m;
    memset(&m, 0, sizeof m);
    pp_write_meta_visit(&r, &m);
    int bad = r.bad || r.pos != r.in_len;
    pp_rec_release(&r);
    if (bad || m.key != j->plan_key || m.first != s0 || m.count != s1 - s0)
        rc = pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                     "%s is damaged or from another plan: rerun write "
                     "task %u of %u",
                     path, t, n);
    for (uint64_t i = 0; rc == PREPACK_OK && i < m.count; i++)
        shards[s0 + i] = m.shards[i];
    free(m.shards);
    return rc;
}

static int check_shards(const pp_job *j, const pp_plan_meta *plan,
                        const pp_shard_info *shards, uint32_t n, int hash,
                        prepack_diag *diag)
{
    uint64_t rows = 0;
    for (uint64_t s = 0; s < plan->shards; s++) {
        char want[PP_SHARD_NAME_MAX];
        pp_shard_name(want, (size_t)s);
        rows += shards[s].rows;
        if (strcmp(shards[s].file, want) != 0 ||
            !pp_job_shard_good(j, &shards[s], hash)) {
            uint32_t t = 0;
            for (uint64_t s0, s1; t < n; t++) {
                pp_job_shards_of(plan->shards, t, n, &s0, &s1);
                if (s < s1)
                    break;
            }
            return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                           "%s/%s is missing, or not what write task %u of "
                           "%u wrote: rerun that task",
                           j->dir, want, t, n);
        }
    }
    if (rows != plan->rows)
        return pp_fail(diag, PREPACK_ECORRUPT, PREPACK_NO_RECORD,
                       "the write tasks wrote %llu rows, the plan has %llu: "
                       "rerun them",
                       (unsigned long long)rows,
                       (unsigned long long)plan->rows);
    return PREPACK_OK;
}

/* The job directory goes once the manifest is in place: the set is then
 * exactly what prepack pack leaves. */
static void remove_job_dir(const pp_job *j)
{
    pp_job_remove(j, ""); /* every file in it */
    rmdir(j->job_dir);
    pp_sync_dir(j->dir);
}

int prepack_job_finalize(const char *dir, const prepack_job_options *o,
                         uint32_t write_tasks, int verify_hashes,
                         prepack_job_result *res, prepack_diag *diag)
{
    pp_step step;
    pp_job j;
    int rc = pp_step_begin(&step, &j, dir, o, res, diag, "write", 0,
                           write_tasks);
    if (rc != PREPACK_OK || step.res->already_done)
        return rc;
    res = step.res;
    diag = step.diag;
    pp_plan_meta plan;
    rc = pp_plan_meta_load(&j, &plan, diag);
    if (rc != PREPACK_OK)
        return rc;
    pp_shard_info *shards = calloc(plan.shards ? plan.shards : 1,
                                   sizeof *shards);
    if (!shards)
        rc = pp_out_of_memory(diag);
    for (uint32_t t = 0; rc == PREPACK_OK && t < write_tasks; t++)
        rc = take_part(&j, &plan, t, write_tasks, shards, diag);
    if (rc == PREPACK_OK)
        rc = check_shards(&j, &plan, shards, write_tasks, verify_hashes, diag);
    if (rc == PREPACK_OK) {
        pp_manifest_fields m = {
            plan.max_seq_len, prepack_dtype_name((prepack_dtype)plan.dtype),
            plan.rows_per_frame, plan.level, shards, (size_t)plan.shards,
            &o->plan, plan.inputs, plan.ninputs, &plan.report, 0, NULL, 0};
        rc = pp_manifest_save(dir, &m, diag);
    }
    if (rc == PREPACK_OK) {
        remove_job_dir(&j);
        res->sequences = plan.sequences;
        res->tokens = plan.report.plan.tokens;
        res->rows = plan.rows;
        res->shards = plan.shards;
        for (uint64_t s = 0; s < plan.shards; s++)
            res->bytes_written += shards[s].bytes;
    }
    free(shards);
    pp_plan_meta_free(&plan);
    return rc;
}
