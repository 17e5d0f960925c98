/* Error codes, diagnostics and the names of enum values. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *prepack_strerror(int code)
{
    switch (code) {
    case PREPACK_OK: return "success";
    case PREPACK_EINVAL: return "invalid argument";
    case PREPACK_ENOMEM: return "out of memory";
    case PREPACK_EIO: return "input/output error";
    case PREPACK_EFORMAT: return "malformed input";
    case PREPACK_ECORRUPT: return "corrupt data";
    case PREPACK_EOVERLONG: return "sequence longer than max_seq_len";
    case PREPACK_ERANGE: return "value out of supported range";
    default: return "unknown error";
    }
}

int pp_fail(prepack_diag *diag, int code, uint64_t record, const char *fmt,
            ...)
{
    if (diag) {
        va_list ap;
        va_start(ap, fmt);
        diag->code = code;
        diag->record = record;
        vsnprintf(diag->message, sizeof diag->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const char *const algo_names[] = {"ffd", "bfd", "nextfit"};
static const char *const overlong_names[] = {"error", "truncate", "split",
                                             "drop"};
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *name_of(const char *const *names, size_t count, int v)
{
    return v >= 0 && (size_t)v < count ? names[v] : NULL;
}

static int index_of(const char *const *names, size_t count, const char *s)
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

int prepack_algo_parse(const char *name, prepack_algo *out)
{
    int i = index_of(algo_names, COUNT_OF(algo_names), name);
    if (i < 0)
        return PREPACK_EINVAL;
    *out = (prepack_algo)i;
    return PREPACK_OK;
}

int prepack_overlong_parse(const char *name, prepack_overlong *out)
{
    int i = index_of(overlong_names, COUNT_OF(overlong_names), name);
    if (i < 0)
        return PREPACK_EINVAL;
    *out = (prepack_overlong)i;
    return PREPACK_OK;
}
