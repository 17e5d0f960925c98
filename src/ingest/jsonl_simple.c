/* Simple JSON lines by hand (see jsonl_simple.h). A small recursive-
 * descent reader over exactly this grammar, ws being space, tab or CR:
 *
 *   line  = ws '{' ws pair (ws ',' ws pair)* ws '}' ws
 *   pair  = '"' key '"' ws ':' ws (array | string | int)   (int: "group")
 *   array = '[' ws [int (ws ',' ws int)*] ws ']'
 *   key   = printable ASCII but '"' and '\' (so it is its own value)
 *   int   = ['-'] ('0' | [1-9][0-9]{0,17}), not -0
 *   string = '"' (UTF-8 character but '"', '\' and U+0000..U+001F
 *            | '\' one of "\/bfnrt | '\u' 4 hex digits, not a
 *            surrogate)* '"'
 *
 * Every accepted line is valid JSON. The ids' key, "loss_mask" and
 * "labels" must each appear at most once, not both of the last two, hold
 * arrays, and obey the full parser's rules (ids 0..2^32-1; mask 0 or 1
 * per id; labels the id or -100 per id); "group" at most once, an
 * integer or a string without escapes; other keys (a tokenizer's "text",
 * "attention_mask") are checked for shape and skipped. */
#include <string.h>

#include "ingest/jsonl_simple.h"

/* The line is followed by its '\n', which no rule below takes: every
 * loop stops there, so none needs a bounds check. Numbers are read 8
 * bytes at a time: the caller's buffer has 8 readable bytes past the
 * newline (simdjson's padding). */
typedef struct cursor {
    const unsigned char *p, *end;
} cursor;

