/* Compressing shard frames on worker threads.
 *
 * Frames are independent zstd frames compressed with the same parameters,
 * each by one context with zstd's own workers off (nbWorkers = 0: zstd's
 * multi-threaded mode produces other bytes), so a frame's bytes do not
 * depend on which thread made them, and results are handed back in the
 * order frames were submitted: the output is byte-identical whatever the
 * thread count. With 0 or 1 thread, frames are compressed on the caller's
 * thread at submission. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createCCtx_advanced */
#include <zstd.h>
#include <zstd_errors.h>

#include "common/alloc.h"
#include "common/tasks.h"
#include "shards/compress_pool.h"

typedef struct job {
    void *in; /* the frame's bytes (owned) */
    size_t in_size;
    void *out; /* compressed */
    size_t out_cap, out_size;
    uint32_t checksum; /* XXH64 low 32 bits of `in` */
    uint64_t hash;     /* XXH64 of `out` */
    size_t error;      /* a zstd error code, or 0 */
} job;

struct pp_pool {
    prepack_allocator alloc_copy;   /* the caller's, when one was given */
    const prepack_allocator *alloc; /* &alloc_copy or NULL: everything
                                       below, zstd's contexts too */
    pp_tasks *tasks;
    job *jobs;        /* pp_tasks_capacity of them, used in turn */
    size_t submitted; /* jobs ever submitted: the next is jobs[n % cap] */
    ZSTD_CCtx **cctx; /* one per worker (or one for the caller) */
};

static ZSTD_CCtx *new_cctx(const prepack_allocator *a, int level)
{
    ZSTD_customMem mem = {pp_zstd_alloc, pp_zstd_free, (void *)a};
    ZSTD_CCtx *c = a ? ZSTD_createCCtx_advanced(mem) : ZSTD_createCCtx();
    if (c) {
        ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
        ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
        ZSTD_CCtx_setParameter(c, ZSTD_c_nbWorkers, 0);
    }
    return c;
}

static void compress_job(const prepack_allocator *a, job *j, ZSTD_CCtx *c)
{
    size_t bound = ZSTD_compressBound(j->in_size);
    if (bound > j->out_cap) {
        pp_free(a, j->out);
        j->out = pp_alloc(a, bound, 1);
        j->out_cap = j->out ? bound : 0;
    }
    j->checksum = (uint32_t)XXH64(j->in, j->in_size, 0);
    if (!j->out) {
        j->error = (size_t)-ZSTD_error_memory_allocation;
        return;
    }
    j->out_size = ZSTD_compress2(c, j->out, j->out_cap, j->in, j->in_size);
    j->error = ZSTD_isError(j->out_size) ? j->out_size : 0;
    j->hash = j->error ? 0 : XXH64(j->out, j->out_size, 0);
}

static void run_job(void *ctx, void *task, size_t worker)
{
    pp_pool *p = ctx;
    compress_job(p->alloc, task, p->cctx[worker]);
}

int pp_pool_create(pp_pool **out, int threads, int level,
                   const prepack_allocator *a)
{
    *out = NULL;
    pp_pool *p = pp_calloc(a, 1, sizeof *p);
    if (!p)
        return PREPACK_ENOMEM;
    a = p->alloc = pp_allocator_keep(&p->alloc_copy, a);
    int ok = pp_tasks_create(&p->tasks, threads, run_job, p, a) == PREPACK_OK;
    size_t contexts = ok ? pp_tasks_workers(p->tasks) : 0;
    p->jobs = ok ? pp_calloc(a, pp_tasks_capacity(p->tasks), sizeof *p->jobs)
                 : NULL;
    p->cctx = ok ? pp_calloc(a, contexts, sizeof *p->cctx) : NULL;
    ok = p->jobs && p->cctx;
    for (size_t i = 0; ok && i < contexts; i++)
        ok = (p->cctx[i] = new_cctx(a, level)) != NULL;
    if (!ok) {
        pp_pool_free(p);
        return PREPACK_ENOMEM;
    }
    *out = p;
    return PREPACK_OK;
}

void pp_pool_free(pp_pool *p)
{
    if (!p)
        return;
    size_t contexts = p->tasks ? pp_tasks_workers(p->tasks) : 0;
    size_t jobs = p->tasks ? pp_tasks_capacity(p->tasks) : 0;
    pp_tasks_free(p->tasks); /* joins the workers first */
    const prepack_allocator *a = p->alloc;
    for (size_t i = 0; p->cctx && i < contexts; i++)
        ZSTD_freeCCtx(p->cctx[i]);
    for (size_t i = 0; p->jobs && i < jobs; i++) {
        pp_free(a, p->jobs[i].in);
        pp_free(a, p->jobs[i].out);
    }
    pp_free(a, p->jobs);
    pp_free(a, p->cctx);
    prepack_allocator copy = p->alloc_copy; /* p itself goes with it */
    pp_free(a ? &copy : NULL, p);
}

int pp_pool_full(const pp_pool *p)
{
    return pp_tasks_full(p->tasks);
}

int pp_pool_empty(const pp_pool *p)
{
    return pp_tasks_empty(p->tasks);
}

int pp_pool_submit(pp_pool *p, void *data, size_t size)
{
    if (pp_tasks_full(p->tasks))
        return PREPACK_EINVAL; /* take results first */
    job *j = &p->jobs[p->submitted % pp_tasks_capacity(p->tasks)];
    pp_free(p->alloc, j->in);
    j->in = data;
    j->in_size = size;
    j->error = 0;
    p->submitted++;
    return pp_tasks_submit(p->tasks, j);
}

int pp_pool_take(pp_pool *p, int wait, pp_frame_result *out)
{
    job *j = pp_tasks_take(p->tasks, wait);
    if (!j)
        return 0;
    out->data = j->out;
    out->size = j->out_size;
    out->raw_size = j->in_size;
    out->checksum = j->checksum;
    out->hash = j->hash;
    out->error = j->error;
    return 1;
}
