/* Faults: every allocation failing in turn in the row builder, the writer
 * and the reader; a file size limit hit mid-write (the disk-full path);
 * hostile sizes (lengths near 2^32, max_seq_len 1 and 2^31 - 1, no
 * sequences, 10^8 empty ones, token ids at 2^32 - 1). Each must end in a
 * defined result or a clear error, with nothing leaked and no manifest over
 * a set that was not finished. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_corpus.h"
#include "test_tmpdir.h"
#include "test_util.h"

/* ---- a small corpus, planned (tests/support/test_corpus.h) ------------ */

enum { N = 120, L = 40 };

typedef test_corpus corpus;

static void make_corpus(corpus *c, uint32_t max_id)
{
    test_corpus_spec s = {.n = N,
                          .max_len = 100,
                          .max_id = max_id,
                          .seed = 11,
                          .max_seq_len = L,
                          .mask = TEST_MASK_THIRD_ZERO};
    assert_int_equal(test_corpus_make(c, &s), PREPACK_OK);
}

static void free_corpus(corpus *c)
{
    test_corpus_free(c);
    assert_int_equal(c->ca.live, 0);
}

/* Names in dir (files other than . and ..), or -1 when it cannot be read. */
static int count_files(const char *dir, const char *containing)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' &&
            (!containing || strstr(e->d_name, containing)))
            n++;
    closedir(d);
    return n;
}

/* Writes the corpus's rows to dir with the given writer options; returns
 * the first error (diag filled) or PREPACK_OK. Frees the writer either
 * way, so an error leaves whatever an abandoned writer leaves. */
static int write_rows(corpus *c, const char *dir, prepack_writer_options wo,
                      prepack_diag *d)
{
    return test_corpus_write(c, dir, &wo, NULL, d);
}

/* ---- allocation failure ------------------------------------------------------ */

/* The row builder allocates through the store's allocator: fail each of
 * its allocations in turn (creation and every row). */
static void test_row_builder_allocation_failures(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 70000);
    size_t base = c.ca.live, k;
    for (k = 0;; k++) {
        c.ca.fail_at = c.ca.calls + k;
        prepack_row_builder *b = NULL;
        prepack_diag d = {0};
        int rc = prepack_row_builder_create(&b, c.plan, c.store, &d);
        for (size_t r = 0;
             rc == PREPACK_OK && r < prepack_plan_row_count(c.plan); r++) {
            prepack_row row;
            rc = prepack_row_builder_get(b, r, &row);
        }
        prepack_row_builder_free(b);
        assert_int_equal(c.ca.live, base);
        if (rc == PREPACK_OK)
            break;
        assert_int_equal(rc, PREPACK_ENOMEM);
    }
    assert_true(k > 0);
    print_message("row builder: %zu allocations failed in turn\n", k);
    c.ca.fail_at = SIZE_MAX;
    free_corpus(&c);
}

/* One attempt at some work with the allocator given: PREPACK_OK, or the
 * first error with d filled. */
typedef int (*attempt_fn)(void *ctx, const prepack_allocator *a,
                          prepack_diag *d);

/* Runs attempt with allocation 0, 1, 2, ... failing: each run must give
 * PREPACK_ENOMEM and leave nothing allocated (and then pass after_failure,
 * when given), until one succeeds. Returns how many runs failed. */
static size_t fail_each_allocation(attempt_fn attempt, void *ctx,
                                   void (*after_failure)(void *ctx))
{
    for (size_t k = 0;; k++) {
        counting_alloc ca = {0, k, 0};
        prepack_allocator a = counting_allocator(&ca);
        prepack_diag d = {0};
        int rc = attempt(ctx, &a, &d);
        assert_int_equal(ca.live, 0);
        if (rc == PREPACK_OK)
            return k;
        if (rc != PREPACK_ENOMEM)
            fail_msg("allocation %zu failing gave %s: %s", k,
                     prepack_strerror(rc), d.message);
        if (after_failure)
            after_failure(ctx);
    }
}

typedef struct writer_sweep {
    corpus *c;
    const char *dir;
    prepack_writer_options wo;
} writer_sweep;

