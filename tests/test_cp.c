/* pad_multiple through the public header: the plan equals the plan of the
 * rounded-up lengths with each item cut back to its real tokens, for every
 * algorithm and overlong policy; real-token stats; errors. Batches with
 * pad_multiple (flat and padded, the reader's arrays and the caller's)
 * equal the layout of _collate.py's pad_multiple, written out here per
 * token from each row read alone. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_tmpdir.h"
#include "test_util.h"

static uint32_t next(uint64_t *x)
{
    *x = *x * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*x >> 33);
}

static void check(const uint32_t *len, size_t n, prepack_plan_options o)
{
    uint32_t m = o.pad_multiple;
    uint32_t *up = malloc(n * sizeof *up);
    uint64_t real = 0;
    for (size_t i = 0; i < n; i++) {
        up[i] = (len[i] + m - 1) / m * m;
        real += len[i];
    }
    prepack_plan *a = NULL, *b = NULL;
    prepack_diag d = {0};
    assert_int_equal(prepack_plan_create(&a, len, n, &o, &d), PREPACK_OK);
    prepack_plan_options plain = o;
    plain.pad_multiple = 0;
    assert_int_equal(prepack_plan_create(&b, up, n, &plain, &d), PREPACK_OK);
    assert_int_equal(prepack_plan_row_count(a), prepack_plan_row_count(b));
    uint64_t placed = 0;
    for (size_t r = 0; r < prepack_plan_row_count(a); r++) {
        assert_int_equal(prepack_plan_row_size(a, r), prepack_plan_row_size(b, r));
        uint64_t padded = 0;
        for (size_t k = 0; k < prepack_plan_row_size(a, r); k++) {
            prepack_item x = prepack_plan_item(a, r, k);
            prepack_item y = prepack_plan_item(b, r, k);
            assert_int_equal(x.seq_id, y.seq_id);
            assert_int_equal(x.offset, y.offset);
            uint32_t left = len[x.seq_id] - x.offset;
            assert_int_equal(x.length, y.length < left ? y.length : left);
            placed += x.length;
            padded += (x.length + m - 1) / m * m;
        }
        assert_true(padded <= o.max_seq_len);
    }
    prepack_plan_stats s;
    prepack_plan_get_stats(a, &s);
    assert_int_equal(s.tokens, placed);
    assert_int_equal(s.input_tokens, real);
    assert_int_equal(s.tokens + s.truncated_tokens + s.dropped_tokens, real);
    prepack_plan_free(a);
    prepack_plan_free(b);
    free(up);
}

static void test_equals_the_rounded_plan(void **state)
{
    (void)state;
    enum { N = 3000 };
    uint32_t len[N];
    uint64_t x = 99;
    for (size_t i = 0; i < N; i++)
        len[i] = next(&x) % 7 == 0 ? next(&x) % 900 : next(&x) % 120;
    const uint32_t mults[] = {2, 8, 16};
    for (int algo = 0; algo < 3; algo++)
        for (int pol = 1; pol < 4; pol++) /* truncate, split, drop */
            for (int k = 0; k < 3; k++) {
                prepack_plan_options o = {0};
                o.max_seq_len = 256;
                o.algo = (prepack_algo)algo;
                o.overlong = (prepack_overlong)pol;
                o.pad_multiple = mults[k];
                check(len, N, o);
            }
}

static void test_errors(void **state)
{
    (void)state;
    uint32_t len[3] = {5, 300, 7};
    prepack_plan_options o = {0};
    o.max_seq_len = 256;
    o.pad_multiple = 24; /* 256 is not a multiple */
    prepack_plan *p = NULL;
    prepack_diag d = {0};
    assert_int_equal(prepack_plan_create(&p, len, 3, &o, &d), PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "not a multiple of pad_multiple 24"));
    o.pad_multiple = 16; /* overlong named with its real length */
    assert_int_equal(prepack_plan_create(&p, len, 3, &o, &d), PREPACK_EOVERLONG);
    assert_non_null(strstr(d.message, "sequence 1 has 300 tokens"));
    assert_null(p);
}

/* ---- batches with pad_multiple ------------------------------------------ */

enum { SEQS = 400, BL = 64 };

/* A set of SEQS random sequences (1-70 tokens, random loss masks) in rows
 * of BL, planned with plan_pad (0: none, so padding may pass BL). */
