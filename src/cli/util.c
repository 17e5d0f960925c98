/* Small helpers of the prepack command: errors, numbers, files, clocks. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "prepack %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'prepack %s --help'.\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int data_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("prepack: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_DATA;
}

int library_error(int rc, const prepack_diag *d)
{
    return data_error("%s",
                      d && d->message[0] ? d->message : prepack_strerror(rc));
}

const char *dir_path(const char *dir, char *buf, size_t cap)
{
    size_t n = 0, last = 0;
    const char *p = dir;
    if (*p == '/' && cap > 1)
        buf[n++] = '/';
    while (*p) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0 || (len == 1 && p[0] == '.')) {
            p += len;
            continue;
        }
        size_t sep = n > 0 && buf[n - 1] != '/';
        if (n + sep + len + 1 >= cap)
            return NULL;
        if (sep)
            buf[n++] = '/';
        last = n;
        memcpy(buf + n, p, len);
        n += len;
        p += len;
    }
    if (n == 0)
        buf[n++] = '.';
    buf[n] = 0;
    return strcmp(buf + last, "..") ? buf : NULL;
}

int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int read_stream(FILE *f, char **data, size_t *size)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    for (;;) {
        if (len == cap) {
            char *bigger = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                errno = ENOMEM;
                return -1;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return -1;
    }
    *data = buf;
    *size = len;
    return 0;
}

int read_whole_file(const char *path, char **data, size_t *size)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return data_error("cannot open %s: %s", path, strerror(errno));
    int rc = read_stream(f, data, size);
    int saved = errno;
    if (!is_stdin)
        fclose(f);
    if (rc != 0)
        return data_error("cannot read %s: %s", is_stdin ? "stdin" : path,
                          strerror(saved));
    return EXIT_OK;
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *fmt_count(char *buf, uint64_t n)
{
    char digits[24];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    int out = 0;
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            buf[out++] = ',';
        buf[out++] = digits[i];
    }
    buf[out] = '\0';
    return buf;
}

void progress_init(progress *p, int quiet)
{
    memset(p, 0, sizeof *p);
    p->enabled = !quiet && isatty(STDERR_FILENO);
    p->begin = p->start = p->last = now_seconds();
}

static void human(char *buf, size_t cap, double v)
{
    const char *unit[] = {"", "k", "M", "G", "T"};
    int u = 0;
    while (v >= 1000 && u < 4) {
        v /= 1000;
        u++;
    }
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f%s", v, unit[u]);
}

void progress_update(void *opaque, const char *stage, uint64_t done,
                     uint64_t total)
{
    progress *p = opaque;
    double t = now_seconds();
    if (!p || !p->enabled)
        return;
    if (!p->stage || strcmp(p->stage, stage) != 0) { /* a new stage */
        p->stage = stage;
        p->start = t;
    }
    if (t - p->last < 0.2 && done < total)
        return;
    p->last = t;
    double rate = t > p->start ? (double)done / (t - p->start) : 0;
    char d[32], n[32], r[32];
    human(d, sizeof d, (double)done);
    human(n, sizeof n, (double)total);
    human(r, sizeof r, rate);
    const char *unit = strcmp(stage, "ingest") == 0 ? "B" : " rows";
    fprintf(stderr, "\r\033[K%-7s %5.1f%%  %s%s / %s%s  %s%s/s", stage,
            total ? 100.0 * (double)done / (double)total : 100.0, d, unit, n,
            unit, r, unit);
    if (rate > 0 && total > done)
        fprintf(stderr, "  ETA %.0f s", (double)(total - done) / rate);
    fflush(stderr);
}

void progress_done(progress *p, const char *summary)
{
    if (!p || !p->enabled)
        return;
    fprintf(stderr, "\r\033[K%s (%.2f s)\n", summary, now_seconds() - p->begin);
}

/* rchar/wchar of /proc/self/io: the bytes this process read and wrote
 * (page cache included), for the bench and for --json. */
void io_counters(uint64_t *rchar, uint64_t *wchar)
{
    *rchar = *wchar = 0;
    FILE *f = fopen("/proc/self/io", "r");
    if (!f)
        return;
    char key[64];
    unsigned long long v;
    while (fscanf(f, "%63[^:]: %llu\n", key, &v) == 2) {
        if (!strcmp(key, "rchar"))
            *rchar = v;
        else if (!strcmp(key, "wchar"))
            *wchar = v;
    }
    fclose(f);
}