static int write_with(void *ctx, const prepack_allocator *a, prepack_diag *d)
{
    writer_sweep *w = ctx;
    w->wo.allocator = a;
    return write_rows(w->c, w->dir, w->wo, d);
}

static void nothing_left(void *ctx)
{
    writer_sweep *w = ctx;
    assert_int_equal(count_files(w->dir, NULL), 0);
}

/* The writer: each allocation (its buffers, the compressor pool, zstd's
 * context) fails in turn. Each failure is ENOMEM, leaks nothing and leaves
 * no manifest and no temporary shard; once nothing fails, the set is byte
 * for byte the one written with the C library's allocator. */
static void test_writer_allocation_failures(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 60000);
    prepack_writer_options wo = {
        .rows_per_frame = 4, .shard_rows = 12, .overwrite = 1};
    const char *ref = path_of("writer-ref");
    prepack_diag d = {0};
    assert_int_equal(write_rows(&c, ref, wo, &d), PREPACK_OK);
    writer_sweep w = {&c, path_of("writer-sweep"), wo};
    const char *dir = w.dir;
    size_t k = fail_each_allocation(write_with, &w, nothing_left);
    assert_true(k > 5);
    print_message("writer: %zu allocations failed in turn\n", k);
    int files = count_files(ref, NULL);
    assert_int_equal(count_files(dir, NULL), files);
    DIR *dd = opendir(ref);
    struct dirent *e;
    while ((e = readdir(dd)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char x[700], y[700];
        snprintf(x, sizeof x, "%s/%s", ref, e->d_name);
        snprintf(y, sizeof y, "%s/%s", dir, e->d_name);
        if (!test_same_file(x, y))
            fail_msg("%s differs after the allocation sweep", e->d_name);
    }
    closedir(dd);
    free_corpus(&c);
}

/* Everything a reader does, with the allocator given: open, every row,
 * flat and padded batches with the dense mask, verify. */
static int read_everything(const char *dir, const prepack_allocator *a,
                           size_t rows, prepack_diag *d)
{
    prepack_reader_options ro = {.allocator = a};
    prepack_reader *r = NULL;
    int rc = prepack_reader_open(&r, dir, &ro, d);
    for (size_t i = 0; rc == PREPACK_OK && i < rows; i++) {
        prepack_row row;
        rc = prepack_reader_row(r, (i * 7) % rows, &row, d);
    }
    size_t pick[5] = {0, rows - 1, 3, 9, rows / 2};
    prepack_batch b;
    prepack_batch_options flat = {0}, padded = {.padded = 1, .dense_mask = 1};
    if (rc == PREPACK_OK)
        rc = prepack_reader_batch(r, pick, 5, &flat, &b, d);
    if (rc == PREPACK_OK)
        rc = prepack_reader_batch(r, pick, 5, &padded, &b, d);
    if (rc == PREPACK_OK && prepack_reader_verify(r, NULL, NULL) != 0)
        rc = PREPACK_ENOMEM; /* a clean set: only memory can fail it */
    prepack_reader_free(r);
    return rc;
}

typedef struct reader_sweep {
    const char *dir;
    size_t rows;
} reader_sweep;

static int read_with(void *ctx, const prepack_allocator *a, prepack_diag *d)
{
    reader_sweep *r = ctx;
    return read_everything(r->dir, a, r->rows, d);
}

static void test_reader_allocation_failures(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 60000);
    prepack_writer_options wo = {.rows_per_frame = 4, .shard_rows = 12};
    const char *dir = path_of("reader-sweep");
    prepack_diag d = {0};
    assert_int_equal(write_rows(&c, dir, wo, &d), PREPACK_OK);
    reader_sweep rs = {dir, prepack_plan_row_count(c.plan)};
    assert_true(rs.rows > 10);
    size_t k = fail_each_allocation(read_with, &rs, NULL);
    assert_true(k > 5);
    print_message("reader: %zu allocations failed in turn\n", k);
    free_corpus(&c);
}