static void write_cp_set(const char *dir, uint32_t plan_pad, uint64_t seed)
{
    rng r = {seed};
    prepack_store *s = NULL;
    prepack_store_options so = {.tmp_dir = test_tmpdir};
    assert_int_equal(prepack_store_create(&s, &so, NULL), PREPACK_OK);
    uint32_t tok[70];
    uint8_t mask[70];
    for (size_t i = 0; i < SEQS; i++) {
        uint32_t n = rng_range(&r, 1, 70);
        for (uint32_t k = 0; k < n; k++) {
            tok[k] = rng_range(&r, 0, 70000);
            mask[k] = (uint8_t)(rng_range(&r, 0, 3) != 0);
        }
        assert_int_equal(prepack_store_add(s, tok, n, mask, NULL), PREPACK_OK);
        assert_int_equal(prepack_store_end_sequence(s, NULL), PREPACK_OK);
    }
    assert_int_equal(prepack_store_finish(s, NULL), PREPACK_OK);
    prepack_plan_options o = {.max_seq_len = BL,
                              .overlong = PREPACK_OVERLONG_SPLIT,
                              .pad_multiple = plan_pad};
    prepack_plan *plan = NULL;
    prepack_report rep;
    assert_int_equal(prepack_plan_store(&plan, s, &o, NULL), PREPACK_OK);
    assert_int_equal(
        prepack_report_compute(plan, prepack_store_lengths(s), SEQS, 0, &rep),
        PREPACK_OK);
    prepack_writer *w = NULL;
    prepack_writer_options wo = {.rows_per_frame = 8, .overwrite = 1};
    assert_int_equal(
        prepack_writer_create(&w, dir, BL, prepack_store_dtype(s), &wo, NULL),
        PREPACK_OK);
    prepack_row_builder *b = NULL;
    assert_int_equal(prepack_row_builder_create(&b, plan, s, NULL), PREPACK_OK);
    for (size_t i = 0; i < prepack_plan_row_count(plan); i++) {
        prepack_row row;
        assert_int_equal(prepack_row_builder_get(b, i, &row), PREPACK_OK);
        assert_int_equal(prepack_writer_add(w, &row, NULL), PREPACK_OK);
    }
    prepack_manifest_info info = {&o, s, &rep};
    assert_int_equal(prepack_writer_finish(w, &info, NULL), PREPACK_OK);
    prepack_writer_free(w);
    prepack_row_builder_free(b);
    prepack_plan_free(plan);
    prepack_store_free(s);
}

/* What one row contributes, laid out as _collate.py's _pad_rows and
 * _flat/_padded lay it out: per physical token its id, position, label,
 * document (its sequence's index in the row), trained bit, and whether it
 * is real; per sequence its padded end. */
typedef struct padded_row {
    size_t T, k;
    int64_t ids[BL * 16], pos[BL * 16], lab[BL * 16], doc[BL * 16];
    uint8_t real[BL * 16];
    int32_t pcu[BL + 1], cu[BL + 1];
    uint64_t seq[BL];
    uint32_t longest;
} padded_row;

static void expect_row(const prepack_row *row, uint32_t m, int64_t pad_id,
                       padded_row *e)
{
    size_t at = 0;
    e->k = row->num_seqs;
    e->pcu[0] = e->cu[0] = 0;
    e->longest = 0;
    for (size_t j = 0; j < row->num_seqs; j++) {
        size_t lo = (size_t)row->cu_seqlens[j];
        size_t n = (size_t)row->cu_seqlens[j + 1] - lo;
        size_t p = (n + m - 1) / m * m;
        for (size_t i = 0; i < p; i++) {
            int is_real = i < n;
            int next_trained =
                i + 1 < n && (!row->loss_mask || row->loss_mask[lo + i + 1]);
            e->ids[at + i] =
                is_real ? (int64_t)prepack_row_token(row, lo + i) : pad_id;
            e->pos[at + i] = (int64_t)i;
            e->lab[at + i] = next_trained
                                 ? (int64_t)prepack_row_token(row, lo + i + 1)
                                 : -100;
            e->doc[at + i] = (int64_t)j;
            e->real[at + i] = (uint8_t)is_real;
        }
        at += p;
        e->pcu[j + 1] = (int32_t)at;
        e->cu[j + 1] = row->cu_seqlens[j + 1];
        e->seq[j] = row->seq_ids[j];
        e->longest = p > e->longest ? (uint32_t)p : e->longest;
    }
    e->T = at;
}

