/* Tasks on worker threads, results in submission order: a ring of task
 * pointers under one mutex. Workers take the oldest queued task; the
 * consumer waits on the oldest in flight. Tasks are coarse (a block of
 * 65,536 index entries, a megabyte of tokens, a frame), so one lock
 * costs nothing measurable. */
#include <pthread.h>

#include "common/alloc.h"
#include "common/tasks.h"

enum { QUEUED, RUNNING, DONE };

typedef struct slot {
    void *task;
    int state;
} slot;

struct pp_tasks {
    prepack_allocator alloc_copy;
    const prepack_allocator *alloc;
    pp_task_fn run;
    void *ctx;
    int threads; /* 0: run at submission */
    slot *ring;
    size_t cap, head, count;
    size_t next_queued; /* ring distance from head of the first QUEUED */
    pthread_t *workers;
    size_t named; /* worker indices handed out */
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    int stop;
};

/* The oldest queued task, marked running; NULL when none. */
static slot *claim(pp_tasks *p)
{
    while (p->next_queued < p->count) {
        slot *s = &p->ring[(p->head + p->next_queued++) % p->cap];
        if (s->state == QUEUED) {
            s->state = RUNNING;
            return s;
        }
    }
    return NULL;
}

static void *worker(void *arg)
{
    pp_tasks *p = arg;
    pthread_mutex_lock(&p->mu);
    size_t me = p->named++;
    for (;;) {
        slot *s = claim(p);
        if (!s) {
            if (p->stop)
                break;
            pthread_cond_wait(&p->work, &p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        p->run(p->ctx, s->task, me);
        pthread_mutex_lock(&p->mu);
        s->state = DONE;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int pp_tasks_create(pp_tasks **out, int threads, pp_task_fn run, void *ctx,
                    const prepack_allocator *a)
{
    *out = NULL;
    pp_tasks *p = pp_calloc(a, 1, sizeof *p);
    if (!p)
        return PREPACK_ENOMEM;
    a = p->alloc = pp_allocator_keep(&p->alloc_copy, a);
    p->run = run;
    p->ctx = ctx;
    int want = threads > 1 ? threads : 0;
    p->cap = want ? 2 * (size_t)want : 1;
    p->ring = pp_calloc(a, p->cap, sizeof *p->ring);
    p->workers = want ? pp_calloc(a, (size_t)want, sizeof *p->workers) : NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    int ok = p->ring && (!want || p->workers);
    for (; ok && p->threads < want; p->threads++)
        ok = pthread_create(&p->workers[p->threads], NULL, worker, p) == 0;
    if (!ok) { /* only what started is joined */
        pp_tasks_free(p);
        return PREPACK_ENOMEM;
    }
    *out = p;
    return PREPACK_OK;
}

void pp_tasks_free(pp_tasks *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->threads; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    const prepack_allocator *a = p->alloc;
    pp_free(a, p->ring);
    pp_free(a, p->workers);
    prepack_allocator copy = p->alloc_copy; /* p itself goes with it */
    pp_free(a ? &copy : NULL, p);
}

size_t pp_tasks_capacity(const pp_tasks *p)
{
    return p->cap;
}

size_t pp_tasks_workers(const pp_tasks *p)
{
    return p->threads ? (size_t)p->threads : 1;
}

int pp_tasks_full(const pp_tasks *p)
{
    return p->count == p->cap;
}

int pp_tasks_empty(const pp_tasks *p)
{
    return p->count == 0;
}

int pp_tasks_submit(pp_tasks *p, void *task)
{
    if (!p->threads) {
        if (p->count)
            return PREPACK_EINVAL;
        p->run(p->ctx, task, 0); /* no workers: here and now */
        p->ring[0] = (slot){task, DONE};
        p->count = 1;
        return PREPACK_OK;
    }
    pthread_mutex_lock(&p->mu);
    if (p->count == p->cap) {
        pthread_mutex_unlock(&p->mu);
        return PREPACK_EINVAL; /* take results first */
    }
    p->ring[(p->head + p->count++) % p->cap] = (slot){task, QUEUED};
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return PREPACK_OK;
}

void *pp_tasks_take(pp_tasks *p, int wait)
{
    if (!p->threads) {
        void *t = p->count ? p->ring[0].task : NULL;
        p->count = 0;
        return t;
    }
    pthread_mutex_lock(&p->mu);
    slot *s = p->count ? &p->ring[p->head] : NULL;
    while (s && s->state != DONE && wait)
        pthread_cond_wait(&p->done, &p->mu);
    void *t = NULL;
    if (s && s->state == DONE) {
        t = s->task;
        p->head = (p->head + 1) % p->cap;
        p->count--;
        if (p->next_queued)
            p->next_queued--;
    }
    pthread_mutex_unlock(&p->mu);
    return t;
}
