/* Compressing shard frames on worker threads.
 *
 * Frames are independent zstd frames compressed with the same parameters,
 * each by one context with zstd's own workers off (nbWorkers = 0: zstd's
 * multi-threaded mode produces other bytes), so a frame's bytes do not
 * depend on which thread made them, and results are handed back in the
 * order frames were submitted: the output is byte-identical whatever the
 * thread count. With 0 or 1 thread, frames are compressed on the caller's
 * thread at submission. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createCCtx_advanced */
#include <zstd.h>
#include <zstd_errors.h>

#include "common/alloc.h"
#include "shards/compress_pool.h"

enum { FREE, QUEUED, RUNNING, DONE };

typedef struct job {
    int state;
    void *in; /* the frame's bytes (owned) */
    size_t in_size;
    void *out; /* compressed */
    size_t out_cap, out_size;
    uint32_t checksum; /* XXH64 low 32 bits of `in` */
    size_t error;      /* a zstd error code, or 0 */
} job;

struct pp_pool {
    prepack_allocator alloc_copy;   /* the caller's, when one was given */
    const prepack_allocator *alloc; /* &alloc_copy or NULL: everything
                                       below, zstd's contexts too */
    int threads;
    int level;
    job *ring;
    size_t cap;         /* ring slots */
    size_t head, count; /* oldest job, jobs in the ring */
    ZSTD_CCtx **cctx;   /* one per worker (or one for the caller) */
    pthread_t *workers;
    size_t nworkers;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    int stop;
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
}

static void *worker(void *arg)
{
    pp_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    size_t me = p->nworkers++; /* the index of this worker's context */
    for (;;) {
        job *j = NULL;
        for (size_t k = 0; k < p->count && !j; k++) {
            job *c = &p->ring[(p->head + k) % p->cap];
            if (c->state == QUEUED)
                j = c;
        }
        if (!j) {
            if (p->stop)
                break;
            pthread_cond_wait(&p->work, &p->mu);
            continue;
        }
        j->state = RUNNING;
        pthread_mutex_unlock(&p->mu);
        compress_job(p->alloc, j, p->cctx[me]);
        pthread_mutex_lock(&p->mu);
        j->state = DONE;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int pp_pool_create(pp_pool **out, int threads, int level,
                   const prepack_allocator *a)
{
    *out = NULL;
    pp_pool *p = pp_calloc(a, 1, sizeof *p);
    if (!p)
        return PREPACK_ENOMEM;
    a = p->alloc = pp_allocator_keep(&p->alloc_copy, a);
    p->threads = threads > 1 ? threads : 0;
    p->level = level;
    p->cap = p->threads ? 2 * (size_t)p->threads : 1;
    size_t contexts = p->threads ? (size_t)p->threads : 1;
    p->ring = pp_calloc(a, p->cap, sizeof *p->ring);
    p->cctx = pp_calloc(a, contexts, sizeof *p->cctx);
    p->workers = pp_calloc(a, contexts, sizeof *p->workers);
    int ok = p->ring && p->cctx && p->workers;
    for (size_t i = 0; ok && i < contexts; i++)
        ok = (p->cctx[i] = new_cctx(a, level)) != NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    size_t started = 0;
    for (; ok && started < (size_t)p->threads; started++)
        ok = pthread_create(&p->workers[started], NULL, worker, p) == 0;
    if (!ok) {
        p->threads = (int)started; /* only what runs gets joined */
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
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->threads; i++)
        pthread_join(p->workers[i], NULL);
    size_t contexts = p->threads ? (size_t)p->threads : 1;
    for (size_t i = 0; p->cctx && i < contexts; i++)
        ZSTD_freeCCtx(p->cctx[i]);
    const prepack_allocator *a = p->alloc;
    for (size_t i = 0; p->ring && i < p->cap; i++) {
        pp_free(a, p->ring[i].in);
        pp_free(a, p->ring[i].out);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pp_free(a, p->ring);
    pp_free(a, p->cctx);
    pp_free(a, p->workers);
    prepack_allocator copy = p->alloc_copy; /* p itself goes with it */
    pp_free(a ? &copy : NULL, p);
}

int pp_pool_full(const pp_pool *p)
{
    return p->count == p->cap;
}

int pp_pool_empty(const pp_pool *p)
{
    return p->count == 0;
}

int pp_pool_submit(pp_pool *p, void *data, size_t size)
{
    pthread_mutex_lock(&p->mu);
    if (p->count == p->cap) {
        pthread_mutex_unlock(&p->mu);
        return PREPACK_EINVAL; /* take results first */
    }
    job *j = &p->ring[(p->head + p->count) % p->cap];
    pp_free(p->alloc, j->in);
    j->in = data;
    j->in_size = size;
    j->error = 0;
    p->count++;
    if (p->threads) {
        j->state = QUEUED;
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->mu);
        return PREPACK_OK;
    }
    pthread_mutex_unlock(&p->mu);
    compress_job(p->alloc, j, p->cctx[0]); /* no workers: here and now */
    j->state = DONE;
    return PREPACK_OK;
}

int pp_pool_take(pp_pool *p, int wait, pp_frame_result *out)
{
    pthread_mutex_lock(&p->mu);
    job *j = p->count ? &p->ring[p->head] : NULL;
    while (j && j->state != DONE && wait)
        pthread_cond_wait(&p->done, &p->mu);
    if (!j || j->state != DONE) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    out->data = j->out;
    out->size = j->out_size;
    out->raw_size = j->in_size;
    out->checksum = j->checksum;
    out->error = j->error;
    j->state = FREE;
    p->head = (p->head + 1) % p->cap;
    p->count--;
    pthread_mutex_unlock(&p->mu);
    return 1;
}
