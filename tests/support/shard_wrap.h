/* Wrapping raw frame content (msgpack rows) into a valid one-frame shard
 * file: zstd frame with its checksum, then a seek table that agrees. Used
 * by tests and the shard fuzz target to put hostile rows behind intact
 * checksums. Header-only. The format's constants come from the library's
 * shards/shard_format.h, the one place they are written (the golden set
 * in fixtures/expected checks them against bytes). */
#ifndef PREPACK_SHARD_WRAP_H
#define PREPACK_SHARD_WRAP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

#include "common/bytes.h"
#include "shards/shard_format.h"

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
    size_t table = (size_t)pp_seek_table_bytes(1);
    size_t z = ZSTD_compress2(c, out, cap - table, raw, n);
    ZSTD_freeCCtx(c);
    if (ZSTD_isError(z))
        return 0;
    unsigned char *t = out + z;
    pp_store_le32(t, PP_SKIPPABLE_MAGIC);
    pp_store_le32(t + 4, (uint32_t)(table - PP_SEEK_HEADER_BYTES));
    unsigned char *e = t + PP_SEEK_HEADER_BYTES;
    pp_store_le32(e, (uint32_t)z);
    pp_store_le32(e + 4, (uint32_t)n);
    pp_store_le32(e + 8, (uint32_t)XXH64(raw, n, 0));
    unsigned char *foot = e + PP_SEEK_ENTRY_BYTES;
    pp_store_le32(foot, 1);
    foot[4] = PP_SEEK_CHECKSUMS;
    pp_store_le32(foot + 5, PP_SEEKABLE_MAGIC);
    return z + table;
}

/* wrap_as_shard for a version 4 set: the frame, then the index (the id
 * table of ntable ids of `width` bytes at ids, little-endian, and the
 * frame's hash), then the seek table; every hash agrees, so whatever the
 * rows and the table say reaches the id-code decoder. 0 on failure. */
static inline size_t wrap_as_v4_shard(const uint8_t *raw, size_t n,
                                      const uint8_t *ids, size_t ntable,
                                      unsigned width, unsigned char *out,
                                      size_t cap)
{
    size_t index = (size_t)pp_index_frame_bytes(ntable, width, 1);
    if (cap < index)
        return 0;
    size_t whole = wrap_as_shard(raw, n, out, cap - index);
    if (!whole)
        return 0;
    size_t table = (size_t)pp_seek_table_bytes(1);
    size_t z = whole - table;
    memmove(out + z + index, out + z, table); /* the seek table after it */
    unsigned char *f = out + z;
    pp_store_le32(f, PP_INDEX_MAGIC);
    pp_store_le32(f + 4, (uint32_t)(index - PP_INDEX_FRAME_HEAD));
    pp_store_le32(f + 8, (uint32_t)ntable);
    pp_store_le32(f + 12, 1);
    unsigned char *rest = f + PP_INDEX_FRAME_HEAD + PP_INDEX_HEAD;
    memcpy(rest, ids, ntable * width);
    pp_store_le64(rest + ntable * width, XXH64(out, z, 0));
    pp_store_le64(f + 16, XXH64(rest, ntable * width + 8, 0));
    return whole + index;
}

#endif
