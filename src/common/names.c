/* The names of enum values, as the CLI, the manifest and the Python
 * package spell them: one table per enum, indexed by value, and one pair
 * of lookups over all of them. */
#include <string.h>

#include "prepack.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *const algo_names[] = {"ffd", "bfd", "nextfit"};
static const char *const overlong_names[] = {"error", "truncate", "split",
                                             "drop"};
static const char *const format_names[] = {"auto", "jsonl", "megatron", "llmc",
                                           "raw-u16", "arrow"};
static const char *const dtype_names[] = {"auto", "uint16", "uint32"};

static const char *name_of(const char *const *names, size_t count, int v)
{
    return v >= 0 && (size_t)v < count ? names[v] : NULL;
}

/* The value named `s`, or -1. */
static int value_of(const char *const *names, size_t count, const char *s)
{
    for (size_t i = 0; s && i < count; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

const char *prepack_algo_name(prepack_algo algo)
{
    return name_of(algo_names, COUNT_OF(algo_names), (int)algo);
}

const char *prepack_overlong_name(prepack_overlong policy)
{
    return name_of(overlong_names, COUNT_OF(overlong_names), (int)policy);
}

const char *prepack_format_name(prepack_format format)
{
    return name_of(format_names, COUNT_OF(format_names), (int)format);
}

const char *prepack_dtype_name(prepack_dtype dtype)
{
    return name_of(dtype_names, COUNT_OF(dtype_names), (int)dtype);
}

int prepack_algo_parse(const char *name, prepack_algo *out)
{
    int v = value_of(algo_names, COUNT_OF(algo_names), name);
    if (v < 0)
        return PREPACK_EINVAL;
    *out = (prepack_algo)v;
    return PREPACK_OK;
}

int prepack_overlong_parse(const char *name, prepack_overlong *out)
{
    int v = value_of(overlong_names, COUNT_OF(overlong_names), name);
    if (v < 0)
        return PREPACK_EINVAL;
    *out = (prepack_overlong)v;
    return PREPACK_OK;
}

int prepack_format_parse(const char *name, prepack_format *out)
{
    int v = value_of(format_names, COUNT_OF(format_names), name);
    if (v < 0)
        return PREPACK_EINVAL;
    *out = (prepack_format)v;
    return PREPACK_OK;
}

size_t prepack_dtype_width(prepack_dtype dtype)
{
    return dtype == PREPACK_DTYPE_UINT16   ? 2
           : dtype == PREPACK_DTYPE_UINT32 ? 4
                                           : 0;
}

int prepack_dtype_parse(const char *name, prepack_dtype *out)
{
    int v = value_of(dtype_names, COUNT_OF(dtype_names), name);
    if (v < 0)
        return PREPACK_EINVAL;
    *out = (prepack_dtype)v;
    return PREPACK_OK;
}
