/* Whether bytes are UTF-8 (utf8.c). */
#ifndef PP_COMMON_UTF8_H
#define PP_COMMON_UTF8_H

#include <stddef.h>

/* Non-zero when the n bytes at s are well-formed UTF-8 (RFC 3629, as
 * Python's strict decoder reads it: no overlong forms, no surrogates,
 * nothing past U+10FFFF, nothing cut short). */
int pp_is_utf8(const unsigned char *s, size_t n);

#endif
