/* The finalize step: every shard the plan calls for, from the write task
 * that owns it, present with the size (and hash) the task recorded; then
 * manifest.json, written last exactly as prepack pack writes it, and the
 * job directory removed, leaving the same files as a one-process pack. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/io.h"
#include "shards/shard_format.h"
#include "steps/job.h"

/* Write task t's record, checked against the plan. */
static int take_part(const pp_job *j, const pp_plan_meta *plan, uint32_t t,
                     uint32_t n, pp_shard_info *shards, prepack_diag *diag)
{
    pp_write_meta m;
    int missing = 0;
    int rc = pp_write_meta_load(j, t, n, plan->shards, plan->shard_rows, &m,
                                &missing, diag);
    if (rc != PREPACK_OK && missing)
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "write task %u of %u has no result in %s: run it "
                       "(prepack write ... --task-index %u --task-count %u)",
                       t, n, j->job_dir, t, n);
    if (rc != PREPACK_OK)
        return rc;
    for (uint64_t i = 0; i < m.count; i++)
        shards[m.first + i] = m.shards[i];
    free(m.shards);
    return PREPACK_OK;
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
                pp_step_shards_of(plan->shards, t, n, &s0, &s1);
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

/* manifest.json, written as pack writes it, through DIR's descriptor: a
 * temporary created O_EXCL | O_NOFOLLOW (a link planted in its place is
 * removed, never written through), fsynced, renamed. */
static int save_manifest(const pp_job *j, const pp_manifest_fields *m,
                         prepack_diag *diag)
{
    const char *tmp = "manifest.json.tmp";
    unlinkat(j->dir_fd, tmp, 0);
    int fd = openat(j->dir_fd, tmp,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int bad = !f;
    if (f) {
        pp_manifest_write(f, m);
        bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
        bad |= fclose(f) != 0;
    } else if (fd >= 0) {
        close(fd);
    }
    if (bad || renameat(j->dir_fd, tmp, j->dir_fd, "manifest.json") != 0) {
        int e = errno;
        unlinkat(j->dir_fd, tmp, 0);
        return pp_fail(diag, PREPACK_EIO, PREPACK_NO_RECORD,
                       "writing %s/manifest.json failed: %s", j->dir,
                       strerror(e));
    }
    fsync(j->dir_fd);
    return PREPACK_OK;
}

static int finalize_job(pp_job *j, uint32_t write_tasks, int verify_hashes,
                        prepack_step_result *res, prepack_diag *diag)
{
    pp_plan_meta plan;
    memset(&plan, 0, sizeof plan);
    int rc = j->job_fd < 0
                 ? pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                           "%s has no plan: run prepack plan first", j->job_dir)
                 : pp_job_lock(j, "finalize.lock", "finalize", diag);
    if (rc == PREPACK_OK)
        rc = pp_plan_meta_load(j, &plan, diag);
    if (rc != PREPACK_OK)
        return rc;
    pp_shard_info *shards =
        calloc(plan.shards ? plan.shards : 1, sizeof *shards);
    if (!shards)
        rc = pp_out_of_memory(diag);
    for (uint32_t t = 0; rc == PREPACK_OK && t < write_tasks; t++)
        rc = take_part(j, &plan, t, write_tasks, shards, diag);
    if (rc == PREPACK_OK)
        rc = check_shards(j, &plan, shards, write_tasks, verify_hashes, diag);
    if (rc == PREPACK_OK) {
        pp_manifest_fields m = {plan.max_seq_len,
                                prepack_dtype_name((prepack_dtype)plan.dtype),
                                plan.rows_per_frame,
                                plan.level,
                                shards,
                                (size_t)plan.shards,
                                &j->o->plan,
                                plan.inputs,
                                plan.ninputs,
                                &plan.report,
                                0,
                                pp_set_version(0),
                                NULL,
                                0};
        rc = save_manifest(j, &m, diag);
    }
    if (rc == PREPACK_OK) { /* the set is now exactly what pack leaves */
        pp_job_remove_all(j);
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

int prepack_step_finalize(const char *dir, const prepack_step_options *o,
                          uint32_t write_tasks, int verify_hashes,
                          prepack_step_result *res, prepack_diag *diag)
{
    pp_step step;
    pp_job j;
    int rc =
        pp_step_begin(&step, &j, dir, o, res, diag, "write", 0, write_tasks);
    if (rc == PREPACK_OK && !step.res->already_done)
        rc = finalize_job(&j, write_tasks, verify_hashes, step.res, step.diag);
    pp_job_close(&j);
    return rc;
}
