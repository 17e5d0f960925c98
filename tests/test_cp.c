/* pad_multiple through the public header: the plan equals the plan of the
 * rounded-up lengths with each item cut back to its real tokens, for every
 * algorithm and overlong policy; real-token stats; errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_the_rounded_plan),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
