/* Allocation through the caller's allocator, with overflow-checked sizes. */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"

static int mul_overflows(size_t count, size_t size, size_t *bytes)
{
    if (size != 0 && count > SIZE_MAX / size)
        return 1;
    *bytes = count * size;
    return 0;
}

int pp_check_allocator(const prepack_allocator *a, prepack_diag *diag)
{
    if (a && (!a->malloc_fn || !a->realloc_fn || !a->free_fn))
        return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD,
                       "allocator needs all three functions");
    return PREPACK_OK;
}

const prepack_allocator *pp_allocator_keep(prepack_allocator *keep,
                                           const prepack_allocator *a)
{
    if (!a)
        return NULL;
    *keep = *a;
    return keep;
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

void *pp_realloc(const prepack_allocator *a, void *p, size_t count, size_t size)
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

char *pp_strndup(const prepack_allocator *a, const char *s, size_t n)
{
    char *copy = n < SIZE_MAX ? pp_alloc(a, n + 1, 1) : NULL;
    if (copy) {
        memcpy(copy, s, n);
        copy[n] = 0;
    }
    return copy;
}

void *pp_zstd_alloc(void *opaque, size_t size)
{
    return pp_alloc(opaque, size, 1);
}

void pp_zstd_free(void *opaque, void *p)
{
    pp_free(opaque, p);
}

void prepack_free(void *ptr, const prepack_allocator *allocator)
{
    pp_free(allocator, ptr);
}

int pp_grow(const prepack_allocator *a, void **arr, size_t *cap, size_t need,
            size_t elem)
{
    if (need <= *cap)
        return PREPACK_OK;
    size_t n = *cap ? *cap + *cap / 2 : 64;
    if (n < need)
        n = need;
    void *p = pp_realloc(a, *arr, n, elem);
    if (!p)
        return PREPACK_ENOMEM;
    *arr = p;
    *cap = n;
    return PREPACK_OK;
}

void *pp_alloc_parts(const size_t *bytes, size_t count, void **part)
{
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = (bytes[i] + 7) & ~(size_t)7; /* 8-byte aligned parts */
        if (n < bytes[i] || total + n < total)
            return NULL;
        total += n;
    }
    unsigned char *block = pp_calloc(NULL, 1, total);
    if (!block)
        return NULL;
    unsigned char *at = block;
    for (size_t i = 0; i < count; i++) {
        part[i] = at;
        at += (bytes[i] + 7) & ~(size_t)7;
    }
    return block;
}