/* (M 1: no padding, and no cu_seqlens_padded.) */
static void check_flat(const prepack_batch *b, padded_row *e, size_t rows,
                       uint32_t m)
{
    size_t at = 0, s = 0, real = 0;
    uint64_t trained = 0;
    uint32_t longest = 0;
    const int32_t *pcu = m > 1 ? b->cu_seqlens_padded : b->cu_seqlens;
    if (m <= 1)
        assert_null(b->cu_seqlens_padded);
    assert_int_equal(b->cu_seqlens[0], 0);
    assert_int_equal(pcu[0], 0);
    for (size_t i = 0; i < rows; i++) {
        for (size_t t = 0; t < e[i].T; t++) {
            assert_int_equal(b->input_ids[at + t], e[i].ids[t]);
            assert_int_equal(b->position_ids[at + t], e[i].pos[t]);
            assert_int_equal(b->labels[at + t], e[i].lab[t]);
            trained += e[i].lab[t] != -100;
            if (b->doc_ids)
                assert_int_equal(b->doc_ids[at + t], (int64_t)s + e[i].doc[t]);
        }
        for (size_t j = 0; j < e[i].k; j++) {
            assert_int_equal(b->seq_ids[s + j], e[i].seq[j]);
            assert_int_equal(b->cu_seqlens[s + j + 1],
                             (int32_t)real + e[i].cu[j + 1]);
            assert_int_equal(pcu[s + j + 1], (int32_t)at + e[i].pcu[j + 1]);
        }
        at += e[i].T;
        real += (size_t)e[i].cu[e[i].k];
        s += e[i].k;
        longest = e[i].longest > longest ? e[i].longest : longest;
    }
    assert_int_equal(b->rows, rows);
    assert_int_equal(b->width, at);
    assert_int_equal(b->num_seqs, s);
    assert_int_equal(b->max_seqlen, longest);
    assert_int_equal(b->num_loss_tokens, trained);
    assert_null(b->attention_mask);
}

static void check_padded(const prepack_batch *b, padded_row *e, size_t rows,
                         int64_t pad_id)
{
    assert_int_equal(b->width, BL);
    assert_null(b->cu_seqlens);
    assert_null(b->cu_seqlens_padded);
    uint64_t trained = 0;
    for (size_t i = 0; i < rows; i++) {
        const int64_t *ids = b->input_ids + i * BL;
        for (size_t t = 0; t < BL; t++) {
            int in = t < e[i].T;
            assert_int_equal(ids[t], in ? e[i].ids[t] : pad_id);
            assert_int_equal(b->position_ids[i * BL + t], in ? e[i].pos[t] : 0);
            assert_int_equal(b->labels[i * BL + t], in ? e[i].lab[t] : -100);
            trained += in && e[i].lab[t] != -100;
            assert_int_equal(b->doc_ids[i * BL + t], in ? e[i].doc[t] : -1);
            assert_int_equal(b->attention_mask[i * BL + t],
                             in ? e[i].real[t] : 0);
            for (size_t k = 0; b->dense_mask && k < BL; k++) {
                int same =
                    in && k < e[i].T && k <= t && e[i].doc[k] == e[i].doc[t];
                assert_int_equal(b->dense_mask[(i * BL + t) * BL + k], same);
            }
        }
    }
    assert_int_equal(b->num_loss_tokens, trained);
}

/* Every form of a batch of `rows` random rows, M = m, through both the
 * reader's arrays and the caller's; whether the padded form was refused
 * (a row padded past L). */
