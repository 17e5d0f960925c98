/* A minimal JSON writer: objects, strings, integers and doubles, indented
 * two spaces, keys in the order written (so output is stable). */
#include <math.h>

#include "cli.h"

static void newline_indent(json_writer *w)
{
    if (w->need_comma)
        fputc(',', w->out);
    if (w->depth > 0) {
        fputc('\n', w->out);
        for (int i = 0; i < w->depth; i++)
            fputs("  ", w->out);
    }
}

static void put_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void put_key(json_writer *w, const char *key)
{
    newline_indent(w);
    if (key) {
        put_string(w->out, key);
        fputs(": ", w->out);
    }
}

void json_begin_object(json_writer *w, const char *key)
{
    put_key(w, key);
    fputc('{', w->out);
    w->depth++;
    w->need_comma = 0;
}

static void close_container(json_writer *w, char bracket)
{
    w->depth--;
    fputc('\n', w->out);
    for (int i = 0; i < w->depth; i++)
        fputs("  ", w->out);
    fputc(bracket, w->out);
    w->need_comma = 1;
}

void json_end_object(json_writer *w)
{
    close_container(w, '}');
}

void json_begin_array(json_writer *w, const char *key)
{
    put_key(w, key);
    fputc('[', w->out);
    w->depth++;
    w->need_comma = 0;
}

void json_end_array(json_writer *w)
{
    close_container(w, ']');
}

void json_key_u64(json_writer *w, const char *key, uint64_t v)
{
    put_key(w, key);
    fprintf(w->out, "%llu", (unsigned long long)v);
    w->need_comma = 1;
}

void json_key_double(json_writer *w, const char *key, double v)
{
    put_key(w, key);
    if (!isfinite(v))
        fputs("null", w->out);
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        fprintf(w->out, "%.0f", v); /* integral costs print as integers */
    else
        fprintf(w->out, "%.9g", v);
    w->need_comma = 1;
}

void json_key_bool(json_writer *w, const char *key, int v)
{
    put_key(w, key);
    fputs(v ? "true" : "false", w->out);
    w->need_comma = 1;
}

void json_key_string(json_writer *w, const char *key, const char *v)
{
    put_key(w, key);
    put_string(w->out, v);
    w->need_comma = 1;
}

void json_key_i64s(json_writer *w, const char *key, const int64_t *v, size_t n)
{
    put_key(w, key);
    fputc('[', w->out);
    for (size_t i = 0; i < n; i++)
        fprintf(w->out, "%s%lld", i ? ", " : " ", (long long)v[i]);
    fputs(" ]", w->out);
    w->need_comma = 1;
}

void json_finish(json_writer *w)
{
    fputc('\n', w->out);
}
