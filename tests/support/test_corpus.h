/* A seeded random corpus in a token store, planned and reported, and its
 * rows written as a shard set: the fixture of the shard and fault tests.
 * The store allocates through a counting allocator (test_util.h), so a
 * test can fail its k-th allocation and see what is left. The store
 * lives in the test's scratch directory (test_tmpdir.h: define
 * _POSIX_C_SOURCE 200809L first). Header-only. */
#ifndef TEST_CORPUS_H
#define TEST_CORPUS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepack.h"
#include "test_tmpdir.h"
#include "test_util.h"

/* How each token's loss-mask bit is chosen. */
typedef enum test_mask {
    TEST_MASK_RANDOM,     /* drawn after each token, 0 or 1 */
    TEST_MASK_THIRD_ZERO, /* 0 at every third token of a sequence */
} test_mask;

typedef struct test_corpus_spec {
    size_t n;             /* sequences */
    uint32_t max_len;     /* lengths uniform in 1..max_len */
    uint32_t max_id;      /* token ids uniform in 0..max_id */
    uint64_t seed;        /* the generator's, and the shuffle's */
    uint32_t max_seq_len; /* L: planned with overlong split */
    int shuffle;          /* shuffle the rows */
    test_mask mask;
} test_corpus_spec;

typedef struct test_corpus {
    size_t n;
    uint32_t **seq; /* the sequences as made: seq[i][0..len[i]) */
    uint8_t **mask;
    uint32_t *len;
    counting_alloc ca; /* the store's allocator (and so the builder's) */
    prepack_allocator a;
    prepack_store *store;
    prepack_plan *plan;
    prepack_plan_options opts;
    prepack_report report;
} test_corpus;

/* Sequence i drawn from r: its length, then each token and mask bit. */
static inline int test_corpus_draw(test_corpus *c, const test_corpus_spec *s,
                                   rng *r, size_t i)
{
    uint32_t n = c->len[i] = rng_range(r, 1, s->max_len);
    c->seq[i] = malloc(n * sizeof(uint32_t));
    c->mask[i] = malloc(n);
    if (!c->seq[i] || !c->mask[i])
        return PREPACK_ENOMEM;
    for (uint32_t k = 0; k < n; k++) {
        c->seq[i][k] = rng_range(r, 0, s->max_id);
        c->mask[i][k] = s->mask == TEST_MASK_RANDOM
                            ? (uint8_t)rng_range(r, 0, 1)
                            : (uint8_t)(k % 3 != 0);
    }
    int rc = prepack_store_add(c->store, c->seq[i], n, c->mask[i], NULL);
    return rc == PREPACK_OK ? prepack_store_end_sequence(c->store, NULL) : rc;
}

/* Plans the stored lengths (overlong split) and computes the report. */
static inline int test_corpus_plan(test_corpus *c, const test_corpus_spec *s)
{
    c->opts.max_seq_len = s->max_seq_len;
    c->opts.overlong = PREPACK_OVERLONG_SPLIT;
    c->opts.shuffle_rows = s->shuffle;
    c->opts.shuffle_seed = s->shuffle ? s->seed : 0;
    const uint32_t *lengths = prepack_store_lengths(c->store);
    int rc = prepack_plan_create(&c->plan, lengths, c->n, &c->opts, NULL);
    return rc == PREPACK_OK
               ? prepack_report_compute(c->plan, lengths, c->n, 0, &c->report)
               : rc;
}

/* Makes the corpus s describes; PREPACK_OK or the first error (free it
 * with test_corpus_free either way). */
static inline int test_corpus_make(test_corpus *c, const test_corpus_spec *s)
{
    memset(c, 0, sizeof *c);
    c->n = s->n;
    c->ca.fail_at = SIZE_MAX;
    c->a = counting_allocator(&c->ca);
    c->seq = calloc(s->n, sizeof *c->seq);
    c->mask = calloc(s->n, sizeof *c->mask);
    c->len = calloc(s->n, sizeof *c->len);
    if (!c->seq || !c->mask || !c->len)
        return PREPACK_ENOMEM;
    prepack_store_options so = {.tmp_dir = test_tmpdir, .allocator = &c->a};
    int rc = prepack_store_create(&c->store, &so, NULL);
    rng r = {s->seed};
    for (size_t i = 0; rc == PREPACK_OK && i < s->n; i++)
        rc = test_corpus_draw(c, s, &r, i);
    if (rc == PREPACK_OK)
        rc = prepack_store_finish(c->store, NULL);
    return rc == PREPACK_OK ? test_corpus_plan(c, s) : rc;
}

/* Frees what test_corpus_make made; c->ca then counts what the store
 * leaked (0 live blocks). */
static inline void test_corpus_free(test_corpus *c)
{
    for (size_t i = 0; i < c->n && c->seq && c->mask; i++) {
        free(c->seq[i]);
        free(c->mask[i]);
    }
    free(c->seq);
    free(c->mask);
    free(c->len);
    prepack_plan_free(c->plan);
    prepack_store_free(c->store);
    c->seq = NULL;
    c->mask = NULL;
    c->len = NULL;
    c->plan = NULL;
    c->store = NULL;
}

/* Writes every row of the plan to dir as a shard set, its report in the
 * manifest; bytes (may be NULL) gets the set's size. Returns PREPACK_OK or
 * the first error, with d filled; frees the writer either way, so an
 * error leaves whatever an abandoned writer leaves. */
static inline int test_corpus_write(const test_corpus *c, const char *dir,
                                    const prepack_writer_options *wo,
                                    uint64_t *bytes, prepack_diag *d)
{
    prepack_writer *w = NULL;
    prepack_row_builder *b = NULL;
    int rc = prepack_writer_create(&w, dir, c->opts.max_seq_len,
                                   prepack_store_dtype(c->store), wo, d);
    if (rc == PREPACK_OK)
        rc = prepack_row_builder_create(&b, c->plan, c->store, d);
    for (size_t r = 0; rc == PREPACK_OK && r < prepack_plan_row_count(c->plan);
         r++) {
        prepack_row row;
        rc = prepack_row_builder_get(b, r, &row);
        if (rc == PREPACK_OK)
            rc = prepack_writer_add(w, &row, d);
    }
    prepack_manifest_info info = {&c->opts, c->store, &c->report};
    if (rc == PREPACK_OK)
        rc = prepack_writer_finish(w, &info, d);
    if (rc == PREPACK_OK && bytes)
        *bytes = prepack_writer_bytes(w);
    prepack_writer_free(w);
    prepack_row_builder_free(b);
    return rc;
}

/* Whether two files hold the same bytes (both readable). */
static inline int test_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int x = fgetc(fa), y = fgetc(fb);
        same = x == y;
        if (x == EOF || y == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

#endif
