/* The stream packer against offline FFD: rows (and the ratio to FFD's)
 * for windows from 1 (next-fit) to 4096 open rows and lookaheads from 0
 * to 10,000 items, on the real length sets and the bundled corpus, and
 * the packer's speed in sequences per second (lengths only: planning).
 *
 *   bench_stream [--fixtures DIR] [--max-items N] [--svg FILE] [--small]
 *
 * Histograms are expanded and shuffled with a fixed seed (a stream in no
 * particular order); Wikipedia's 16 M are sampled down to --max-items
 * (default 1,000,000) so the widest windows stay quick. --small: three
 * windows, one lookahead, 20,000 items a set (CI). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepack.h"
#include "bench_util.h"

#ifndef PREPACK_FIXTURES_DIR
#define PREPACK_FIXTURES_DIR "fixtures"
#endif

typedef struct lengths_set {
    const char *name;
    uint32_t L;
    prepack_overlong overlong;
    uint32_t *len;
    size_t n;
} lengths_set;

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *size = fread(buf, 1, (size_t)n, f);
    buf[*size] = 0;
    fclose(f);
    return buf;
}

static void shuffle(uint32_t *v, size_t n, uint64_t seed)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(splitmix64(&seed) % i);
        uint32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* `length,count` lines expanded (counts scaled so at most max items),
 * shuffled. */
static int load_histogram(lengths_set *s, const char *path, size_t max)
{
    size_t size;
    char *text = read_file(path, &size);
    if (!text)
        return -1;
    double total = 0;
    for (char *p = text; *p;) {
        unsigned l;
        double c;
        if (sscanf(p, "%u,%lf", &l, &c) == 2)
            total += c;
        p = strchr(p, '\n');
        p = p ? p + 1 : text + size;
    }
    double scale = total > (double)max ? (double)max / total : 1.0;
    s->len = malloc((max + 1024) * sizeof *s->len);
    s->n = 0;
    for (char *p = text; *p;) {
        unsigned l;
        double c;
        if (sscanf(p, "%u,%lf", &l, &c) == 2 && l > 0)
            for (size_t k = (size_t)(c * scale + 0.5); k > 0 && s->n < max;
                 k--)
                s->len[s->n++] = l;
        p = strchr(p, '\n');
        p = p ? p + 1 : text + size;
    }
    free(text);
    shuffle(s->len, s->n, 7);
    return 0;
}

static int load_lines(lengths_set *s, const char *path, size_t max)
{
    size_t size;
    char *text = read_file(path, &size);
    if (!text)
        return -1;
    prepack_diag d = {0};
    int rc = prepack_lengths_parse(text, size, path, &s->len, &s->n, NULL, &d);
    free(text);
    if (rc != PREPACK_OK)
        return -1;
    if (s->n > max)
        s->n = max;
    return 0;
}

static int load_corpus(lengths_set *s, const char *path, size_t max)
{
    prepack_store_options so = {.lengths_only = 1};
    prepack_store *st = NULL;
    if (prepack_store_create(&st, &so, NULL) != PREPACK_OK ||
        prepack_ingest_file(st, path, NULL, NULL) != PREPACK_OK ||
        prepack_store_finish(st, NULL) != PREPACK_OK)
        return -1;
    s->n = prepack_store_sequence_count(st);
    s->n = s->n > max ? max : s->n;
    s->len = malloc((s->n + 1) * sizeof *s->len);
    memcpy(s->len, prepack_store_lengths(st), s->n * sizeof *s->len);
    prepack_store_free(st);
    return 0;
}

static size_t offline_rows(const lengths_set *s)
{
    prepack_plan_options o = {.max_seq_len = s->L, .overlong = s->overlong};
    prepack_plan *p = NULL;
    if (prepack_plan_create(&p, s->len, s->n, &o, NULL) != PREPACK_OK)
        return 0;
    size_t rows = prepack_plan_row_count(p);
    prepack_plan_free(p);
    return rows;
}

/* Rows of the stream packer, and its time. */
static size_t stream_rows(const lengths_set *s, uint32_t window,
                          uint32_t lookahead, double *seconds)
{
    prepack_stream_options o = {.max_seq_len = s->L,
                                .window = window,
                                .lookahead = lookahead,
                                .overlong = s->overlong};
    prepack_stream *st = NULL;
    if (prepack_stream_create(&st, &o, NULL) != PREPACK_OK)
        return 0;
    double t0 = now();
    prepack_row row;
    for (size_t i = 0; i < s->n; i++) {
        prepack_stream_push(st, i, NULL, NULL, s->len[i], NULL);
        while (prepack_stream_pop(st, &row))
            ;
    }
    prepack_stream_flush(st, NULL);
    while (prepack_stream_pop(st, &row))
        ;
    *seconds = now() - t0;
    prepack_stream_stats stats;
    prepack_stream_get_stats(st, &stats);
    prepack_stream_free(st);
    return (size_t)stats.rows;
}

#define MAX_W 8
#define MAX_SETS 5

