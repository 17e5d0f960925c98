/* Allocation through the caller's allocator, with overflow-checked sizes. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int mul_overflows(size_t count, size_t size, size_t *bytes)
{
    if (size != 0 && count > SIZE_MAX / size)
        return 1;
    *bytes = count * size;
    return 0;
}

void *pp_alloc(const prepack_allocator *a, size_t count, size_t size)
{
    size_t bytes;
    if (mul_overflows(count, size, &bytes))
        return NULL;
    if (bytes == 0)
        bytes = 1; /* a valid pointer for empty arrays, freed like others */
    return a ? a->malloc_fn(a->opaque, bytes) : malloc(bytes);
}

void *pp_calloc(const prepack_allocator *a, size_t count, size_t size)
{
    size_t bytes;
    if (mul_overflows(count, size, &bytes))
        return NULL;
    void *p = pp_alloc(a, bytes, 1);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void *pp_realloc(const prepack_allocator *a, void *p, size_t count,
                 size_t size)
{
    size_t bytes;
    if (mul_overflows(count, size, &bytes))
        return NULL;
    if (bytes == 0)
        bytes = 1;
    return a ? a->realloc_fn(a->opaque, p, bytes) : realloc(p, bytes);
}

void pp_free(const prepack_allocator *a, void *p)
{
    if (!p)
        return;
    if (a)
        a->free_fn(a->opaque, p);
    else
        free(p);
}

void prepack_free(void *ptr, const prepack_allocator *allocator)
{
    pp_free(allocator, ptr);
}