/* Every call that takes an allocator refuses one missing a function. */
static void test_incomplete_allocator(void **state)
{
    (void)state;
    counting_alloc ca = {0, SIZE_MAX, 0};
    prepack_allocator a = counting_allocator(&ca);
    a.realloc_fn = NULL;
    prepack_diag d = {0};
    prepack_store *st = NULL;
    prepack_store_options so = {.allocator = &a};
    assert_int_equal(prepack_store_create(&st, &so, &d), PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "allocator"));
    prepack_writer *w = NULL;
    prepack_writer_options wo = {.allocator = &a};
    assert_int_equal(prepack_writer_create(&w, path_of("incomplete"), 8,
                                           PREPACK_DTYPE_UINT16, &wo, &d),
                     PREPACK_EINVAL);
    prepack_reader *r = NULL;
    prepack_reader_options ro = {.allocator = &a};
    assert_int_equal(prepack_reader_open(&r, test_tmpdir, &ro, &d),
                     PREPACK_EINVAL);
    uint32_t *len = NULL;
    size_t n = 0;
    assert_int_equal(prepack_lengths_parse("1\n", 2, "x", &len, &n, &a, &d),
                     PREPACK_EINVAL);
    prepack_plan *p = NULL;
    uint32_t one = 1;
    prepack_plan_options po = {.max_seq_len = 4, .allocator = &a};
    assert_int_equal(prepack_plan_create(&p, &one, 1, &po, &d), PREPACK_EINVAL);
    assert_int_equal(ca.calls, 0);
}

/* ---- a full disk ------------------------------------------------------------ */

/* RLIMIT_FSIZE stands in for a full disk (the write fails with EFBIG, as
 * it would with ENOSPC; SIGXFSZ is ignored, else it kills the process):
 * a clear error naming the shard, no manifest, no temporary file. */
static void test_file_size_limit(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 60000);
    const char *dir = path_of("full");
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    for (rlim_t cap = 100; cap <= 1200; cap += 550) {
        lim = old;
        lim.rlim_cur = cap;
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
        prepack_writer_options wo = {
            .rows_per_frame = 2, .shard_rows = 20, .overwrite = 1, .level = 1};
        prepack_diag d = {0};
        int rc = write_rows(&c, dir, wo, &d);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
        assert_int_equal(rc, PREPACK_EIO);
        assert_non_null(strstr(d.message, "shard-"));
        assert_non_null(strstr(d.message, strerror(EFBIG)));
        assert_int_equal(count_files(dir, NULL), 0); /* nothing left */
    }
    signal(SIGXFSZ, was);
    free_corpus(&c);
}

/* ---- hostile sizes -------------------------------------------------------- */

static void test_max_seq_len_limits(void **state)
{
    (void)state;
    uint32_t len[3] = {1, 2, 3};
    prepack_plan *p = NULL;
    prepack_diag d = {0};
    uint32_t bad[3] = {0, PREPACK_MAX_SEQ_LEN_LIMIT + 1, 0x7FFFFFFFu};
    for (int i = 0; i < 3; i++) {
        prepack_plan_options o = {.max_seq_len = bad[i]};
        assert_int_equal(prepack_plan_create(&p, len, 3, &o, &d),
                         PREPACK_EINVAL);
        assert_null(p);
        assert_non_null(strstr(d.message, "max_seq_len"));
    }
    /* L = 1: one token per row */
    prepack_plan_options one = {.max_seq_len = 1,
                                .overlong = PREPACK_OVERLONG_SPLIT};
    assert_int_equal(prepack_plan_create(&p, len, 3, &one, &d), PREPACK_OK);
    assert_int_equal(prepack_plan_row_count(p), 6);
    for (size_t r = 0; r < 6; r++)
        assert_int_equal(prepack_plan_row_tokens(p, r), 1);
    prepack_plan_free(p);
    /* the largest L: a writer takes it (the msgpack bin stays < 2^32) */
    prepack_writer *w = NULL;
    prepack_writer_options wo = {0};
    assert_int_equal(prepack_writer_create(&w, path_of("bigL"),
                                           PREPACK_MAX_SEQ_LEN_LIMIT,
                                           PREPACK_DTYPE_UINT32, &wo, &d),
                     PREPACK_OK);
    prepack_writer_free(w);
    assert_int_equal(prepack_writer_create(&w, path_of("hugeL"), 0x7FFFFFFFu,
                                           PREPACK_DTYPE_UINT32, &wo, &d),
                     PREPACK_ERANGE);
    assert_null(w);
}

