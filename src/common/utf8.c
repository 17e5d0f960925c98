/* Whether bytes are UTF-8 (utf8.h): the table of well-formed byte
 * sequences in the Unicode standard (3.9, table 3-7), one code point at
 * a time. Used on short strings (a row's map keys), so no SIMD. */
#include "common/utf8.h"

/* The bytes a code point led by b takes (0: b leads none), and the range
 * its second byte must lie in, which rules out overlong forms,
 * surrogates and code points past U+10FFFF. */
static size_t sequence_length(unsigned char b, unsigned char *lo,
                              unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b < 0xC2)
        return 0; /* a continuation byte, or an overlong two-byte lead */
    if (b < 0xE0)
        return 2;
    if (b < 0xF0) {
        *lo = b == 0xE0 ? 0xA0 : 0x80;
        *hi = b == 0xED ? 0x9F : 0xBF;
        return 3;
    }
    if (b < 0xF5) {
        *lo = b == 0xF0 ? 0x90 : 0x80;
        *hi = b == 0xF4 ? 0x8F : 0xBF;
        return 4;
    }
    return 0;
}

int pp_is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char lo, hi;
        size_t len = sequence_length(s[i], &lo, &hi);
        if (len == 0 || len > n - i)
            return 0;
        if (len > 1 && (s[i + 1] < lo || s[i + 1] > hi))
            return 0;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += len;
    }
    return 1;
}
