/* The padding report, on cases small enough to work out by hand. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"

static prepack_plan *make_plan(const uint32_t *len, size_t n, uint32_t L,
                               prepack_overlong policy)
{
    prepack_plan_options o = {.max_seq_len = L, .overlong = policy};
    prepack_plan *p = NULL;
    assert_int_equal(prepack_plan_create(&p, len, n, &o, NULL), PREPACK_OK);
    return p;
}

static void test_hand_example(void **state)
{
    (void)state;
    uint32_t len[] = {7, 9, 6, 10};
    prepack_plan *p = make_plan(len, 4, 16, PREPACK_OVERLONG_ERROR);
    prepack_report r;
    assert_int_equal(prepack_report_compute(p, len, 4, 4, &r), PREPACK_OK);
    assert_int_equal(r.batch_size, 4);
    /* one batch of 4 padded to 10 */
    assert_int_equal(r.naive_batch.rows, 4);
    assert_int_equal(r.naive_batch.slots, 40);
    assert_int_equal(r.naive_batch.pad_tokens, 8);
    assert_float_equal(r.naive_batch.pad_fraction, 0.2, 1e-12);
    assert_float_equal(r.naive_batch.attention_cost, 400, 0);
    /* every sequence padded to 16 */
    assert_int_equal(r.padded_to_max.slots, 64);
    assert_int_equal(r.padded_to_max.pad_tokens, 32);
    assert_float_equal(r.padded_to_max.attention_cost, 1024, 0);
    /* two full packed rows, varlen attention 49 + 81 + 36 + 100 */
    assert_int_equal(r.packed.rows, 2);
    assert_int_equal(r.packed.slots, 32);
    assert_int_equal(r.packed.pad_tokens, 0);
    assert_float_equal(r.packed.attention_cost, 266, 0);
    assert_float_equal(r.packed_dense_attention_cost, 512, 0);
    assert_int_equal(r.plan.rows, 2);

    /* batches of 3: [7 9 6] -> 27 slots, [10] -> 10 */
    assert_int_equal(prepack_report_compute(p, len, 4, 3, &r), PREPACK_OK);
    assert_int_equal(r.naive_batch.slots, 37);
    assert_float_equal(r.naive_batch.attention_cost, 3 * 81 + 100, 0);
    /* 0 means the default batch size */
    assert_int_equal(prepack_report_compute(p, len, 4, 0, &r), PREPACK_OK);
    assert_int_equal(r.batch_size, PREPACK_DEFAULT_BATCH_SIZE);
    prepack_plan_free(p);
}

static void test_policies_shape_naive_batches(void **state)
{
    (void)state;
    uint32_t len[] = {10, 0, 3};
    /* split at L = 4: items 4 4 2 3, one batch padded to 4 */
    prepack_plan *p = make_plan(len, 3, 4, PREPACK_OVERLONG_SPLIT);
    prepack_report r;
    assert_int_equal(prepack_report_compute(p, len, 3, 8, &r), PREPACK_OK);
    assert_int_equal(r.naive_batch.rows, 4);
    assert_int_equal(r.naive_batch.slots, 16);
    assert_int_equal(r.naive_batch.pad_tokens, 3);
    assert_int_equal(r.plan.tokens, 13);
    prepack_plan_free(p);
    /* drop: only the 3 remains */
    p = make_plan(len, 3, 4, PREPACK_OVERLONG_DROP);
    assert_int_equal(prepack_report_compute(p, len, 3, 8, &r), PREPACK_OK);
    assert_int_equal(r.naive_batch.rows, 1);
    assert_int_equal(r.naive_batch.slots, 3);
    assert_int_equal(r.packed.slots, 4);
    assert_int_equal(r.packed.pad_tokens, 1);
    prepack_plan_free(p);
    /* truncate: 4 and 3 */
    p = make_plan(len, 3, 4, PREPACK_OVERLONG_TRUNCATE);
    assert_int_equal(prepack_report_compute(p, len, 3, 1, &r), PREPACK_OK);
    assert_int_equal(r.naive_batch.slots, 7);
    assert_int_equal(r.naive_batch.pad_tokens, 0);
    assert_float_equal(r.naive_batch.attention_cost, 16 + 9, 0);
    prepack_plan_free(p);
}

static void test_rejects_other_lengths(void **state)
{
    (void)state;
    uint32_t len[] = {7, 9, 6, 10};
    uint32_t other[] = {7, 9, 6, 11};
    prepack_plan *p = make_plan(len, 4, 16, PREPACK_OVERLONG_ERROR);
    prepack_report r;
    assert_int_equal(prepack_report_compute(p, len, 3, 8, &r), PREPACK_EINVAL);
    assert_int_equal(prepack_report_compute(p, other, 4, 8, &r),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_report_compute(NULL, len, 4, 8, &r),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_report_compute(p, NULL, 4, 8, &r), PREPACK_EINVAL);
    prepack_plan_free(p);
}