static int check_batches(prepack_reader *r, rng *g, size_t rows, uint32_t m)
{
    size_t pick[8];
    static padded_row e[8];
    int64_t pad_id = (int64_t)rng_range(g, 0, 9);
    size_t nrows = prepack_reader_row_count(r);
    for (size_t i = 0; i < rows; i++) {
        pick[i] = rng_range(g, 0, (uint32_t)nrows - 1);
        prepack_row row;
        assert_int_equal(prepack_reader_row(r, pick[i], &row, NULL),
                         PREPACK_OK);
        expect_row(&row, m, pad_id, &e[i]);
    }
    prepack_batch b;
    prepack_batch_options flat = {.pad_id = pad_id, .pad_multiple = m};
    assert_int_equal(prepack_reader_batch(r, pick, rows, &flat, &b, NULL),
                     PREPACK_OK);
    check_flat(&b, e, rows, m);
    /* the caller's arrays: n x L x M tokens always hold a flat batch */
    size_t cap = rows * BL * m;
    int64_t *a = malloc(4 * cap * sizeof *a);
    int32_t *cu = malloc((rows * BL + 1) * sizeof *cu);
    int32_t *pcu = malloc((rows * BL + 1) * sizeof *pcu);
    uint64_t *seq = malloc(rows * BL * sizeof *seq);
    uint8_t *attn = malloc(cap);
    uint8_t *dense = malloc(rows * BL * BL);
    prepack_batch_arrays dst = {a,   a + cap,   a + 2 * cap,    a + 3 * cap,
                                cu,  seq,       attn,           dense,
                                cap, rows * BL, rows * BL * BL, pcu};
    assert_int_equal(
        prepack_reader_batch_into(r, pick, rows, &flat, &dst, &b, NULL),
        PREPACK_OK);
    check_flat(&b, e, rows, m);
    prepack_batch_options pad = {
        .padded = 1, .pad_id = pad_id, .dense_mask = 1, .pad_multiple = m};
    prepack_diag d = {0};
    int want = PREPACK_OK;
    for (size_t i = 0; i < rows; i++)
        if (e[i].T > BL)
            want = PREPACK_ERANGE;
    assert_int_equal(prepack_reader_batch(r, pick, rows, &pad, &b, &d), want);
    if (want == PREPACK_OK)
        check_padded(&b, e, rows, pad_id);
    else
        assert_non_null(strstr(d.message, "padded to multiples of"));
    assert_int_equal(
        prepack_reader_batch_into(r, pick, rows, &pad, &dst, &b, NULL), want);
    if (want == PREPACK_OK)
        check_padded(&b, e, rows, pad_id);
    free(a);
    free(cu);
    free(pcu);
    free(seq);
    free(attn);
    free(dense);
    return want != PREPACK_OK;
}

static void test_batches_pad_sequences(void **state)
{
    (void)state;
    rng g = {17};
    /* planned for M: every padded row fits L */
    const uint32_t planned[] = {2, 8, 16};
    for (int k = 0; k < 3; k++) {
        write_cp_set(path_of("cp"), planned[k], 5u + (uint64_t)k);
        prepack_reader *r = NULL;
        assert_int_equal(prepack_reader_open(&r, path_of("cp"), NULL, NULL),
                         PREPACK_OK);
        assert_int_equal(prepack_reader_pad_multiple(r), planned[k]);
        for (int t = 0; t < 20; t++)
            assert_false(check_batches(r, &g, 1 + (size_t)t % 8, planned[k]));
        prepack_reader_free(r);
    }
    /* planned without: padding may take a row past L (flat grows; padded
     * is refused) */
    write_cp_set(path_of("plain"), 0, 3);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, path_of("plain"), NULL, NULL),
                     PREPACK_OK);
    const uint32_t any[] = {1, 3, 8, 16};
    int refused = 0;
    for (int k = 0; k < 4; k++)
        for (int t = 0; t < 20; t++)
            refused += check_batches(r, &g, 1 + (size_t)t % 8, any[k]);
    assert_true(refused > 0);
    prepack_reader_free(r);
}

static void test_batch_pad_errors(void **state)
{
    (void)state;
    write_cp_set(path_of("err"), 0, 11);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, path_of("err"), NULL, NULL),
                     PREPACK_OK);
    size_t pick[2] = {0, 1};
    int64_t a[4 * BL];
    int32_t cu[BL + 1], pcu[BL + 1];
    uint64_t seq[BL];
    prepack_batch_arrays dst = {a,    a + BL, a + 2 * BL, a + 3 * BL, cu, seq,
                                NULL, NULL,   BL,         BL,         0,  NULL};
    prepack_batch_options o = {.pad_multiple = 16};
    prepack_batch b;
    prepack_diag d = {0};
    /* flat with padding needs cu_seqlens_padded */
    assert_int_equal(prepack_reader_batch_into(r, pick, 1, &o, &dst, &b, &d),
                     PREPACK_EINVAL);
    /* arrays of L tokens: a row padded past them is refused */
    dst.cu_seqlens_padded = pcu;
    int rc = PREPACK_OK;
    for (size_t i = 0; rc == PREPACK_OK && i < 200; i++) {
        pick[0] = i;
        rc = prepack_reader_batch_into(r, pick, 1, &o, &dst, &b, &d);
    }
    assert_int_equal(rc, PREPACK_ERANGE);
    assert_non_null(strstr(d.message, "does not fit the arrays given"));
    /* 0 and 1 are no padding: the batch equals the plain one */
    prepack_batch_options none = {.pad_multiple = 1};
    prepack_batch x;
    pick[0] = 0;
    assert_int_equal(prepack_reader_batch(r, pick, 2, &none, &x, NULL),
                     PREPACK_OK);
    assert_null(x.cu_seqlens_padded);
    size_t width = x.width;
    int64_t *ids = malloc(width * sizeof *ids);
    memcpy(ids, x.input_ids, width * sizeof *ids);
    assert_int_equal(prepack_reader_batch(r, pick, 2, NULL, &x, NULL),
                     PREPACK_OK);
    assert_int_equal(x.width, width);
    assert_memory_equal(x.input_ids, ids, width * sizeof *ids);
    free(ids);
    prepack_reader_free(r);
}

