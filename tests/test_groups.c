/* prepack_plan_create_groups through the public header: the plan equals the
 * reference FFD/BFD/next-fit (tests/support/ref_plan.c) over the groups' summed
 * lengths, each group item replaced by its members in order; the figures
 * count sequences; overlong groups follow error and drop whole; split,
 * truncate and bad group arrays are refused. prepack_plan_joined and
 * prepack_plan_store plan as prepack_plan_create (no joins) and
 * prepack_plan_create_groups (joins) do, and name an overlong input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

static void assert_same_plan(const prepack_plan *a, const prepack_plan *b)
{
    assert_int_equal(prepack_plan_row_count(a), prepack_plan_row_count(b));
    for (size_t r = 0; r < prepack_plan_row_count(a); r++) {
        assert_int_equal(prepack_plan_row_size(a, r),
                         prepack_plan_row_size(b, r));
        for (size_t k = 0; k < prepack_plan_row_size(a, r); k++) {
            prepack_item x = prepack_plan_item(a, r, k);
            prepack_item y = prepack_plan_item(b, r, k);
            assert_int_equal(x.seq_id, y.seq_id);
            assert_int_equal(x.offset, y.offset);
            assert_int_equal(x.length, y.length);
        }
    }
}

/* A store of two inputs (n sequences of 1-90 tokens; input 1 from
 * sequence n / 2), each sequence joining the one before it with odds
 * 1 in `join` (0: never), never across inputs. */
static prepack_store *random_store(uint64_t *x, size_t n, unsigned join)
{
    prepack_store *s = NULL;
    prepack_diag d = {0};
    uint32_t tok[90];
    for (size_t t = 0; t < 90; t++)
        tok[t] = (uint32_t)t + 1;
    assert_int_equal(prepack_store_create(&s, NULL, &d), PREPACK_OK);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || i == n / 2)
            prepack_store_begin_input(s, i ? "b.jsonl" : "a.jsonl",
                                      PREPACK_FORMAT_JSONL);
        assert_int_equal(prepack_store_add(s, tok, 1 + next(x) % 90, NULL, &d),
                         PREPACK_OK);
        assert_int_equal(prepack_store_end_sequence(s, &d), PREPACK_OK);
        uint64_t id = i;
        if (join && i != 0 && i != n / 2 && next(x) % join == 0)
            assert_int_equal(prepack_store_join_sequences(s, &id, 1, &d),
                             PREPACK_OK);
    }
    assert_int_equal(prepack_store_finish(s, &d), PREPACK_OK);
    return s;
}

/* The joins group_first leaves out: every sequence not starting a group. */
static size_t joins_of(const uint64_t *first, size_t groups, size_t n,
                       uint64_t *joins)
{
    size_t k = 0, g = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (g < groups && first[g] == i)
            g++;
        else
            joins[k++] = i;
    }
    return k;
}

static void check_plan_store(prepack_algo algo, unsigned join, uint32_t pad,
                             uint64_t seed)
{
    enum { N = 1500 };
    uint64_t x = seed, joins[N];
    prepack_store *s = random_store(&x, N, join);
    const uint32_t *len = prepack_store_lengths(s);
    size_t groups = 0;
    const uint64_t *first = prepack_store_group_first(s, &groups);
    assert_true(join ? first != NULL : first == NULL);
    prepack_plan_options o = {0};
    o.max_seq_len = 200;
    o.algo = algo;
    o.pad_multiple = pad;
    o.overlong = PREPACK_OVERLONG_DROP;
    prepack_plan *want = NULL, *got = NULL, *joined = NULL;
    prepack_diag d = {0};
    int rc =
        first ? prepack_plan_create_groups(&want, len, N, first, groups, &o, &d)
              : prepack_plan_create(&want, len, N, &o, &d);
    assert_int_equal(rc, PREPACK_OK);
    assert_int_equal(prepack_plan_store(&got, s, &o, &d), PREPACK_OK);
    size_t njoins = first ? joins_of(first, groups, N, joins) : 0;
    assert_int_equal(
        prepack_plan_joined(&joined, len, N, joins, njoins, &o, &d),
        PREPACK_OK);
    assert_same_plan(got, want);
    assert_same_plan(joined, want);
    prepack_plan_free(want);
    prepack_plan_free(got);
    prepack_plan_free(joined);
    prepack_store_free(s);
}

static void test_plan_store_decides_groups(void **state)
{
    (void)state;
    for (int algo = 0; algo < 3; algo++)
        for (unsigned join = 0; join <= 3; join += 3) {
            check_plan_store((prepack_algo)algo, join, 1, 7u + (uint64_t)algo);
            check_plan_store((prepack_algo)algo, join, 8, 3);
        }
}

