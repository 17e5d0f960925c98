/* Planner benchmark: how long FFD, BFD and next-fit take on realistic
 * length mixes, how many rows they use against the lower bound, and how
 * much memory they hold at peak, with qsort of the same lengths timed in the
 * same run as the baseline, and a plain segment-tree first fit that only
 * counts rows (segtree; the /segtr column) as the bar FFD and BFD are held
 * to.
 *
 *   bench_plan [--scale F] [--runs N] [--fixtures DIR]
 *
 * (a) SFT-like: 10,000,000 log-normal lengths (median 450, sigma 1.0,
 *     capped at L) at L = 4096.
 * (b) pretraining-like: 16,000,000 lengths drawn from the BERT Wikipedia
 *     length histogram (fixtures/lengths/wikipedia_seq512_histogram.csv) at
 *     L = 512.
 * --scale multiplies the sizes (CI runs --scale 0.01). Times are medians. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "prepack.h"
#include "bench_util.h"

#ifndef PREPACK_FIXTURES_DIR
#define PREPACK_FIXTURES_DIR "fixtures"
#endif

/* ---- workloads ------------------------------------------------------------ */

static void lognormal_lengths(uint32_t *out, size_t n, double med, double sigma,
                              uint32_t cap, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        out[i] = lognormal_length(&seed, med, sigma, cap);
}

/* Reads `length,count` rows; returns the number of lengths (<= max). */
static size_t read_histogram(const char *path, uint32_t *len, double *count,
                             size_t max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[128];
    size_t k = 0;
    while (k < max && fgets(line, sizeof line, f)) {
        unsigned l;
        double c;
        if (sscanf(line, "%u,%lf", &l, &c) == 2 && c > 0) {
            len[k] = l;
            count[k++] = c;
        }
    }
    fclose(f);
    return k;
}

