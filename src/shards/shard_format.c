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

/* One id's code at p: its rank + 1 r from the table (0: none). */
static inline unsigned char *put_code(unsigned char *p, uint32_t id,
                                      uint32_t r, unsigned width)
{
    if (r - 1 < PP_ID_ONE_BYTE) { /* r = 0 wraps past it */
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
    return p;
}

size_t pp_encode_id_codes(unsigned char *out, const void *ids, size_t n,
                          unsigned width, const uint16_t *rank,
                          uint32_t ranked)
{
    unsigned char *p = out;
    if (width == 2 && ranked >= 1u << 16) { /* every uint16 id has a slot */
        const uint16_t *in = ids;
        for (size_t i = 0; i < n; i++)
            p = put_code(p, in[i], rank[in[i]], 2);
        return (size_t)(p - out);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t id = width == 2 ? ((const uint16_t *)ids)[i]
                                 : ((const uint32_t *)ids)[i];
        p = put_code(p, id, id < ranked ? rank[id] : 0, width);
    }
    return (size_t)(p - out);
}

/* How many of the 8 bytes at p, from the first, are below 192 (their top
 * two bits not both set): one-byte codes, up to the first longer code. */
static inline size_t one_byte_codes_of_8(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t longer = (x & (x << 1)) & UINT64_C(0x8080808080808080);
    return longer ? (size_t)__builtin_ctzll(longer) / 8 : 8;
}

/* pp_decode_id_codes at one width (T: uint16_t or uint32_t), so the
 * loop holds no test of it; the one-byte codes before the next longer
 * one, up to 8, in one step when every one-byte rank is in the table.
 * (A branch-free decoder that computes every reading of a code and keeps
 * one measured slower: the step from one code to the next is the chain
 * either way, and most codes are one byte, which the branches predict.) */
#define DECODE_AT_WIDTH(NAME, T, W)                                          \
    static int NAME(T *out, const unsigned char *p, const unsigned char *end, \
                    size_t n, const uint32_t *table, size_t ntable)          \
    {                                                                        \
        int runs = ntable >= PP_ID_ONE_BYTE;                                 \
        size_t i = 0;                                                        \
        while (i < n) {                                                      \
            if (runs && n - i >= 8 && end - p >= 8) {                        \
                size_t ones = one_byte_codes_of_8(p);                        \
                for (size_t k = 0; k < ones; k++)                            \
                    out[i + k] = (T)table[p[k]];                             \
                p += ones;                                                   \
                i += ones;                                                   \
                if (ones == 8)                                               \
                    continue;                                                \
            }                                                                \
            if (p == end)                                                    \
                return -1;                                                   \
            uint32_t b = *p, r;                                              \
            if (b < PP_ID_ONE_BYTE) {                                        \
                r = b;                                                       \
                p++;                                                         \
            } else if (b < PP_ID_ESCAPE) {                                   \
                if (end - p < 2)                                             \
                    return -1;                                               \
                r = PP_ID_ONE_BYTE + ((b - PP_ID_ONE_BYTE) << 8 | p[1]);     \
                p += 2;                                                      \
            } else {                                                         \
                if (end - p < 1 + (W))                                       \
                    return -1;                                               \
                uint32_t id = 0;                                             \
                for (unsigned k = 0; k < (W); k++)                           \
                    id |= (uint32_t)p[1 + k] << (8 * k);                     \
                out[i++] = (T)id;                                            \
                p += 1 + (W);                                                \
                continue;                                                    \
            }                                                                \
            if (r >= ntable)                                                 \
                return -1;                                                   \
            out[i++] = (T)table[r];                                          \
        }                                                                    \
        return p == end ? 0 : -1;                                            \
    }

DECODE_AT_WIDTH(decode_codes16, uint16_t, 2)
DECODE_AT_WIDTH(decode_codes32, uint32_t, 4)

int pp_decode_id_codes(void *out, unsigned width, const unsigned char *in,
                       size_t nbytes, size_t n, const uint32_t *table,
                       size_t ntable)
{
    return width == 2
               ? decode_codes16(out, in, in + nbytes, n, table, ntable)
               : decode_codes32(out, in, in + nbytes, n, table, ntable);
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