static void test_empty(void **state)
{
    (void)state;
    prepack_plan *p = make_plan(NULL, 0, 16, PREPACK_OVERLONG_ERROR);
    prepack_report r;
    assert_int_equal(prepack_report_compute(p, NULL, 0, 8, &r), PREPACK_OK);
    assert_int_equal(r.naive_batch.slots, 0);
    assert_float_equal(r.naive_batch.pad_fraction, 0, 0);
    assert_int_equal(r.packed.rows, 0);
    prepack_plan_free(p);
}

static void test_svg(void **state)
{
    (void)state;
    uint32_t len[200];
    for (size_t i = 0; i < 200; i++)
        len[i] = (uint32_t)(i * 37 % 300 + 1);
    prepack_plan_options o = {.max_seq_len = 128,
                              .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_plan *p = NULL;
    assert_int_equal(prepack_plan_create(&p, len, 200, &o, NULL), PREPACK_OK);
    prepack_report r;
    assert_int_equal(prepack_report_compute(p, len, 200, 4, &r), PREPACK_OK);
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    assert_int_equal(prepack_report_write_svg(&r, p, len, 200, f), PREPACK_OK);
    fclose(f);
    assert_non_null(strstr(buf, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_non_null(strstr(buf, "Sequence lengths: 200 sequences"));
    assert_non_null(strstr(buf, "L = 128"));
    assert_non_null(strstr(buf, "Row fill"));
    assert_non_null(strstr(buf, "naive padded rows"));
    assert_non_null(strstr(buf, "padded to L"));
    assert_true(size > 1000 && strcmp(buf + size - 7, "</svg>\n") == 0);
    /* every element that opens closes: count tags */
    size_t open = 0, close = 0;
    for (const char *q = buf; (q = strstr(q, "<text")); q++)
        open++;
    for (const char *q = buf; (q = strstr(q, "</text>")); q++)
        close++;
    assert_int_equal(open, close);
    free(buf);
    assert_int_equal(prepack_report_write_svg(&r, p, len, 199, stdout),
                     PREPACK_EINVAL);
    prepack_plan_free(p);
}

/* The length histogram's count axis is logarithmic: a few sequences far
 * past L, beside thousands of short ones, still draw a bar one can see
 * (on a linear axis 3 of 5,003 is a tenth of a pixel). */
static void test_svg_long_tail_visible(void **state)
{
    (void)state;
    enum { N = 5003 };
    static uint32_t len[N];
    for (size_t i = 0; i < N; i++)
        len[i] = i < 5000 ? 50 : 5000; /* 3 sequences 39x past L */
    prepack_plan_options o = {.max_seq_len = 128,
                              .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_plan *p = NULL;
    assert_int_equal(prepack_plan_create(&p, len, N, &o, NULL), PREPACK_OK);
    prepack_report r;
    assert_int_equal(prepack_report_compute(p, len, N, 8, &r), PREPACK_OK);
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    assert_int_equal(prepack_report_write_svg(&r, p, len, N, f), PREPACK_OK);
    fclose(f);
    /* the lengths panel (the first 300 px) holds only its bars: the one
     * furthest right is the last bin, where the tail goes */
    double last_x = -1, last_h = 0, tallest = 0;
    for (const char *q = buf; (q = strstr(q, "<rect x=")); q++) {
        double x, y, w, h;
        char fill[16];
        if (sscanf(q, "<rect x=\"%lf\" y=\"%lf\" width=\"%lf\" "
                      "height=\"%lf\" fill=\"%15[^\"]\"",
                   &x, &y, &w, &h, fill) != 5 ||
            y >= 300)
            continue;
        tallest = h > tallest ? h : tallest;
        if (x > last_x) {
            last_x = x;
            last_h = h;
        }
    }
    assert_true(last_x > 800);  /* the last of 48 bins */
    assert_true(last_h >= 10);  /* visible: 16% of the 5,000-count bar */
    assert_true(tallest > 150); /* the 5,000 short ones near the top */
    assert_true(last_h < tallest);
    assert_non_null(strstr(buf, "sequences (log scale)"));
    free(buf);
    prepack_plan_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_example),
        cmocka_unit_test(test_policies_shape_naive_batches),
        cmocka_unit_test(test_rejects_other_lengths),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_svg),
        cmocka_unit_test(test_svg_long_tail_visible),
    };
    return cmocka_run_group_tests_name("report", tests, NULL, NULL);
}