static int histogram_lengths(uint32_t *out, size_t n, const char *path,
                             uint64_t seed)
{
    enum { MAXH = 8192 };
    static uint32_t hl[MAXH];
    static double hc[MAXH];
    size_t k = read_histogram(path, hl, hc, MAXH);
    if (k == 0)
        return -1;
    for (size_t j = 1; j < k; j++)
        hc[j] += hc[j - 1]; /* cumulative */
    for (size_t i = 0; i < n; i++) {
        double u = uniform01(&seed) * hc[k - 1];
        size_t lo = 0, hi = k - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (hc[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        out[i] = hl[lo];
    }
    return 0;
}

/* ---- a peak-tracking allocator ---------------------------------------------- */

typedef struct peak_alloc {
    size_t live, peak;
} peak_alloc;

/* Each block carries its size in a 16-byte header. */
static void *pa_malloc(void *o, size_t size)
{
    peak_alloc *pa = o;
    size_t *p = malloc(size + 16);
    if (!p)
        return NULL;
    p[0] = size;
    pa->live += size;
    if (pa->live > pa->peak)
        pa->peak = pa->live;
    return (char *)p + 16;
}

static void pa_free(void *o, void *ptr)
{
    if (!ptr)
        return;
    peak_alloc *pa = o;
    size_t *p = (size_t *)((char *)ptr - 16);
    pa->live -= p[0];
    free(p);
}

static void *pa_realloc(void *o, void *ptr, size_t size)
{
    if (!ptr)
        return pa_malloc(o, size);
    peak_alloc *pa = o;
    size_t *p = (size_t *)((char *)ptr - 16);
    size_t old = p[0];
    size_t *q = realloc(p, size + 16);
    if (!q)
        return NULL;
    q[0] = size;
    pa->live = pa->live - old + size;
    if (pa->live > pa->peak)
        pa->peak = pa->live;
    return (char *)q + 16;
}

/* ---- timing ------------------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double time_qsort(const uint32_t *len, size_t n, int runs)
{
    uint32_t *copy = malloc(n * sizeof *copy);
    double t[32];
    for (int r = 0; r < runs; r++) {
        memcpy(copy, len, n * sizeof *copy);
        double t0 = now();
        qsort(copy, n, sizeof *copy, cmp_u32);
        t[r] = now() - t0;
    }
    free(copy);
    return median(t, runs);
}

/* The baseline the planner is held to: a plain first fit over a binary
 * max segment tree of rows' free space, items visited longest first
 * through counts per length, that only counts rows (no assignments, no
 * layout, no statistics). Returns the rows. */
static size_t segtree_first_fit(const uint32_t *len, size_t n, uint32_t L,
                                uint32_t *count, uint32_t *tree, size_t leaves)
{
    memset(count, 0, ((size_t)L + 1) * sizeof *count);
    for (size_t i = 0; i < n; i++)
        count[len[i]]++;
    for (size_t i = 0; i < 2 * leaves; i++)
        tree[i] = L; /* every row slot empty: free L */
    size_t rows = 0;
    for (uint32_t l = L; l >= 1; l--)
        for (uint32_t c = count[l]; c > 0; c--) {
            size_t i = 1; /* leftmost leaf with free >= l */
            while (i < leaves)
                i = tree[2 * i] >= l ? 2 * i : 2 * i + 1;
            size_t row = i - leaves;
            rows = row + 1 > rows ? row + 1 : rows;
            tree[i] -= l;
            for (i /= 2; i >= 1; i /= 2) {
                uint32_t a = tree[2 * i], b = tree[2 * i + 1];
                tree[i] = a > b ? a : b;
            }
        }
    return rows;
}

static double time_segtree(const uint32_t *len, size_t n, uint32_t L,
                           int runs, size_t *rows)
{
    size_t leaves = 1;
    while (leaves < n)
        leaves *= 2;
    uint32_t *count = malloc(((size_t)L + 1) * sizeof *count);
    uint32_t *tree = malloc(2 * leaves * sizeof *tree);
    double t[32];
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        *rows = segtree_first_fit(len, n, L, count, tree, leaves);
        t[r] = now() - t0;
    }
    free(count);
    free(tree);
    return median(t, runs);
}

static int bench_algo(const char *workload, const uint32_t *len, size_t n,
                      uint32_t L, prepack_algo algo, int runs, double qsort_s,
                      double segtree_s)
{
    double t[32];
    peak_alloc pa = {0, 0};
    prepack_allocator a = {pa_malloc, pa_realloc, pa_free, &pa};
    prepack_plan_stats s;
    for (int r = 0; r < runs; r++) {
        prepack_plan_options o = {
            .max_seq_len = L, .algo = algo, .allocator = &a};
        prepack_plan *p = NULL;
        double t0 = now();
        int rc = prepack_plan_create(&p, len, n, &o, NULL);
        t[r] = now() - t0;
        if (rc != PREPACK_OK) {
            fprintf(stderr, "plan failed: %s\n", prepack_strerror(rc));
            return 1;
        }
        prepack_plan_get_stats(p, &s);
        prepack_plan_free(p);
    }
    double med = median(t, runs);
    printf("%-10s %-8s %10zu %6u %9.3f %8.1f %6.2fx %6.2fx %10llu %10llu "
           "%+8.4f%% %8.2f %9.1f\n",
           workload, prepack_algo_name(algo), n, L, med, med * 1e9 / (double)n,
           med / qsort_s, med / segtree_s, (unsigned long long)s.rows,
           (unsigned long long)s.lower_bound,
           100.0 * ((double)s.rows - (double)s.lower_bound) /
               (double)s.lower_bound,
           (double)pa.peak / (double)n, (double)pa.peak / 1048576.0);
    return 0;
}

static int bench_workload(const char *name, const uint32_t *len, size_t n,
                          uint32_t L, int runs)
{
    double q = time_qsort(len, n, runs);
    size_t seg_rows = 0;
    double seg = time_segtree(len, n, L, runs, &seg_rows);
    printf("%-10s %-8s %10zu %6u %9.3f %8.1f %6.2fx\n", name, "qsort", n, L, q,
           q * 1e9 / (double)n, 1.0);
    printf("%-10s %-8s %10zu %6u %9.3f %8.1f %6.2fx %6.2fx %10zu\n", name,
           "segtree", n, L, seg, seg * 1e9 / (double)n, seg / q, 1.0,
           seg_rows);
    for (int algo = 0; algo < 3; algo++)
        if (bench_algo(name, len, n, L, (prepack_algo)algo, runs, q, seg))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    int runs = 5;
    const char *fixtures = PREPACK_FIXTURES_DIR;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fixtures") && i + 1 < argc)
            fixtures = argv[++i];
        else {
            fprintf(stderr, "usage: bench_plan [--scale F] [--runs N] "
                            "[--fixtures DIR]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 31 || !(scale > 0)) {
        fprintf(stderr, "bench_plan: --runs must be 1..31, --scale > 0\n");
        return 2;
    }
    size_t n_sft = (size_t)(10000000 * scale);
    size_t n_pre = (size_t)(16000000 * scale);
    uint32_t *len = malloc((n_pre > n_sft ? n_pre : n_sft) * sizeof *len);
    char path[4096];
    snprintf(path, sizeof path, "%s/lengths/wikipedia_seq512_histogram.csv",
             fixtures);

    printf("prepack %s planner benchmark: median of %d runs, one thread\n",
           prepack_version(), runs);
    printf("%-10s %-8s %10s %6s %9s %8s %7s %7s %10s %10s %9s %8s %9s\n",
           "workload", "algo", "n", "L", "median_s", "ns/seq", "/qsort",
           "/segtr", "rows", "lower_bd", "excess", "B/seq", "peak_MiB");
    lognormal_lengths(len, n_sft, 450, 1.0, 4096, 1);
    int rc = bench_workload("sft", len, n_sft, 4096, runs);
    if (rc == 0) {
        if (histogram_lengths(len, n_pre, path, 2) != 0) {
            fprintf(stderr, "bench_plan: cannot read %s\n", path);
            rc = 1;
        } else {
            rc = bench_workload("pretrain", len, n_pre, 512, runs);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("process max RSS %.1f MiB (includes the input lengths)\n",
           (double)ru.ru_maxrss / 1024.0);
    free(len);
    return rc;
}