/* An allocator that refuses any request over 64 MiB and notes the largest
 * asked for: a batch must refuse a huge pad_multiple by its arithmetic,
 * not by trying to allocate what it implies. */
typedef struct capped {
    size_t largest;
} capped;
enum { CAP_BYTES = 64 << 20 };
static void *capped_malloc(void *op, size_t n)
{
    capped *c = op;
    c->largest = n > c->largest ? n : c->largest;
    return n > CAP_BYTES ? NULL : malloc(n);
}
static void *capped_realloc(void *op, void *p, size_t n)
{
    capped *c = op;
    c->largest = n > c->largest ? n : c->largest;
    return n > CAP_BYTES ? NULL : realloc(p, n);
}
static void capped_free(void *op, void *p)
{
    (void)op;
    free(p);
}

/* pad_multiple far past L (a caller's value: the manifest's is checked
 * to divide L): padded batches are PREPACK_ERANGE (the row passes L),
 * flat ones too (their cu_seqlens are int32, 2^31 padded tokens cannot
 * be told), batch_into ones past the caller's arrays; none allocates for
 * the padding it refuses. */
static void test_batch_huge_pad_multiple(void **state)
{
    (void)state;
    write_cp_set(path_of("huge"), 0, 13);
    capped c = {0};
    prepack_allocator a = {capped_malloc, capped_realloc, capped_free, &c};
    prepack_reader_options ro = {.allocator = &a};
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, path_of("huge"), &ro, NULL),
                     PREPACK_OK);
    size_t pick[1] = {0};
    prepack_batch b;
    prepack_diag d = {0};
    /* 2^28: a flat batch of a row of few sequences may take 2^28 tokens
     * (ENOMEM here); padded rows and the caller's arrays refuse it */
    const uint32_t huge[] = {UINT32_C(1) << 31, UINT32_MAX, 1u << 28};
    for (size_t k = 0; k < sizeof huge / sizeof *huge; k++) {
        prepack_batch_options padded = {.padded = 1, .pad_multiple = huge[k]};
        assert_int_equal(prepack_reader_batch(r, pick, 1, &padded, &b, &d),
                         PREPACK_ERANGE);
        assert_non_null(strstr(d.message, "more than max_seq_len"));
        prepack_batch_options flat = {.pad_multiple = huge[k]};
        int rc = prepack_reader_batch(r, pick, 1, &flat, &b, &d);
        assert_int_equal(rc, k < 2 ? PREPACK_ERANGE : PREPACK_ENOMEM);
        if (k < 2)
            assert_non_null(strstr(d.message, "int32 cu_seqlens"));
        int64_t ids[4 * BL];
        int32_t cu[BL + 1], pcu[BL + 1];
        uint64_t seq[BL];
        prepack_batch_arrays dst = {
            ids, ids + BL, ids + 2 * BL, ids + 3 * BL, cu, seq, NULL, NULL,
            BL,  BL,       0,            pcu};
        assert_int_equal(
            prepack_reader_batch_into(r, pick, 1, &flat, &dst, &b, &d),
            PREPACK_ERANGE);
        assert_non_null(strstr(d.message, "does not fit the arrays given"));
        if (k < 2)
            assert_true(c.largest <= CAP_BYTES);
    }
    /* the reader still batches after the refusals */
    prepack_batch_options ok = {.pad_multiple = 4};
    assert_int_equal(prepack_reader_batch(r, pick, 1, &ok, &b, NULL),
                     PREPACK_OK);
    assert_non_null(b.cu_seqlens_padded);
    prepack_reader_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_the_rounded_plan),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_batches_pad_sequences),
        cmocka_unit_test(test_batch_pad_errors),
        cmocka_unit_test(test_batch_huge_pad_multiple),
    };
    return cmocka_run_group_tests_name("cp", tests, tmpdir_setup,
                                       tmpdir_teardown);
}
