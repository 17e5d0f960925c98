/* Helpers shared by the tests: a seeded generator and a counting allocator
 * that can fail its k-th allocation. Header-only, static functions. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stdint.h>
#include <stdlib.h>

#include "prepack.h"

typedef struct rng {
    uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline uint32_t rng_range(rng *r, uint32_t lo, uint32_t hi)
{
    return lo + (uint32_t)(rng_next(r) % ((uint64_t)hi - lo + 1));
}

/* An allocator that counts live blocks and fails allocation number
 * fail_at (0-based; SIZE_MAX = never). */
typedef struct counting_alloc {
    size_t calls, fail_at, live;
} counting_alloc;

static inline void *ca_malloc(void *opaque, size_t size)
{
    counting_alloc *c = opaque;
    if (c->calls++ == c->fail_at)
        return NULL;
    void *p = malloc(size);
    if (p)
        c->live++;
    return p;
}

static inline void *ca_realloc(void *opaque, void *ptr, size_t size)
{
    counting_alloc *c = opaque;
    if (c->calls++ == c->fail_at)
        return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        c->live++;
    return p;
}

static inline void ca_free(void *opaque, void *ptr)
{
    counting_alloc *c = opaque;
    if (ptr)
        c->live--;
    free(ptr);
}

static inline prepack_allocator counting_allocator(counting_alloc *c)
{
    prepack_allocator a = {ca_malloc, ca_realloc, ca_free, c};
    return a;
}

#endif
