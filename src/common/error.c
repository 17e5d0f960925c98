/* Error codes and diagnostics. */
#include <stdarg.h>
#include <stdio.h>

#include "common/error.h"

const char *prepack_strerror(int code)
{
    switch (code) {
    case PREPACK_OK:
        return "success";
    case PREPACK_EINVAL:
        return "invalid argument";
    case PREPACK_ENOMEM:
        return "out of memory";
    case PREPACK_EIO:
        return "input/output error";
    case PREPACK_EFORMAT:
        return "malformed input";
    case PREPACK_ECORRUPT:
        return "corrupt data";
    case PREPACK_EOVERLONG:
        return "sequence longer than max_seq_len";
    case PREPACK_ERANGE:
        return "value out of supported range";
    default:
        return "unknown error";
    }
}

int pp_vfail(prepack_diag *diag, int code, uint64_t record, const char *prefix,
             const char *fmt, va_list ap)
{
    if (!diag)
        return code;
    diag->code = code;
    diag->record = record;
    size_t at = 0, cap = sizeof diag->message;
    if (prefix) {
        int n = snprintf(diag->message, cap, "%s: ", prefix);
        at = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
    }
    vsnprintf(diag->message + at, cap - at, fmt, ap);
    return code;
}

int pp_fail(prepack_diag *diag, int code, uint64_t record, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pp_vfail(diag, code, record, NULL, fmt, ap);
    va_end(ap);
    return code;
}

int pp_out_of_memory(prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD, "out of memory");
}

int pp_invalid_argument(prepack_diag *diag)
{
    return pp_fail(diag, PREPACK_EINVAL, PREPACK_NO_RECORD, "invalid argument");
}