static void write_svg(const char *path, const lengths_set *sets, int nsets,
                      const uint32_t *windows, int nw,
                      double ratio[MAX_SETS][MAX_W])
{
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    const int W = 520, H = 300, x0 = 60, y0 = 20, pw = 420, ph = 230;
    double top = 1.0;
    for (int s = 0; s < nsets; s++)
        for (int k = 0; k < nw; k++)
            top = ratio[s][k] > top ? ratio[s][k] : top;
    top = top < 1.05 ? 1.05 : top;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H);
    static const char *colors[MAX_SETS] = {"#1f77b4", "#ff7f0e", "#2ca02c",
                                           "#d62728", "#9467bd"};
    double ys[] = {1.0, 1.01, 1.05, 1.1, 1.2, 1.3};
    for (size_t i = 0; i < sizeof ys / sizeof *ys && ys[i] <= top; i++) {
        double y = y0 + ph - (ys[i] - 1.0) / (top - 1.0) * ph;
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" "
                "stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" "
                "text-anchor=\"end\">%.2fx</text>\n",
                x0, y, x0 + pw, y, x0 - 4, y + 4, ys[i]);
    }
    for (int k = 0; k < nw; k++) {
        double x = x0 + (double)k / (nw - 1) * pw;
        fprintf(f,
                "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%u</text>\n",
                x, y0 + ph + 15, windows[k]);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">window (open "
            "rows), lookahead 100</text>\n"
            "<text x=\"12\" y=\"%d\" transform=\"rotate(-90 12 %d)\" "
            "text-anchor=\"middle\">rows / offline FFD</text>\n",
            x0 + pw / 2, H - 5, y0 + ph / 2, y0 + ph / 2);
    for (int s = 0; s < nsets; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                   "points=\"",
                colors[s]);
        for (int k = 0; k < nw; k++)
            fprintf(f, "%.1f,%.1f ", x0 + (double)k / (nw - 1) * pw,
                    y0 + ph - (ratio[s][k] - 1.0) / (top - 1.0) * ph);
        fprintf(f, "\"/>\n<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n",
                x0 + pw - 120, y0 + 14 + 13 * s, colors[s], sets[s].name);
    }
    fputs("</svg>\n", f);
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *fixtures = PREPACK_FIXTURES_DIR, *svg = NULL;
    size_t max = 1000000;
    int small = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fixtures") && i + 1 < argc)
            fixtures = argv[++i];
        else if (!strcmp(argv[i], "--max-items") && i + 1 < argc)
            max = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--svg") && i + 1 < argc)
            svg = argv[++i];
        else if (!strcmp(argv[i], "--small"))
            small = 1;
        else {
            fprintf(stderr, "usage: bench_stream [--fixtures DIR] "
                            "[--max-items N] [--svg FILE] [--small]\n");
            return 2;
        }
    }
    if (small)
        max = 20000;
    char path[4096];
    lengths_set sets[MAX_SETS] = {
        {"wikipedia", 512, PREPACK_OVERLONG_TRUNCATE, NULL, 0},
        {"squad", 384, PREPACK_OVERLONG_TRUNCATE, NULL, 0},
        {"openchat", 2048, PREPACK_OVERLONG_TRUNCATE, NULL, 0},
        {"sharegpt", 2048, PREPACK_OVERLONG_TRUNCATE, NULL, 0},
        {"corpus", 4096, PREPACK_OVERLONG_SPLIT, NULL, 0}};
    const char *files[MAX_SETS] = {
        "lengths/wikipedia_seq512_histogram.csv",
        "lengths/squad_1_1_seq384_histogram.csv",
        "lengths/openchat_v1_multipack_testdata_lengths.txt",
        "lengths/sharegpt_opt_first_turn_total_lengths.txt",
        "corpus/python-docs.jsonl.zst"};
    for (int s = 0; s < MAX_SETS; s++) {
        snprintf(path, sizeof path, "%s/%s", fixtures, files[s]);
        int rc = s < 2 ? load_histogram(&sets[s], path, max)
                 : s < 4 ? load_lines(&sets[s], path, max)
                         : load_corpus(&sets[s], path, max);
        if (rc != 0) {
            fprintf(stderr, "bench_stream: cannot read %s\n", path);
            return 1;
        }
    }
    static const uint32_t all_w[MAX_W] = {1, 4, 16, 64, 256, 512, 1024, 4096};
    static const uint32_t small_w[3] = {1, 64, 256};
    static const uint32_t all_k[4] = {0, 100, 1000, 10000};
    const uint32_t *windows = small ? small_w : all_w;
    int nw = small ? 3 : MAX_W, nk = small ? 1 : 4;
    double ratio[MAX_SETS][MAX_W];
    printf("prepack %s stream packer against offline FFD (lengths only)\n",
           prepack_version());
    printf("%-10s %9s %5s %7s %9s %10s %10s %9s %12s\n", "set", "sequences",
           "L", "window", "lookahead", "rows", "ffd_rows", "/ffd", "seqs/s");
    for (int s = 0; s < MAX_SETS; s++) {
        size_t ffd = offline_rows(&sets[s]);
        for (int k = 0; k < nk; k++)
            for (int w = 0; w < nw; w++) {
                double t = 0;
                size_t rows = stream_rows(&sets[s], windows[w], all_k[k], &t);
                double r = ffd ? (double)rows / (double)ffd : 0;
                if (all_k[k] == (small ? 0u : 100u)) /* the curve drawn */
                    ratio[s][w] = r;
                printf("%-10s %9zu %5u %7u %9u %10zu %10zu %8.4fx %12.0f\n",
                       sets[s].name, sets[s].n, sets[s].L, windows[w],
                       all_k[k], rows, ffd, r, t > 0 ? (double)sets[s].n / t : 0);
            }
    }
    if (svg)
        write_svg(svg, sets, MAX_SETS, windows, nw, ratio);
    for (int s = 0; s < MAX_SETS; s++)
        free(sets[s].len);
    return 0;
}
