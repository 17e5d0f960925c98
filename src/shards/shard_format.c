/* Shard set file names (shard_format.h). */
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
