/* Allocation through the caller's allocator (or libc's when it is NULL),
 * with element counts times sizes checked for overflow. Every handle
 * allocates here, so a test can fail the k-th allocation and check that
 * nothing leaks. */
#ifndef PP_COMMON_ALLOC_H
#define PP_COMMON_ALLOC_H

#include <stddef.h>

#include "prepack.h"

/* count x size bytes, NULL on overflow or when out of memory. */
void *pp_alloc(const prepack_allocator *a, size_t count, size_t size);
void *pp_calloc(const prepack_allocator *a, size_t count, size_t size);
void *pp_realloc(const prepack_allocator *a, void *p, size_t count,
                 size_t size);
void pp_free(const prepack_allocator *a, void *p);
/* A NUL-terminated copy of s[0..n), NULL when out of memory. */
char *pp_strndup(const prepack_allocator *a, const char *s, size_t n);

/* Makes *arr hold at least `need` elements of `elem` bytes, growing *cap by
 * half (so appending one at a time is O(1) amortised). PREPACK_ENOMEM
 * leaves *arr and *cap as they were. */
int pp_grow(const prepack_allocator *a, void **arr, size_t *cap, size_t need,
            size_t elem);

/* One zeroed allocation (libc's, freed with pp_free(NULL, ...)) holding
 * `count` parts of bytes[i] bytes, each 8-byte aligned; part[i] receives
 * each part's address, part[0] being the block's. NULL when out of memory
 * or when the sizes overflow. For results handed out as one block. */
void *pp_alloc_parts(const size_t *bytes, size_t count, void **part);

/* The caller's allocator as a handle keeps it: copied into *keep, so the
 * library holds no pointer to what the caller passed (prepack.h's
 * promise). Returns keep, or NULL for libc's. */
const prepack_allocator *pp_allocator_keep(prepack_allocator *keep,
                                           const prepack_allocator *a);

/* PREPACK_EINVAL (with diag's message) for an allocator missing one of
 * its three functions; PREPACK_OK for a complete one or NULL (libc's). */
int pp_check_allocator(const prepack_allocator *a, prepack_diag *diag);

/* zstd's ZSTD_customMem hooks over an allocator (opaque: the allocator),
 * so zstd's contexts allocate where the caller's handle does. */
void *pp_zstd_alloc(void *opaque, size_t size);
void pp_zstd_free(void *opaque, void *p);

#endif