/* Lengths near 2^32: split into chunks, tokens counted in 64 bits. */
static void test_lengths_near_2_to_32(void **state)
{
    (void)state;
    uint32_t len[4] = {0x7FFFFFFFu, 0x80000000u, UINT32_MAX, 5};
    uint32_t Lbig = PREPACK_MAX_SEQ_LEN_LIMIT;
    prepack_plan_options o = {.max_seq_len = Lbig,
                              .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_plan *p = NULL;
    assert_int_equal(prepack_plan_create(&p, len, 4, &o, NULL), PREPACK_OK);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    uint64_t total = 0x7FFFFFFFull + 0x80000000ull + UINT32_MAX + 5;
    assert_true(s.tokens == total);
    assert_true(s.input_tokens == total);
    assert_int_equal(prepack_plan_row_count(p), (total + Lbig - 1) / Lbig);
    prepack_report rep;
    assert_int_equal(prepack_report_compute(p, len, 4, 0, &rep), PREPACK_OK);
    assert_true(rep.packed.slots >= total);
    prepack_plan_free(p);
    o.overlong = PREPACK_OVERLONG_TRUNCATE;
    assert_int_equal(prepack_plan_create(&p, len, 4, &o, NULL), PREPACK_OK);
    prepack_plan_get_stats(p, &s);
    assert_true(s.tokens == 3ull * Lbig + 5);
    prepack_plan_free(p);
    prepack_diag d = {0};
    o.overlong = PREPACK_OVERLONG_ERROR;
    assert_int_equal(prepack_plan_create(&p, len, 4, &o, &d),
                     PREPACK_EOVERLONG);
    assert_int_equal(d.record, 0);
}

/* No sequences at all: an empty plan, an empty set that reads back. */
static void test_no_sequences(void **state)
{
    (void)state;
    prepack_store *st = NULL;
    prepack_store_options so = {.tmp_dir = test_tmpdir};
    assert_int_equal(prepack_store_create(&st, &so, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_finish(st, NULL), PREPACK_OK);
    prepack_plan_options o = {.max_seq_len = 8};
    prepack_plan *p = NULL;
    assert_int_equal(
        prepack_plan_create(&p, prepack_store_lengths(st), 0, &o, NULL),
        PREPACK_OK);
    assert_int_equal(prepack_plan_row_count(p), 0);
    prepack_report rep;
    assert_int_equal(prepack_report_compute(p, NULL, 0, 0, &rep), PREPACK_OK);
    assert_true(rep.plan.efficiency == 0.0);
    prepack_writer *w = NULL;
    prepack_writer_options wo = {0};
    const char *dir = path_of("empty-set");
    assert_int_equal(
        prepack_writer_create(&w, dir, 8, PREPACK_DTYPE_UINT16, &wo, NULL),
        PREPACK_OK);
    prepack_manifest_info info = {&o, st, &rep};
    assert_int_equal(prepack_writer_finish(w, &info, NULL), PREPACK_OK);
    prepack_writer_free(w);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, dir, NULL, NULL), PREPACK_OK);
    assert_int_equal(prepack_reader_row_count(r), 0);
    assert_int_equal(prepack_reader_verify(r, NULL, NULL), 0);
    prepack_batch b;
    assert_int_equal(prepack_reader_batch(r, NULL, 0, NULL, &b, NULL),
                     PREPACK_OK);
    assert_int_equal(b.rows, 0);
    prepack_reader_free(r);
    prepack_plan_free(p);
    prepack_store_free(st);
}

