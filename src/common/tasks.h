/* Tasks run on worker threads and handed back in the order they were
 * submitted, so that whoever consumes the results (adding sequences to the
 * store, writing frames) does the same thing whatever the thread count.
 * The caller owns the task structs: it keeps pp_tasks_capacity() of them
 * and reuses a task once it has taken it back. With 0 or 1 thread a task
 * runs on the caller's thread when it is submitted. Used by the binary
 * readers (src/ingest) and the frame compressor (src/shards). */
#ifndef PP_COMMON_TASKS_H
#define PP_COMMON_TASKS_H

#include <stddef.h>

#include "prepack.h"

typedef struct pp_tasks pp_tasks;
/* Runs one task; `worker` (0 .. pp_tasks_workers() - 1) names the thread,
 * for per-thread state (a zstd context). Must not fail: a task records
 * its own error for the consumer to report in order. */
typedef void (*pp_task_fn)(void *ctx, void *task, size_t worker);

int pp_tasks_create(pp_tasks **out, int threads, pp_task_fn run, void *ctx,
                    const prepack_allocator *a);
/* Joins the workers (after they finish what is queued). NULL is fine. */
void pp_tasks_free(pp_tasks *p);
/* Tasks in flight at most: 2 per thread, so a worker never waits for the
 * consumer to hand it work; 1 without threads. */
size_t pp_tasks_capacity(const pp_tasks *p);
/* How many distinct `worker` values run sees: the threads, or 1. */
size_t pp_tasks_workers(const pp_tasks *p);
int pp_tasks_full(const pp_tasks *p);
int pp_tasks_empty(const pp_tasks *p);
/* Queues a task (the pool must not be full: PREPACK_EINVAL). */
int pp_tasks_submit(pp_tasks *p, void *task);
/* The oldest task once it has run (waiting for it if wait), or NULL when
 * none is in flight or (not wait) the oldest has not finished. */
void *pp_tasks_take(pp_tasks *p, int wait);

#endif
