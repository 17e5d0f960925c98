/* Compressing shard frames, on worker threads or the caller's, with the
 * results handed back in submission order (so the bytes written do not
 * depend on the thread count). Used by the writer. */
#ifndef PP_SHARDS_COMPRESS_POOL_H
#define PP_SHARDS_COMPRESS_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "prepack.h"

typedef struct pp_pool pp_pool;
typedef struct pp_frame_result {
    const void *data; /* compressed bytes, valid until the next submit */
    size_t size, raw_size;
    uint32_t checksum; /* XXH64 low 32 bits of the raw bytes */
    uint64_t hash;     /* XXH64 of the compressed bytes (a version 4
                          shard's index) */
    size_t error;      /* a zstd error code, or 0 */
} pp_frame_result;

/* threads <= 1: compress on the caller's thread. Buffers and zstd contexts
 * come from a (NULL = libc; copied, not kept), from the workers' threads
 * too. */
int pp_pool_create(pp_pool **out, int threads, int level,
                   const prepack_allocator *a);
void pp_pool_free(pp_pool *p);
int pp_pool_full(const pp_pool *p);
int pp_pool_empty(const pp_pool *p);
/* Takes ownership of data (from the pool's allocator); the pool must not
 * be full. */
int pp_pool_submit(pp_pool *p, void *data, size_t size);
/* The oldest submitted frame once compressed (waiting if wait): 1, or 0
 * when there is none ready. Results come in submission order. */
int pp_pool_take(pp_pool *p, int wait, pp_frame_result *out);

#endif