/* 10^8 empty sequences: counted, skipped, no rows, in bounded memory. */
static void test_many_empty_sequences(void **state)
{
    (void)state;
    size_t n = 100000000;
    uint32_t *len = calloc(n, sizeof *len);
    if (!len)
        skip();
    len[n - 1] = 3;
    prepack_plan_options o = {.max_seq_len = 4};
    prepack_plan *p = NULL;
    assert_int_equal(prepack_plan_create(&p, len, n, &o, NULL), PREPACK_OK);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    assert_true(s.zero_length == n - 1);
    assert_int_equal(prepack_plan_row_count(p), 1);
    prepack_item it = prepack_plan_item(p, 0, 0);
    assert_true(it.seq_id == n - 1);
    prepack_plan_free(p);
    free(len);
}

/* Token ids up to 2^32 - 1 survive the whole round trip as uint32. */
static void test_largest_token_ids(void **state)
{
    (void)state;
    prepack_store *st = NULL;
    prepack_store_options so = {.tmp_dir = test_tmpdir};
    assert_int_equal(prepack_store_create(&st, &so, NULL), PREPACK_OK);
    uint32_t a[3] = {UINT32_MAX, 0, UINT32_MAX - 1}, b[1] = {65536};
    assert_int_equal(prepack_store_add(st, a, 3, NULL, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_end_sequence(st, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_add(st, b, 1, NULL, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_end_sequence(st, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_finish(st, NULL), PREPACK_OK);
    assert_int_equal(prepack_store_dtype(st), PREPACK_DTYPE_UINT32);
    prepack_plan_options o = {.max_seq_len = 4};
    prepack_plan *p = NULL;
    assert_int_equal(
        prepack_plan_create(&p, prepack_store_lengths(st), 2, &o, NULL),
        PREPACK_OK);
    const char *dir = path_of("big-ids");
    prepack_writer *w = NULL;
    prepack_writer_options wo = {0};
    assert_int_equal(
        prepack_writer_create(&w, dir, 4, PREPACK_DTYPE_UINT32, &wo, NULL),
        PREPACK_OK);
    prepack_row_builder *rb = NULL;
    assert_int_equal(prepack_row_builder_create(&rb, p, st, NULL), PREPACK_OK);
    prepack_row row;
    assert_int_equal(prepack_row_builder_get(rb, 0, &row), PREPACK_OK);
    assert_int_equal(prepack_writer_add(w, &row, NULL), PREPACK_OK);
    prepack_manifest_info info = {&o, st, NULL};
    assert_int_equal(prepack_writer_finish(w, &info, NULL), PREPACK_OK);
    prepack_writer_free(w);
    prepack_row_builder_free(rb);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, dir, NULL, NULL), PREPACK_OK);
    assert_int_equal(prepack_reader_row(r, 0, &row, NULL), PREPACK_OK);
    assert_int_equal(row.num_tokens, 4);
    assert_int_equal(prepack_row_token(&row, 0), UINT32_MAX);
    assert_int_equal(prepack_row_token(&row, 2), UINT32_MAX - 1);
    assert_int_equal(prepack_row_token(&row, 3), 65536);
    prepack_batch bt;
    size_t pick = 0;
    assert_int_equal(prepack_reader_batch(r, &pick, 1, NULL, &bt, NULL),
                     PREPACK_OK);
    assert_true(bt.input_ids[0] == (int64_t)UINT32_MAX); /* no sign flip */
    prepack_reader_free(r);
    prepack_plan_free(p);
    /* a store forced to uint16 refuses them */
    prepack_store_free(st);
    so.dtype = PREPACK_DTYPE_UINT16;
    assert_int_equal(prepack_store_create(&st, &so, NULL), PREPACK_OK);
    prepack_diag d = {0};
    assert_int_equal(prepack_store_add(st, a, 3, NULL, &d), PREPACK_ERANGE);
    assert_non_null(strstr(d.message, "4294967295"));
    prepack_store_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_builder_allocation_failures),
        cmocka_unit_test(test_writer_allocation_failures),
        cmocka_unit_test(test_reader_allocation_failures),
        cmocka_unit_test(test_incomplete_allocator),
        cmocka_unit_test(test_file_size_limit),
        cmocka_unit_test(test_max_seq_len_limits),
        cmocka_unit_test(test_lengths_near_2_to_32),
        cmocka_unit_test(test_no_sequences),
        cmocka_unit_test(test_many_empty_sequences),
        cmocka_unit_test(test_largest_token_ids),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
