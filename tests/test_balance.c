/* The cost model and balancing through the public header: the formula,
 * row costs from lengths, rows, plans and shard sets agreeing, and
 * prepack_balance / prepack_balance_epoch's guarantees (counts, coverage,
 * determinism, no worse than round robin on skewed costs). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_tmpdir.h"

static void test_cost_model(void **state)
{
    (void)state;
    prepack_model_dims d = {64, 256, 4, 2, 3, 0};
    prepack_cost_model m;
    assert_int_equal(prepack_cost_model_for(&d, &m), PREPACK_OK);
    assert_true(fabs(m.per_token - 2.0 * 3 * (2 * 64 * 64 + 2 * 64 * 32 +
                                              3 * 64 * 256)) < 1e-6);
    assert_true(fabs(m.per_pair - 2.0 * 3 * 2 * 64 * 0.5) < 1e-9);
    prepack_model_dims bad = {0, 0, 4, 0, 3, 0};
    assert_int_equal(prepack_cost_model_for(&bad, &m), PREPACK_EINVAL);
    assert_int_equal(prepack_cost_model_for(NULL, &m), PREPACK_EINVAL);
    prepack_cost_model def = prepack_cost_model_default();
    assert_true(def.per_token > 1e10 && def.per_pair == 262144.0);
    uint32_t lens[3] = {3, 4, 0};
    prepack_cost_model unit = {1.0, 0.5};
    assert_true(prepack_cost_of_lengths(&unit, lens, 3) == 7 + 0.5 * 25);
}

/* Row costs from a plan, its rows and the shard set written from them
 * are the same numbers. */
static void test_costs_agree(void **state)
{
    (void)state;
    enum { N = 300 };
    uint32_t tokens[N * 40];
    uint64_t offsets[N + 1];
    uint32_t lengths[N];
    offsets[0] = 0;
    for (size_t i = 0; i < N; i++) {
        lengths[i] = 1 + (uint32_t)((i * 7919) % 40);
        offsets[i + 1] = offsets[i] + lengths[i];
    }
    for (size_t t = 0; t < offsets[N]; t++)
        tokens[t] = (uint32_t)(t % 1000);
    prepack_diag d = {0};
    prepack_store *s = NULL;
    assert_int_equal(prepack_store_create(&s, NULL, &d), PREPACK_OK);
    assert_int_equal(prepack_store_add_sequences(s, tokens, offsets, N, NULL, &d),
                     PREPACK_OK);
    assert_int_equal(prepack_store_finish(s, &d), PREPACK_OK);
    prepack_plan_options po = {0};
    po.max_seq_len = 64;
    prepack_plan *plan = NULL;
    assert_int_equal(prepack_plan_create(&plan, prepack_store_lengths(s), N, &po,
                                         &d),
                     PREPACK_OK);
    prepack_row_builder *b = NULL;
    prepack_writer *w = NULL;
    assert_int_equal(prepack_row_builder_create(&b, plan, s, &d), PREPACK_OK);
    assert_int_equal(prepack_writer_create(&w, path_of("set"), 64,
                                           prepack_store_dtype(s), NULL, &d),
                     PREPACK_OK);
    prepack_cost_model m = {1.0, 0.25};
    size_t rows = prepack_plan_row_count(plan);
    double *want = malloc(rows * sizeof *want);
    for (size_t r = 0; r < rows; r++) {
        prepack_row row;
        assert_int_equal(prepack_row_builder_get(b, r, &row), PREPACK_OK);
        want[r] = prepack_plan_row_cost(&m, plan, r);
        assert_true(prepack_row_cost(&m, &row) == want[r]);
        assert_int_equal(prepack_writer_add(w, &row, &d), PREPACK_OK);
    }
    assert_int_equal(prepack_writer_finish(w, NULL, &d), PREPACK_OK);
    prepack_reader *rd = NULL;
    assert_int_equal(prepack_reader_open(&rd, path_of("set"), NULL, &d),
                     PREPACK_OK);
    double *got = malloc(rows * sizeof *got);
    assert_int_equal(prepack_reader_row_costs(rd, &m, got, &d), PREPACK_OK);
    assert_memory_equal(got, want, rows * sizeof *got);
    free(got);
    free(want);
    prepack_reader_free(rd);
    prepack_writer_free(w);
    prepack_row_builder_free(b);
    prepack_plan_free(plan);
    prepack_store_free(s);
}

