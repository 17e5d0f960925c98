/* prepack_plan_create_groups through the public header: the plan equals the
 * reference FFD/BFD/next-fit (tests/support/ref_plan.c) over the groups' summed
 * lengths, each group item replaced by its members in order; the figures
 * count sequences; overlong groups follow error and drop whole; split,
 * truncate and bad group arrays are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "ref_plan.h"

static uint32_t next(uint64_t *x)
{
    *x = *x * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*x >> 33);
}

/* Random groups of 1-4 sequences (some of length 0). */
static size_t make_groups(uint64_t *x, uint32_t *len, size_t n, uint64_t *first)
{
    size_t g = 0;
    for (size_t i = 0; i < n;) {
        first[g++] = i;
        size_t k = 1 + next(x) % 4;
        for (size_t j = 0; j < k && i < n; j++, i++)
            len[i] = next(x) % 9 == 0 ? 0 : 1 + next(x) % 90;
    }
    first[g] = n;
    return g;
}

static void check_against_reference(prepack_algo algo, prepack_overlong pol,
                                    uint32_t pad, uint64_t seed)
{
    enum { N = 2000 };
    uint32_t len[N];
    uint64_t first[N + 1];
    uint64_t x = seed;
    size_t groups = make_groups(&x, len, N, first);
    uint32_t *glen = malloc(groups * sizeof *glen);
    for (size_t g = 0; g < groups; g++) {
        glen[g] = 0;
        for (uint64_t s = first[g]; s < first[g + 1]; s++)
            glen[g] += pad > 1 ? (len[s] + pad - 1) / pad * pad : len[s];
    }
    prepack_plan_options o = {0};
    o.max_seq_len = 160;
    o.algo = algo;
    o.overlong = pol;
    o.pad_multiple = pad;
    prepack_plan *p = NULL;
    prepack_diag d = {0};
    ref_plan ref;
    size_t bad = 0;
    int want = ref_plan_build(glen, groups, 160, algo, pol, 0, &ref, &bad);
    int got = prepack_plan_create_groups(&p, len, N, first, groups, &o, &d);
    assert_int_equal(got, want);
    if (got != PREPACK_OK) {
        assert_non_null(strstr(d.message, "the group of sequences"));
        free(glen);
        return;
    }
    assert_int_equal(prepack_plan_row_count(p), ref.rows);
    uint64_t tokens = 0, items = 0;
    for (size_t r = 0; r < ref.rows; r++) {
        size_t k = 0;
        for (size_t e = ref.row_start[r]; e < ref.row_start[r + 1]; e++) {
            size_t g = (size_t)ref.entry[e].seq_id;
            for (uint64_t s = first[g]; s < first[g + 1]; s++) {
                if (len[s] == 0)
                    continue;
                prepack_item it = prepack_plan_item(p, r, k++);
                assert_int_equal(it.seq_id, s);
                assert_int_equal(it.offset, 0);
                assert_int_equal(it.length, len[s]);
                tokens += len[s];
                items++;
            }
        }
        assert_int_equal(prepack_plan_row_size(p, r), k);
    }
    prepack_plan_stats st;
    prepack_plan_get_stats(p, &st);
    assert_int_equal(st.sequences, N);
    assert_int_equal(st.items, items);
    assert_int_equal(st.tokens, tokens);
    prepack_plan_free(p);
    ref_plan_free(&ref);
    free(glen);
}

static void test_equals_reference(void **state)
{
    (void)state;
    for (int algo = 0; algo < 3; algo++)
        for (int pad = 1; pad <= 8; pad *= 8) {
            check_against_reference((prepack_algo)algo, PREPACK_OVERLONG_DROP,
                                    (uint32_t)pad, 11u + (uint64_t)algo);
            check_against_reference((prepack_algo)algo, PREPACK_OVERLONG_ERROR,
                                    (uint32_t)pad, 5);
        }
}

static void test_refused(void **state)
{
    (void)state;
    uint32_t len[4] = {3, 4, 5, 6};
    uint64_t first[3] = {0, 2, 4};
    prepack_plan_options o = {0};
    o.max_seq_len = 16;
    prepack_plan *p = NULL;
    prepack_diag d = {0};
    o.overlong = PREPACK_OVERLONG_SPLIT;
    assert_int_equal(prepack_plan_create_groups(&p, len, 4, first, 2, &o, &d),
                     PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "never split or truncated"));
    o.overlong = PREPACK_OVERLONG_ERROR;
    uint64_t bad[3] = {0, 3, 3};
    assert_int_equal(prepack_plan_create_groups(&p, len, 4, bad, 2, &o, &d),
                     PREPACK_EINVAL);
    uint64_t short_[3] = {0, 2, 3};
    assert_int_equal(prepack_plan_create_groups(&p, len, 4, short_, 2, &o, &d),
                     PREPACK_EINVAL);
    o.max_seq_len = 10;
    assert_int_equal(prepack_plan_create_groups(&p, len, 4, first, 2, &o, &d),
                     PREPACK_EOVERLONG);
    assert_non_null(strstr(d.message, "sequences 2..3 has 11 tokens"));
    o.overlong = PREPACK_OVERLONG_DROP;
    assert_int_equal(prepack_plan_create_groups(&p, len, 4, first, 2, &o, &d),
                     PREPACK_OK);
    prepack_plan_stats st;
    prepack_plan_get_stats(p, &st);
    assert_int_equal(st.dropped_sequences, 2);
    assert_int_equal(st.dropped_tokens, 11);
    assert_int_equal(st.rows, 1);
    assert_int_equal(prepack_plan_row_size(p, 0), 2);
    prepack_plan_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_reference),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
