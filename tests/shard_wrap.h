/* Wrapping raw frame content (msgpack rows) into a valid one-frame shard
 * file: zstd frame with its checksum, then a seek table that agrees. Used
 * by tests and the shard fuzz target to put hostile rows behind intact
 * checksums. Header-only. */
#ifndef PREPACK_SHARD_WRAP_H
#define PREPACK_SHARD_WRAP_H

#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>
#include <zstd.h>

static inline void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* One zstd frame of `raw` and the seek table for it: a valid shard file
 * around whatever rows raw holds. Returns its size (0 on failure). */
static inline size_t wrap_as_shard(const uint8_t *raw, size_t n,
                                   unsigned char *out, size_t cap)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (!c)
        return 0;
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
    size_t z = ZSTD_compress2(c, out, cap - 29, raw, n);
    ZSTD_freeCCtx(c);
    if (ZSTD_isError(z))
        return 0;
    unsigned char *t = out + z;
    put_le32(t, 0x184D2A5Eu);
    put_le32(t + 4, 12 + 9);
    put_le32(t + 8, (uint32_t)z);
    put_le32(t + 12, (uint32_t)n);
    put_le32(t + 16, (uint32_t)XXH64(raw, n, 0));
    put_le32(t + 20, 1);
    t[24] = 0x80;
    put_le32(t + 25, 0x8F92EAB1u);
    return z + 29;
}

#endif
