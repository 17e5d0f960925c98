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

int pp_encode_ids3(unsigned char *out, const uint32_t *ids, size_t n)
{
    uint32_t any = 0;
    for (size_t i = 0; i < n; i++, out += 3) {
        any |= ids[i];
        out[0] = (unsigned char)ids[i];
        out[1] = (unsigned char)(ids[i] >> 8);
        out[2] = (unsigned char)(ids[i] >> 16);
    }
    return any >> 24 != 0;
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
