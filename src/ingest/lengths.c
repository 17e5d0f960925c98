/* Lengths files: one non-negative integer per line. Parsed by hand since
 * the grammar is one token a line and the errors must name the line. */
#include <string.h>

#include "common/alloc.h"
#include "common/error.h"

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* The next line's bounds; returns the index just past its newline. */
static size_t next_line(const char *text, size_t size, size_t pos, size_t *end)
{
    const char *nl = memchr(text + pos, '\n', size - pos);
    *end = nl ? (size_t)(nl - text) : size;
    return nl ? *end + 1 : size;
}

/* Parses one line's text [p, e) into *value. */
static int parse_line(const char *p, const char *e, const char *name,
                      uint64_t line, uint32_t *value, prepack_diag *diag)
{
    if (e > p && e[-1] == '\r')
        e--;
    while (p < e && is_blank(*p))
        p++;
    while (e > p && is_blank(e[-1]))
        e--;
    if (p == e)
        return pp_fail(diag, PREPACK_EFORMAT, line,
                       "%s:%llu: empty line, expected a length", name,
                       (unsigned long long)line);
    if (*p == '-' && e - p > 1 && p[1] >= '0' && p[1] <= '9')
        return pp_fail(
            diag, PREPACK_EFORMAT, line, "%s:%llu: negative length '%.*s'",
            name, (unsigned long long)line, (int)(e - p > 40 ? 40 : e - p), p);
    if (*p == '+')
        p++;
    uint64_t v = 0;
    const char *digits = p;
    for (; p < e && *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX) {
            while (p < e && *p >= '0' && *p <= '9')
                p++;
            if (p == e)
                return pp_fail(diag, PREPACK_ERANGE, line,
                               "%s:%llu: length too large (max %u)", name,
                               (unsigned long long)line, UINT32_MAX);
            break;
        }
    }
    if (p != e || p == digits)
        return pp_fail(diag, PREPACK_EFORMAT, line,
                       "%s:%llu: not a non-negative integer: '%.*s'", name,
                       (unsigned long long)line,
                       (int)(e - digits > 40 ? 40 : e - digits), digits);
    *value = (uint32_t)v;
    return PREPACK_OK;
}

static size_t count_lines(const char *text, size_t size)
{
    size_t lines = 0;
    for (const char *p = text, *end = text + size; p < end; lines++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    return lines;
}

int prepack_lengths_parse(const char *text, size_t size, const char *name,
                          uint32_t **lengths, size_t *n,
                          const prepack_allocator *allocator,
                          prepack_diag *diag)
{
    if (!lengths || !n || (!text && size))
        return pp_invalid_argument(diag);
    *lengths = NULL;
    *n = 0;
    if (pp_check_allocator(allocator, diag) != PREPACK_OK)
        return PREPACK_EINVAL;
    if (!name)
        name = "<lengths>";
    size_t lines = count_lines(text, size);
    if (lines == 0)
        return pp_fail(diag, PREPACK_EFORMAT, PREPACK_NO_RECORD,
                       "%s: no lengths (empty file)", name);
    if (lines > PREPACK_MAX_ITEMS)
        return pp_fail(diag, PREPACK_ERANGE, PREPACK_NO_RECORD,
                       "%s: %zu lines, more than %u sequences", name, lines,
                       PREPACK_MAX_ITEMS);
    uint32_t *out = pp_alloc(allocator, lines, sizeof *out);
    if (!out)
        return pp_fail(diag, PREPACK_ENOMEM, PREPACK_NO_RECORD,
                       "%s: out of memory for %zu lengths", name, lines);
    size_t pos = 0;
    for (size_t i = 0; i < lines; i++) {
        size_t end;
        size_t after = next_line(text, size, pos, &end);
        int rc = parse_line(text + pos, text + end, name, i + 1, &out[i], diag);
        if (rc != PREPACK_OK) {
            pp_free(allocator, out);
            return rc;
        }
        pos = after;
    }
    *lengths = out;
    *n = lines;
    return PREPACK_OK;
}
