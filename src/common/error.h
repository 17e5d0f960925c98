/* Failing with a code and one line of detail: every fallible function
 * returns a PREPACK_E* code and, when the caller passed a prepack_diag,
 * fills it with the record at fault and a message naming file and cause. */
#ifndef PP_COMMON_ERROR_H
#define PP_COMMON_ERROR_H

#include <stdarg.h>
#include <stdint.h>

#include "prepack.h"

#if defined(__GNUC__)
#define PP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PP_PRINTF(fmt, args)
#endif

/* Fills diag (when not NULL) and returns code, so callers can write
 * `return pp_fail(diag, PREPACK_EINVAL, rec, "...", ...);`. */
int pp_fail(prepack_diag *diag, int code, uint64_t record, const char *fmt, ...)
    PP_PRINTF(4, 5);

/* pp_fail with the message "prefix: " + fmt (prefix NULL: fmt alone), for
 * helpers that take their own variable arguments and name a file or a
 * file:line in front of every message. */
int pp_vfail(prepack_diag *diag, int code, uint64_t record, const char *prefix,
             const char *fmt, va_list ap);

/* The two failures every handle has: PREPACK_ENOMEM ("out of memory") and
 * PREPACK_EINVAL ("invalid argument": a NULL where the header forbids
 * one). */
int pp_out_of_memory(prepack_diag *diag);
int pp_invalid_argument(prepack_diag *diag);

#endif