static const unsigned char *skip_ws(const unsigned char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static int take(cursor *c, unsigned char ch)
{
    c->p = skip_ws(c->p);
    if (*c->p != ch)
        return 0;
    c->p++;
    return 1;
}

/* Digits 8 bytes at a time, SWAR (Lemire, "Faster integer parsing"): a
 * byte is a digit when (b ^ '0') < 10; digits shifted to end the word are
 * combined in pairs, fours and eights with three multiplications. */
static uint64_t load_word(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/* How many of w's first bytes are digits (8: all); *x: w ^ '0's. */
static unsigned leading_digits(uint64_t w, uint64_t *x)
{
    *x = w ^ 0x3030303030303030u;
    uint64_t non_digit =
        (((*x & 0x7F7F7F7F7F7F7F7Fu) + 0x7676767676767676u) | *x) &
        0x8080808080808080u;
    return non_digit ? (unsigned)__builtin_ctzll(non_digit) / 8 : 8;
}

/* The value of the first n (1..8) digits of x (from leading_digits). */
static uint64_t digits_value(uint64_t x, unsigned n)
{
    uint64_t v = (x << (8 * (8 - n))) & 0x0F0F0F0F0F0F0F0Fu;
    v = (v * 2561) >> 8;
    v = ((v & 0x00FF00FF00FF00FFu) * 6553601) >> 16;
    return ((v & 0x0000FFFF0000FFFFu) * 42949672960001u) >> 32;
}

/* An integer at *pp (at most 18 digits: no overflow; not -0, which
 * simdjson makes a double) into *v; 0 when there is none. Ids have 1 to
 * 10 digits: up to 8 are read in one step. */
static int read_int(const unsigned char **pp, int64_t *v)
{
    const unsigned char *p = *pp;
    int neg = *p == '-';
    p += neg;
    const unsigned char *start = p;
    uint64_t w = 0;
    unsigned n = leading_digits(load_word(p), &w);
    uint64_t x = n ? digits_value(w, n) : 0;
    p += n;
    if (n == 8)
        while ((unsigned)(*p - '0') < 10)
            x = x * 10 + (uint64_t)(*p++ - '0');
    size_t digits = (size_t)(p - start);
    if (digits == 0 || digits > 18 || (digits > 1 && *start == '0') ||
        (neg && x == 0))
        return 0;
    *v = neg ? -(int64_t)x : (int64_t)x;
    *pp = p;
    return 1;
}

enum { KEY_OTHER, KEY_IDS, KEY_MASK, KEY_LABELS, KEY_GROUP };

/* One value of an array, kept by role: ids into out->ids, mask into
 * out->mask (0 or 1), labels into scratch and mask (-100 -> 0). */
static int keep(int role, int64_t v, size_t i, pp_simple_line *out)
{
    switch (role) {
    case KEY_IDS:
        if (v < 0 || v > (int64_t)UINT32_MAX)
            return 0;
        out->ids[i] = (uint32_t)v;
        return 1;
    case KEY_MASK:
        if (v != 0 && v != 1)
            return 0;
        out->mask[i] = (uint8_t)v;
        return 1;
    case KEY_LABELS:
        if (v != -100 && (v < 0 || v > (int64_t)UINT32_MAX))
            return 0;
        out->mask[i] = v != -100;
        out->scratch[i] = v == -100 ? 0 : (uint32_t)v;
        return 1;
    default:
        return 1;
    }
}

/* The common case of a value (an id, a mask's 0 or 1), at most 6 digits
 * then "," or ", ", read from one 8-byte word: the next value's address
 * then comes from that word, not from further loads (the loop is bound by
 * that chain). Returns the bytes taken, or 0 when the general path must
 * read this one. */
static size_t short_id(const unsigned char *p, uint32_t *id)
{
    uint64_t w = load_word(p), x;
    unsigned n = leading_digits(w, &x);
    if (n == 0 || n > 6 || (n > 1 && (w & 0xFF) == '0'))
        return 0;
    unsigned sep = (unsigned)(w >> (8 * n)) & 0xFFFF;
    size_t taken = sep == 0x202C ? n + 2 : (sep & 0xFF) == 0x2C ? n + 1 : 0;
    if (taken)
        *id = (uint32_t)digits_value(x, n);
    return taken;
}

/* An array of integers, its values kept by role; *n: how many. */
static int read_array(cursor *c, int role, pp_simple_line *out, size_t *n)
{
    *n = 0;
    if (!take(c, '['))
        return 0;
    const unsigned char *p = skip_ws(c->p);
    size_t i = 0;
    if (*p != ']') {
        for (;;) {
            size_t taken;
            uint32_t id;
            if (i < out->cap && (taken = short_id(p, &id)) != 0) {
                if (!keep(role, id, i, out))
                    return 0;
                i++;
                p += taken; /* a separator included: the next id follows */
                if (*p == ' ' || *p == '\t' || *p == '\r')
                    p = skip_ws(p);
                continue;
            }
            int64_t v;
            if (!read_int(&p, &v) || i == out->cap || !keep(role, v, i, out))
                return 0;
            i++;
            p = skip_ws(p);
            if (*p != ',')
                break;
            p = skip_ws(p + 1);
        }
        if (*p != ']')
            return 0;
    }
    c->p = p + 1;
    *n = i;
    return 1;
}

/* The length of the UTF-8 character at p (2..4 bytes), 0 when the bytes
 * are not one (overlong forms, surrogates, past U+10FFFF, a missing
 * continuation byte: the newline after the line is none). */
static size_t utf8_char(const unsigned char *p)
{
    unsigned b = p[0];
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
    size_t n;
    if (b >= 0xC2 && b <= 0xDF)
        n = 2;
    else if (b >= 0xE0 && b <= 0xEF)
        n = 3, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xF0 && b <= 0xF4)
        n = 4, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* A string value: the JSON rules, checked; *escaped: whether it holds
 * an escape (its bytes are then not its value). */
static int read_string(cursor *c, int *escaped)
{
    *escaped = 0;
    if (!take(c, '"'))
        return 0;
    const unsigned char *p = c->p;
    for (;;) {
        /* 8 plain ASCII bytes at a time: none below 0x20, none of '"' or
         * '\\', none with the high bit (exact tests, after the usual
         * any-zero-byte trick: (v - 0x01...) & ~v & 0x80...) */
        uint64_t w = load_word(p);
        uint64_t q = w ^ 0x2222222222222222u, bs = w ^ 0x5C5C5C5C5C5C5C5Cu;
        uint64_t odd = ((w - 0x2020202020202020u) | (q - 0x0101010101010101u) |
                        (bs - 0x0101010101010101u) | w) &
                       0x8080808080808080u;
        if (!odd) {
            p += 8;
            continue;
        }
        unsigned b = *p;
        if (b == '"')
            break;
        if (b < 0x20) /* a control character, or the line's end */
            return 0;
        if (b < 0x80 && b != '\\') {
            p++;
        } else if (b == '\\') {
            unsigned e = p[1];
            *escaped = 1;
            if (e == 'u') {
                int h[4] = {hex_value(p[2]), hex_value(p[3]),
                            hex_value(p[4]), hex_value(p[5])};
                if (h[0] < 0 || h[1] < 0 || h[2] < 0 || h[3] < 0)
                    return 0;
                unsigned u = (unsigned)(h[0] << 12 | h[1] << 8 | h[2] << 4 |
                                        h[3]);
                if (u >= 0xD800 && u <= 0xDFFF)
                    return 0; /* surrogates: the full parser's to pair */
                p += 6;
            } else if (e && strchr("\"\\/bfnrt", (int)e)) {
                p += 2;
            } else {
                return 0;
            }
        } else {
            size_t n = utf8_char(p);
            if (!n)
                return 0;
            p += n;
        }
    }
    c->p = p + 1;
    return 1;
}

/* "group": an integer (kept as written: no leading zeros or -0, so the
 * text is the full parser's decimal) or a string without escapes (kept
 * as its bytes, its value); anything else is the full parser's. */
static int read_group(cursor *c, pp_simple_line *out)
{
    const unsigned char *start = c->p + (*c->p == '"');
    if (*c->p == '"') {
        int escaped;
        if (!read_string(c, &escaped) || escaped)
            return 0;
        out->group_kind = 's';
        out->group = start;
        out->group_len = (size_t)(c->p - 1 - start);
        return 1;
    }
    int64_t v;
    const unsigned char *p = c->p;
    if (!read_int(&p, &v))
        return 0;
    out->group_kind = 'i';
    out->group = c->p;
    out->group_len = (size_t)(p - c->p);
    c->p = p;
    return 1;
}

/* A key in quotes: its role, or -1 when it is not a plain key. */
static int read_key(cursor *c, const char *field, size_t field_len)
{
    if (!take(c, '"'))
        return -1;
    const unsigned char *k = c->p, *p = k;
    while (*p != '"') {
        if (*p < 0x20 || *p > 0x7E || *p == '\\')
            return -1; /* the newline after the line stops here too */
        p++;
    }
    size_t n = (size_t)(p - k);
    c->p = p + 1;
    /* in the full parser's order: "group" is a group even when it names
     * the ids (--field group), the ids' key before a mask's name */
    if (n == 5 && memcmp(k, "group", 5) == 0)
        return KEY_GROUP;
    if (n == field_len && memcmp(k, field, n) == 0)
        return KEY_IDS;
    if (n == 9 && memcmp(k, "loss_mask", 9) == 0)
        return KEY_MASK;
    if (n == 6 && memcmp(k, "labels", 6) == 0)
        return KEY_LABELS;
    return KEY_OTHER;
}

int pp_jsonl_simple_line(const unsigned char *line, size_t len,
                         const char *field, size_t field_len,
                         pp_simple_line *out)
{
    if (line[len] != '\n')
        return 0;
    cursor c = {line, line + len};
    int seen[5] = {0, 0, 0, 0, 0};
    size_t counts[5] = {0, 0, 0, 0, 0};
    out->group_kind = 0;
    if (!take(&c, '{'))
        return 0;
    do {
        int role = read_key(&c, field, field_len);
        if (role < 0 || !take(&c, ':') || (role != KEY_OTHER && seen[role]))
            return 0;
        seen[role] = 1;
        c.p = skip_ws(c.p);
        int escaped, ok;
        if (role == KEY_GROUP)
            ok = read_group(&c, out);
        else if (role == KEY_OTHER && *c.p == '"')
            ok = read_string(&c, &escaped);
        else
            ok = read_array(&c, role, out, &counts[role]);
        if (!ok)
            return 0;
    } while (take(&c, ','));
    if (!take(&c, '}'))
        return 0;
    c.p = skip_ws(c.p);
    if (c.p != c.end || !seen[KEY_IDS] || (seen[KEY_MASK] && seen[KEY_LABELS]))
        return 0;
    out->n = counts[KEY_IDS];
    out->has_mask = seen[KEY_MASK] || seen[KEY_LABELS];
    if (seen[KEY_MASK] && counts[KEY_MASK] != out->n)
        return 0;
    if (seen[KEY_LABELS]) {
        if (counts[KEY_LABELS] != out->n)
            return 0;
        for (size_t i = 0; i < out->n; i++)
            if (out->mask[i] && out->scratch[i] != out->ids[i])
                return 0;
    }
    return 1;
}