static double lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005u + 1442695040888963407u;
    return (double)(*x >> 11) / 9007199254740992.0;
}

static void test_balance_guarantees(void **state)
{
    (void)state;
    uint64_t x = 7;
    const uint32_t worlds[] = {1, 2, 3, 8, 64};
    for (size_t wi = 0; wi < 5; wi++) {
        uint32_t world = worlds[wi];
        for (size_t n = 0; n < 300; n += 37) {
            double *c = malloc((n + 1) * sizeof *c);
            uint32_t *bin = malloc((n + 1) * sizeof *bin);
            uint32_t *again = malloc((n + 1) * sizeof *again);
            for (size_t i = 0; i < n; i++) /* heavy-tailed */
                c[i] = 1.0 / (0.001 + lcg(&x));
            assert_int_equal(prepack_balance(c, n, world, bin, NULL), PREPACK_OK);
            assert_int_equal(prepack_balance(c, n, world, again, NULL),
                             PREPACK_OK);
            assert_memory_equal(bin, again, n * sizeof *bin);
            size_t count[64] = {0};
            double load[64] = {0}, rr[64] = {0};
            for (size_t i = 0; i < n; i++) {
                assert_true(bin[i] < world);
                count[bin[i]]++;
                load[bin[i]] += c[i];
                rr[i % world] += c[i];
            }
            size_t lo = SIZE_MAX, hi = 0;
            double max = 0, rr_max = 0;
            for (uint32_t b = 0; b < world; b++) {
                lo = count[b] < lo ? count[b] : lo;
                hi = count[b] > hi ? count[b] : hi;
                max = load[b] > max ? load[b] : max;
                rr_max = rr[b] > rr_max ? rr[b] : rr_max;
            }
            assert_true(hi - lo <= 1);
            assert_true(max <= rr_max + 1e-9);
            free(c);
            free(bin);
            free(again);
        }
    }
    double bad[2] = {1.0, -1.0};
    uint32_t out[2];
    prepack_diag d = {0};
    assert_int_equal(prepack_balance(bad, 2, 2, out, &d), PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "non-negative"));
    assert_int_equal(prepack_balance(bad, 2, 0, out, NULL), PREPACK_EINVAL);
}

static void test_balance_epoch(void **state)
{
    (void)state;
    enum { N = 1001 };
    double c[N];
    uint64_t order[N], out[N];
    uint32_t rank[N];
    uint64_t x = 3;
    for (size_t i = 0; i < N; i++) {
        c[i] = lcg(&x) * 100;
        order[i] = (i * 389) % N; /* a permutation: 389 and 1001 coprime */
    }
    for (uint32_t window = 1; window <= 4; window += 3) {
        assert_int_equal(prepack_balance_epoch(c, N, order, 8, 3, window, out,
                                               rank, NULL),
                         PREPACK_OK);
        uint8_t seen[N] = {0};
        for (size_t i = 0; i < N; i++) {
            assert_true(out[i] < N && !seen[out[i]]);
            seen[out[i]] = 1;
        }
        for (size_t s0 = 0; s0 + 24 <= N; s0 += 24) {
            uint32_t count[8] = {0};
            for (size_t i = s0; i < s0 + 24; i++)
                count[rank[i]]++;
            for (int r = 0; r < 8; r++)
                assert_int_equal(count[r], 3);
        }
    }
    assert_int_equal(prepack_balance_epoch(c, N, order, 8, 3, 1, NULL, rank,
                                           NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_balance_epoch(c, N, order, 8, 3, 2, NULL, rank,
                                           NULL),
                     PREPACK_EINVAL);
    order[5] = N;
    prepack_diag d = {0};
    assert_int_equal(prepack_balance_epoch(c, N, order, 8, 3, 1, NULL, rank, &d),
                     PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "not a row"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost_model),
        cmocka_unit_test(test_costs_agree),
        cmocka_unit_test(test_balance_guarantees),
        cmocka_unit_test(test_balance_epoch),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
