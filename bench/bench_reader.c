/* The C reader alone, in order, on a shard set: every row through
 * prepack_reader_row, then every row again in varlen batches through
 * prepack_reader_batch_into (int64 input_ids, position_ids and labels,
 * as PackedDataset's), each pass timed and the median of --runs passes
 * printed as ns a token and M tokens/s. What it measures is the library's
 * share of bench_python_reader.py's figures: decompression, checks, the
 * version 4 id-code decoding and the batch's arrays, with no Python.
 *
 *   bench_reader SET_DIR [--runs N] [--batch-rows B]
 *
 * Run it on two builds against the same set to compare readers. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepack.h"
#include "bench_util.h"

#define USAGE "usage: bench_reader SET_DIR [--runs N (1-100)] [--batch-rows B]\n"

typedef struct pass {
    double seconds;
    size_t tokens;
} pass;

static int read_rows(prepack_reader *r, pass *out, prepack_diag *d)
{
    size_t rows = prepack_reader_row_count(r);
    double t = now();
    out->tokens = 0;
    for (size_t i = 0; i < rows; i++) {
        prepack_row row;
        if (prepack_reader_row(r, i, &row, d) != PREPACK_OK)
            return -1;
        out->tokens += row.num_tokens;
    }
    out->seconds = now() - t;
    return 0;
}

/* The caller's arrays for batches of b rows of at most L tokens. */
typedef struct arrays {
    int64_t *tokens;
    int32_t *cu;
    uint64_t *seq;
    prepack_batch_arrays dst;
} arrays;

static int make_arrays(arrays *a, size_t b, size_t L)
{
    size_t cap = b * L;
    a->tokens = malloc(3 * cap * sizeof *a->tokens);
    a->cu = malloc((cap + 1) * sizeof *a->cu);
    a->seq = malloc(cap * sizeof *a->seq);
    memset(&a->dst, 0, sizeof a->dst);
    a->dst.input_ids = a->tokens;
    a->dst.position_ids = a->tokens + cap;
    a->dst.labels = a->tokens + 2 * cap;
    a->dst.cu_seqlens = a->cu;
    a->dst.seq_ids = a->seq;
    a->dst.tokens_cap = a->dst.seqs_cap = cap;
    return a->tokens && a->cu && a->seq ? 0 : -1;
}

static void free_arrays(arrays *a)
{
    free(a->tokens);
    free(a->cu);
    free(a->seq);
}

static int read_batches(prepack_reader *r, const arrays *a, size_t b,
                        pass *out, prepack_diag *d)
{
    size_t rows = prepack_reader_row_count(r);
    size_t *pick = malloc(b * sizeof *pick);
    if (!pick)
        return -1;
    prepack_batch_options o = {0};
    double t = now();
    out->tokens = 0;
    int rc = 0;
    for (size_t first = 0; rc == 0 && first < rows; first += b) {
        size_t n = 0;
        for (size_t i = first; i < rows && i < first + b; i++)
            pick[n++] = i;
        prepack_batch batch;
        rc = prepack_reader_batch_into(r, pick, n, &o, &a->dst, &batch, d);
        out->tokens += batch.width;
    }
    out->seconds = now() - t;
    free(pick);
    return rc == PREPACK_OK ? 0 : -1;
}

static void report(const char *what, double *seconds, int runs, size_t tokens)
{
    double s = median(seconds, runs);
    printf("%-22s %.4f s  %.2f ns/token  %.1f M tokens/s\n", what, s,
           s * 1e9 / (double)tokens, (double)tokens / s / 1e6);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int runs = 5;
    size_t b = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch-rows") && i + 1 < argc)
            b = (size_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--help")) {
            printf("%s", USAGE);
            return 0;
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "%s", USAGE);
            return 2;
        } else
            dir = argv[i];
    }
    if (!dir || runs < 1 || runs > 100 || b < 1) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    prepack_reader *r = NULL;
    prepack_diag d;
    if (prepack_reader_open(&r, dir, NULL, &d) != PREPACK_OK) {
        fprintf(stderr, "bench_reader: %s\n", d.message);
        return 1;
    }
    arrays a;
    double rows_s[100], batch_s[100];
    pass p = {0, 0}, q = {0, 0};
    int rc = make_arrays(&a, b, prepack_reader_max_seq_len(r));
    for (int k = 0; rc == 0 && k < runs; k++) {
        rc = read_rows(r, &p, &d) || read_batches(r, &a, b, &q, &d);
        rows_s[k] = p.seconds;
        batch_s[k] = q.seconds;
    }
    if (rc == 0) {
        printf("%zu rows, %zu tokens, medians of %d\n",
               prepack_reader_row_count(r), p.tokens, runs);
        report("rows in order", rows_s, runs, p.tokens);
        char what[64];
        snprintf(what, sizeof what, "batches of %zu rows", b);
        report(what, batch_s, runs, q.tokens);
    } else {
        fprintf(stderr, "bench_reader: %s\n", d.message);
    }
    free_arrays(&a);
    prepack_reader_free(r);
    return rc == 0 ? 0 : 1;
}