static void test_plan_store_names_input(void **state)
{
    (void)state;
    uint64_t x = 9;
    prepack_store *s = random_store(&x, 40, 0);
    const uint32_t *len = prepack_store_lengths(s);
    size_t over = 0; /* the first longest: the one overlong sequence */
    for (size_t i = 1; i < 40; i++)
        over = len[i] > len[over] ? i : over;
    prepack_plan_options o = {0};
    o.max_seq_len = len[over] - 1;
    o.overlong = PREPACK_OVERLONG_ERROR;
    prepack_plan *p = NULL;
    prepack_diag d = {0};
    char want[256];
    snprintf(want, sizeof want,
             "%s: sequence %zu has %u tokens, more than max_seq_len %u",
             over < 20 ? "a.jsonl" : "b.jsonl", over < 20 ? over : over - 20,
             len[over], len[over] - 1);
    assert_int_equal(prepack_plan_store(&p, s, &o, &d), PREPACK_EOVERLONG);
    assert_null(p);
    assert_string_equal(d.message, want);
    assert_int_equal(d.record, over);
    prepack_store_free(s);

    s = random_store(&x, 40, 1); /* each input one group */
    o.max_seq_len = 200;
    assert_int_equal(prepack_plan_store(&p, s, &o, &d), PREPACK_EOVERLONG);
    assert_int_equal(d.record, 0);
    assert_non_null(strstr(d.message, "a.jsonl: the group of sequences 0..19 "
                                      "has "));
    assert_non_null(strstr(d.message, "(sequence ids over all inputs; this "
                                      "input starts at 0; groups are placed "
                                      "whole: --overlong drop leaves them "
                                      "out)"));
    prepack_store_free(s);
}

static void test_plan_joined_refuses_bad_joins(void **state)
{
    (void)state;
    uint32_t len[4] = {3, 4, 5, 6};
    prepack_plan_options o = {0};
    o.max_seq_len = 16;
    o.overlong = PREPACK_OVERLONG_ERROR;
    prepack_plan *p = NULL;
    prepack_diag d = {0};
    uint64_t zero[1] = {0}, past[1] = {4}, falling[2] = {3, 2},
             twice[2] = {2, 2}, fine[2] = {1, 3};
    assert_int_equal(prepack_plan_joined(&p, len, 4, zero, 1, &o, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_plan_joined(&p, len, 4, past, 1, &o, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_plan_joined(&p, len, 4, falling, 2, &o, &d),
                     PREPACK_EINVAL);
    assert_int_equal(d.record, 1);
    assert_int_equal(prepack_plan_joined(&p, len, 4, twice, 2, &o, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_plan_joined(&p, len, 4, NULL, 1, &o, &d),
                     PREPACK_EINVAL);
    /* more joins than sequences 1..n-1: refused by the count, before the
     * array is read (ASan: a read past fine[] would be caught) */
    assert_int_equal(prepack_plan_joined(&p, len, 4, fine, 4, &o, &d),
                     PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "4 joins for 4 sequences"));
    assert_int_equal(prepack_plan_joined(&p, NULL, 0, fine, 1, &o, &d),
                     PREPACK_EINVAL);
    assert_null(p);
    assert_int_equal(prepack_plan_joined(&p, len, 4, fine, 2, &o, &d),
                     PREPACK_OK);
    assert_int_equal(prepack_plan_row_count(p), 2); /* {3, 4} and {5, 6} */
    assert_int_equal(prepack_plan_row_size(p, 0), 2);
    prepack_plan_free(p);
    o.overlong = PREPACK_OVERLONG_SPLIT; /* groups refuse it; none plan */
    assert_int_equal(prepack_plan_joined(&p, len, 4, fine, 2, &o, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_plan_joined(&p, len, 4, NULL, 0, &o, &d),
                     PREPACK_OK);
    prepack_plan_free(p);
    /* a group past L only once padded says both sums: 5 + 5 real tokens,
     * 8 + 8 padded, L 12 */
    uint32_t five[2] = {5, 5};
    uint64_t one[1] = {1};
    o.overlong = PREPACK_OVERLONG_ERROR;
    o.max_seq_len = 12;
    o.pad_multiple = 4;
    assert_int_equal(prepack_plan_joined(&p, five, 2, one, 1, &o, &d),
                     PREPACK_EOVERLONG);
    assert_string_equal(d.message,
                        "the group of sequences 0..1 has 10 tokens (16 with "
                        "each sequence padded to a multiple of 4), more than "
                        "max_seq_len 12");
    assert_int_equal(d.record, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_reference),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_plan_store_decides_groups),
        cmocka_unit_test(test_plan_store_names_input),
        cmocka_unit_test(test_plan_joined_refuses_bad_joins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
