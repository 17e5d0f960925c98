/* Shard set file names and the encoding of token ids in rows
 * (shard_format.h). */
#include <stdio.h>
#include <string.h>

#include "shards/shard_format.h"

void pp_shard_name(char out[PP_SHARD_NAME_MAX], size_t i)
{
    snprintf(out, PP_SHARD_NAME_MAX, "shard-%05zu.zst", i);
}

int pp_is_shard_name(const char *s, size_t n)
{
    static const char prefix[] = "shard-", suffix[] = ".zst";
    size_t p = sizeof prefix - 1, q = sizeof suffix - 1;
    if (n < p + 1 + q || n >= PP_SHARD_NAME_MAX || memcmp(s, prefix, p) != 0 ||
        memcmp(s + n - q, suffix, q) != 0)
        return 0;
    for (size_t i = p; i < n - q; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int pp_is_set_file(const char *name)
{
    size_t n = strlen(name), t = sizeof PP_TMP_SUFFIX - 1;
    if (n > t && strcmp(name + n - t, PP_TMP_SUFFIX) == 0)
        n -= t; /* a temporary name is its final name's */
    return (n == sizeof PP_MANIFEST_NAME - 1 &&
            memcmp(name, PP_MANIFEST_NAME, n) == 0) ||
           pp_is_shard_name(name, n);
}

/* ---- token ids in rows --------------------------------------------------- */

_Static_assert(PP_ID_TABLE_MAX ==
                   PP_ID_ONE_BYTE + (PP_ID_ESCAPE - PP_ID_ONE_BYTE) * 256,
               "two-byte codes: 63 lead bytes of 256 ranks each");

size_t pp_encode_id_codes(unsigned char *out, const void *ids, size_t n,
                          unsigned width, const uint16_t *rank,
                          uint32_t ranked)
{
    unsigned char *p = out;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = width == 2 ? ((const uint16_t *)ids)[i]
                                 : ((const uint32_t *)ids)[i];
        uint32_t r = id < ranked ? rank[id] : 0; /* rank + 1, 0: none */
        if (r && r <= PP_ID_ONE_BYTE) {
            *p++ = (unsigned char)(r - 1);
        } else if (r) {
            uint32_t v = r - 1 - PP_ID_ONE_BYTE;
            p[0] = (unsigned char)(PP_ID_ONE_BYTE + (v >> 8));
            p[1] = (unsigned char)v;
            p += 2;
        } else {
            *p++ = PP_ID_ESCAPE;
            for (unsigned b = 0; b < width; b++)
                *p++ = (unsigned char)(id >> (8 * b));
        }
    }
    return (size_t)(p - out);
}

/* One decoded token into out[i] at the set's width. */
static inline void put_token(void *out, unsigned width, size_t i, uint32_t id)
{
    if (width == 2)
        ((uint16_t *)out)[i] = (uint16_t)id;
    else
        ((uint32_t *)out)[i] = id;
}

int pp_decode_id_codes(void *out, unsigned width, const unsigned char *in,
                       size_t nbytes, size_t n, const uint32_t *table,
                       size_t ntable)
{
    const unsigned char *p = in, *end = in + nbytes;
    for (size_t i = 0; i < n; i++) {
        if (p == end)
            return -1;
        uint32_t b = *p, r;
        if (b < PP_ID_ONE_BYTE) {
            r = b;
            p++;
        } else if (b < PP_ID_ESCAPE) {
            if (end - p < 2)
                return -1;
            r = PP_ID_ONE_BYTE + ((b - PP_ID_ONE_BYTE) << 8 | p[1]);
            p += 2;
        } else {
            if ((size_t)(end - p) < 1 + (size_t)width)
                return -1;
            uint32_t id = 0;
            for (unsigned k = 0; k < width; k++)
                id |= (uint32_t)p[1 + k] << (8 * k);
            put_token(out, width, i, id);
            p += 1 + width;
            continue;
        }
        if (r >= ntable)
            return -1;
        put_token(out, width, i, table[r]);
    }
    return p == end ? 0 : -1;
}

unsigned pp_stored_id_bytes(uint32_t version, unsigned width, size_t nbytes,
                            size_t tokens)
{
    if (version >= PP_FIRST_ID3_VERSION && width == 4 && tokens > 0 &&
        nbytes % 3 == 0 && nbytes / 3 == tokens)
        return 3;
    return width;
}

void pp_decode_ids(void *out, unsigned width, const void *in, unsigned stored,
                   size_t n)
{
    if (stored == width) {
        memcpy(out, in, n * width);
        return;
    }
    const unsigned char *p = in; /* 3 bytes into uint32 */
    uint32_t *o = out;
    for (size_t i = 0; i < n; i++, p += 3)
        o[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}
