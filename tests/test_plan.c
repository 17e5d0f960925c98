/* The planner, through the public header: examples, options, failures, and
 * property tests against the reference planner in ref_plan.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "ref_plan.h"
#include "test_util.h"

static prepack_plan *plan_or_fail(const uint32_t *lengths, size_t n,
                                  prepack_plan_options o)
{
    prepack_diag d = {0};
    prepack_plan *p = NULL;
    int rc = prepack_plan_create(&p, lengths, n, &o, &d);
    if (rc != PREPACK_OK)
        fail_msg("plan failed: %s: %s", prepack_strerror(rc), d.message);
    return p;
}

/* Row `row` as "seq seq seq" for readable expectations. */
static void row_ids(const prepack_plan *p, size_t row, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (size_t k = 0; k < prepack_plan_row_size(p, row); k++) {
        prepack_item it = prepack_plan_item(p, row, k);
        size_t used = strlen(buf);
        snprintf(buf + used, cap - used, "%s%llu", k ? " " : "",
                 (unsigned long long)it.seq_id);
    }
}

static void assert_rows(const prepack_plan *p, const char *const *want,
                        size_t rows)
{
    assert_int_equal(prepack_plan_row_count(p), rows);
    char buf[256];
    for (size_t r = 0; r < rows; r++) {
        row_ids(p, r, buf, sizeof buf);
        assert_string_equal(buf, want[r]);
    }
}

/* ---- examples ------------------------------------------------------------ */

static void test_readme_example(void **state)
{
    (void)state;
    /* 4 prompts of 7, 9, 6, 10 tokens at L = 16: two full rows. */
    uint32_t len[] = {7, 9, 6, 10};
    prepack_plan_options o = {.max_seq_len = 16};
    prepack_plan *p = plan_or_fail(len, 4, o);
    const char *want[] = {"3 2", "1 0"};
    assert_rows(p, want, 2);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    assert_int_equal(s.rows, 2);
    assert_int_equal(s.lower_bound, 2);
    assert_int_equal(s.tokens, 32);
    assert_true(s.efficiency == 1.0);
    assert_int_equal(prepack_plan_row_tokens(p, 0), 16);
    assert_int_equal(prepack_plan_item_count(p), 4);
    prepack_plan_free(p);
}

static void test_ffd_and_bfd_differ(void **state)
{
    (void)state;
    /* Sorted: 8(2) 5(0) 4(4) 3(1) 1(3). The last item fits rows 0 (free 2)
     * and 1 (free 1): first fit takes row 0, best fit row 1. */
    uint32_t len[] = {5, 3, 8, 1, 4};
    prepack_plan_options o = {.max_seq_len = 10};
    prepack_plan *p = plan_or_fail(len, 5, o);
    const char *ffd[] = {"2 3", "0 4", "1"};
    assert_rows(p, ffd, 3);
    prepack_plan_free(p);
    o.algo = PREPACK_ALGO_BFD;
    p = plan_or_fail(len, 5, o);
    const char *bfd[] = {"2", "0 4 3", "1"};
    assert_rows(p, bfd, 3);
    prepack_plan_free(p);
}

static void test_next_fit_keeps_input_order(void **state)
{
    (void)state;
    uint32_t len[] = {5, 3, 8, 1, 4};
    prepack_plan_options o = {.max_seq_len = 10, .algo = PREPACK_ALGO_NEXTFIT};
    prepack_plan *p = plan_or_fail(len, 5, o);
    const char *want[] = {"0 1", "2 3", "4"};
    assert_rows(p, want, 3);
    prepack_plan_free(p);
}

static void test_empty_input(void **state)
{
    (void)state;
    for (int algo = 0; algo < 3; algo++) {
        prepack_plan_options o = {.max_seq_len = 8, .algo = (prepack_algo)algo};
        prepack_plan *p = plan_or_fail(NULL, 0, o);
        prepack_plan_stats s;
        prepack_plan_get_stats(p, &s);
        assert_int_equal(prepack_plan_row_count(p), 0);
        assert_int_equal(s.rows, 0);
        assert_int_equal(s.lower_bound, 0);
        assert_true(s.efficiency == 0.0);
        prepack_plan_free(p);
    }
}

static void test_zero_length_skipped(void **state)
{
    (void)state;
    uint32_t len[] = {0, 3, 0, 0, 5};
    prepack_plan_options o = {.max_seq_len = 8};
    prepack_plan *p = plan_or_fail(len, 5, o);
    const char *want[] = {"4 1"};
    assert_rows(p, want, 1);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    assert_int_equal(s.zero_length, 3);
    assert_int_equal(s.sequences, 5);
    assert_int_equal(s.items, 2);
    prepack_plan_free(p);
}

static void test_overlong_error_names_sequence(void **state)
{
    (void)state;
    uint32_t len[] = {3, 9, 12, 4};
    prepack_diag d = {0};
    prepack_plan_options o = {.max_seq_len = 8};
    prepack_plan *p = (prepack_plan *)&d; /* must be reset to NULL */
    assert_int_equal(prepack_plan_create(&p, len, 4, &o, &d),
                     PREPACK_EOVERLONG);
    assert_null(p);
    assert_int_equal(d.code, PREPACK_EOVERLONG);
    assert_int_equal(d.record, 1);
    assert_string_equal(d.message,
                        "sequence 1 has 9 tokens, more than max_seq_len 8");
}

static void test_overlong_truncate(void **state)
{
    (void)state;
    uint32_t len[] = {3, 9, 12};
    prepack_plan_options o = {.max_seq_len = 8,
                              .overlong = PREPACK_OVERLONG_TRUNCATE};
    prepack_plan *p = plan_or_fail(len, 3, o);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    assert_int_equal(s.overlong, 2);
    assert_int_equal(s.truncated_tokens, 1 + 4);
    assert_int_equal(s.tokens, 3 + 8 + 8);
    assert_int_equal(s.rows, 3);
    prepack_item it = prepack_plan_item(p, 0, 0);
    assert_int_equal(it.seq_id, 1);
    assert_int_equal(it.length, 8);
    assert_int_equal(it.offset, 0);
    prepack_plan_free(p);
}

static void test_overlong_split(void **state)
{
    (void)state;
    uint32_t len[] = {3, 20, 5};
    prepack_plan_options o = {.max_seq_len = 8,
                              .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_plan *p = plan_or_fail(len, 3, o);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    assert_int_equal(s.overlong, 1);
    assert_int_equal(s.split_chunks, 3);
    assert_int_equal(s.items, 5);
    assert_int_equal(s.tokens, 28);
    /* Items, longest first: 1@0 (8), 1@8 (8), 2 (5), 1@16 (4), 0 (3).
     * Rows: {1@0} {1@8} {2 0} {1@16}: the 4-token tail does not fit
     * beside sequence 2, and sequence 0 goes to the first row with room. */
    prepack_item items[8];
    size_t total = 0;
    for (size_t r = 0; r < prepack_plan_row_count(p); r++) {
        size_t k = prepack_plan_row_items(p, r, items, 8);
        for (size_t i = 0; i < k; i++)
            if (items[i].seq_id == 1) {
                assert_int_equal(items[i].offset % 8, 0);
                assert_int_equal(items[i].length,
                                 items[i].offset == 16 ? 4 : 8);
                total += items[i].length;
            }
    }
    assert_int_equal(total, 20);
    assert_int_equal(s.rows, 4);
    prepack_plan_free(p);
}

static void test_overlong_drop(void **state)
{
    (void)state;
    uint32_t len[] = {3, 20, 5, 9};
    prepack_plan_options o = {.max_seq_len = 8,
                              .overlong = PREPACK_OVERLONG_DROP};
    prepack_plan *p = plan_or_fail(len, 4, o);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    assert_int_equal(s.dropped_sequences, 2);
    assert_int_equal(s.dropped_tokens, 29);
    assert_int_equal(s.input_tokens, 37);
    const char *want[] = {"2 0"};
    assert_rows(p, want, 1);
    prepack_plan_free(p);
}

static void test_max_seqs_per_row(void **state)
{
    (void)state;
    uint32_t len[] = {1, 1, 1, 1, 1, 1, 1};
    for (int algo = 0; algo < 3; algo++) {
        prepack_plan_options o = {.max_seq_len = 100,
                                  .max_seqs_per_row = 3,
                                  .algo = (prepack_algo)algo};
        prepack_plan *p = plan_or_fail(len, 7, o);
        const char *want[] = {"0 1 2", "3 4 5", "6"};
        assert_rows(p, want, 3);
        prepack_plan_free(p);
    }
}

static void test_invalid_options(void **state)
{
    (void)state;
    uint32_t len[] = {1};
    prepack_plan *p = NULL;
    prepack_diag d;
    prepack_plan_options o = {.max_seq_len = 0};
    assert_int_equal(prepack_plan_create(&p, len, 1, &o, &d), PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "max_seq_len"));
    o.max_seq_len = PREPACK_MAX_SEQ_LEN_LIMIT + 1;
    assert_int_equal(prepack_plan_create(&p, len, 1, &o, &d), PREPACK_EINVAL);
    o.max_seq_len = 8;
    o.algo = (prepack_algo)7;
    assert_int_equal(prepack_plan_create(&p, len, 1, &o, &d), PREPACK_EINVAL);
    o.algo = PREPACK_ALGO_FFD;
    o.overlong = (prepack_overlong)9;
    assert_int_equal(prepack_plan_create(&p, len, 1, &o, &d), PREPACK_EINVAL);
    o.overlong = PREPACK_OVERLONG_ERROR;
    assert_int_equal(prepack_plan_create(&p, NULL, 1, &o, &d), PREPACK_EINVAL);
    prepack_allocator half = {ca_malloc, NULL, ca_free, NULL};
    o.allocator = &half;
    assert_int_equal(prepack_plan_create(&p, len, 1, &o, &d), PREPACK_EINVAL);
    o.allocator = NULL;
    assert_int_equal(prepack_plan_create(NULL, len, 1, &o, &d), PREPACK_EINVAL);
    assert_int_equal(prepack_plan_create(&p, len, 1, NULL, &d), PREPACK_EINVAL);
    assert_null(p);
    prepack_plan_free(NULL);
}

static void test_names_and_errors(void **state)
{
    (void)state;
    assert_string_equal(prepack_version(), PREPACK_VERSION_STRING);
    const char *deps[] = {"zstd", "msgpack-c", "simdjson", "xxhash"};
    for (int i = 0; i < 4; i++) {
        const char *v = prepack_dependency_version(deps[i]);
        assert_non_null(v);
        assert_true(v[0] >= '0' && v[0] <= '9' && strchr(v, '.') != NULL);
    }
    assert_null(prepack_dependency_version("zlib-ng"));
    assert_null(prepack_dependency_version(NULL));
    const char *algos[] = {"ffd", "bfd", "nextfit"};
    for (int i = 0; i < 3; i++) {
        prepack_algo a;
        assert_int_equal(prepack_algo_parse(algos[i], &a), PREPACK_OK);
        assert_int_equal(a, i);
        assert_string_equal(prepack_algo_name(a), algos[i]);
    }
    const char *pol[] = {"error", "truncate", "split", "drop"};
    for (int i = 0; i < 4; i++) {
        prepack_overlong v;
        assert_int_equal(prepack_overlong_parse(pol[i], &v), PREPACK_OK);
        assert_int_equal(v, i);
        assert_string_equal(prepack_overlong_name(v), pol[i]);
    }
    prepack_algo a;
    prepack_overlong v;
    assert_int_equal(prepack_algo_parse("FFD", &a), PREPACK_EINVAL);
    assert_int_equal(prepack_overlong_parse("", &v), PREPACK_EINVAL);
    assert_null(prepack_algo_name((prepack_algo)3));
    assert_null(prepack_overlong_name((prepack_overlong)-1));
    for (int code = 0; code >= -7; code--)
        assert_string_not_equal(prepack_strerror(code), "unknown error");
    assert_string_equal(prepack_strerror(-100), "unknown error");
    assert_string_equal(prepack_version(), PREPACK_VERSION_STRING);
}

/* ---- shuffling ----------------------------------------------------------- */

static void test_shuffle_permutes_rows(void **state)
{
    (void)state;
    enum { N = 500 };
    uint32_t len[N];
    rng r = {42};
    for (size_t i = 0; i < N; i++)
        len[i] = rng_range(&r, 1, 64);
    prepack_plan_options o = {.max_seq_len = 64};
    prepack_plan *base = plan_or_fail(len, N, o);
    o.shuffle_rows = 1;
    o.shuffle_seed = 7;
    prepack_plan *a = plan_or_fail(len, N, o);
    prepack_plan *b = plan_or_fail(len, N, o);
    o.shuffle_seed = 8;
    prepack_plan *c = plan_or_fail(len, N, o);
    size_t rows = prepack_plan_row_count(base);
    assert_true(rows > 50);
    assert_int_equal(prepack_plan_row_count(a), rows);
    /* Each shuffled row is some base row: match by its first sequence,
     * which is unique per row. */
    size_t *where = calloc(N, sizeof *where);
    for (size_t i = 0; i < rows; i++)
        where[prepack_plan_item(base, i, 0).seq_id] = i + 1;
    int *seen = calloc(rows, sizeof *seen);
    size_t moved = 0, differ = 0;
    char x[512], y[512];
    for (size_t i = 0; i < rows; i++) {
        size_t from = where[prepack_plan_item(a, i, 0).seq_id];
        assert_true(from > 0);
        assert_false(seen[from - 1]);
        seen[from - 1] = 1;
        row_ids(a, i, x, sizeof x);
        row_ids(base, from - 1, y, sizeof y);
        assert_string_equal(x, y);
        moved += from - 1 != i;
        row_ids(b, i, y, sizeof y);
        assert_string_equal(x, y); /* same seed, same order */
        row_ids(c, i, y, sizeof y);
        differ += strcmp(x, y) != 0;
    }
    assert_true(moved > rows / 2);
    assert_true(differ > rows / 2);
    free(seen);
    free(where);
    prepack_plan_free(a);
    prepack_plan_free(b);
    prepack_plan_free(c);
    prepack_plan_free(base);
}

/* ---- property tests --------------------------------------------------------- */

typedef struct instance {
    uint64_t seed;
    const char *family;
    uint32_t *len;
    size_t n;
    prepack_plan_options o;
} instance;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            print_error("seed %llu family %s n %zu L %u algo %s overlong %s "  \
                        "K %u: ",                                              \
                        (unsigned long long)in->seed, in->family, in->n,       \
                        in->o.max_seq_len, prepack_algo_name(in->o.algo),      \
                        prepack_overlong_name(in->o.overlong),                 \
                        in->o.max_seqs_per_row);                               \
            fail_msg(__VA_ARGS__);                                             \
        }                                                                      \
    } while (0)

static int cmp_item(const void *a, const void *b)
{
    const prepack_item *x = a, *y = b;
    if (x->seq_id != y->seq_id)
        return x->seq_id < y->seq_id ? -1 : 1;
    return x->offset < y->offset ? -1 : (x->offset > y->offset);
}

/* Checks, without the reference: every sequence's tokens placed exactly
 * as its policy says, no row over L or K, rows >= lower bound. */
static void check_invariants(const instance *in, const prepack_plan *p)
{
    uint32_t L = in->o.max_seq_len, K = in->o.max_seqs_per_row;
    size_t rows = prepack_plan_row_count(p), m = prepack_plan_item_count(p);
    prepack_item *all = malloc((m + 1) * sizeof *all);
    size_t got = 0;
    uint64_t tokens = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t k = prepack_plan_row_items(p, r, all + got, m - got);
        CHECK(k >= 1, "row %zu is empty", r);
        CHECK(K == 0 || k <= K, "row %zu holds %zu > K", r, k);
        uint32_t t = prepack_plan_row_tokens(p, r);
        CHECK(t <= L, "row %zu holds %u tokens > L", r, t);
        got += k;
        tokens += t;
    }
    CHECK(got == m, "rows hold %zu items, plan says %zu", got, m);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    CHECK(s.tokens == tokens && s.rows == rows, "stats disagree");
    CHECK(rows >= (tokens + L - 1) / L, "fewer rows than the lower bound");
    CHECK(s.lower_bound >= (tokens + L - 1) / L && s.lower_bound <= rows,
          "lower bound %llu outside [ceil(tokens / L), rows]",
          (unsigned long long)s.lower_bound);
    if ((uint64_t)m * (L / 2 + 1) <= 20000000) { /* the definition, O(m L) */
        uint32_t *lens = malloc((m + 1) * sizeof *lens);
        for (size_t i = 0; i < m; i++)
            lens[i] = all[i].length;
        uint64_t want = ref_lower_bound(lens, m, L, K);
        free(lens);
        CHECK(s.lower_bound == want, "lower bound %llu, by definition %llu",
              (unsigned long long)s.lower_bound, (unsigned long long)want);
    }

    qsort(all, m, sizeof *all, cmp_item);
    size_t j = 0;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t l = in->len[i];
        uint64_t off = 0;
        int keep = l > 0 && (l <= L || in->o.overlong != PREPACK_OVERLONG_DROP);
        uint32_t want =
            l > L && in->o.overlong == PREPACK_OVERLONG_TRUNCATE ? L : l;
        while (keep && off < want) {
            uint32_t chunk = want - off < L ? (uint32_t)(want - off) : L;
            CHECK(j < m && all[j].seq_id == i && all[j].offset == off &&
                      all[j].length == chunk,
                  "sequence %zu: tokens from %llu not placed once", i,
                  (unsigned long long)off);
            off += chunk;
            j++;
        }
    }
    CHECK(j == m, "%zu items belong to no sequence", m - j);
    free(all);
}

static void check_against_reference(const instance *in)
{
    prepack_diag d = {0};
    prepack_plan_options o = in->o;
    prepack_plan *p = NULL;
    int rc = prepack_plan_create(&p, in->len, in->n, &o, &d);
    ref_plan ref;
    size_t bad = SIZE_MAX;
    int want = ref_plan_build(in->len, in->n, o.max_seq_len, o.algo, o.overlong,
                              o.max_seqs_per_row, &ref, &bad);
    CHECK(rc == want, "rc %d, reference %d", rc, want);
    if (rc != PREPACK_OK) {
        CHECK(d.record == bad, "error names %llu, first overlong is %zu",
              (unsigned long long)d.record, bad);
        return;
    }
    CHECK(prepack_plan_row_count(p) == ref.rows, "%zu rows, reference %zu",
          prepack_plan_row_count(p), ref.rows);
    for (size_t r = 0; r < ref.rows; r++) {
        size_t size = ref.row_start[r + 1] - ref.row_start[r];
        CHECK(prepack_plan_row_size(p, r) == size, "row %zu size", r);
        for (size_t k = 0; k < size; k++) {
            prepack_item a = prepack_plan_item(p, r, k);
            prepack_item b = ref.entry[ref.row_start[r] + k];
            CHECK(a.seq_id == b.seq_id && a.offset == b.offset &&
                      a.length == b.length,
                  "row %zu item %zu: seq %llu@%u+%u, reference %llu@%u+%u", r,
                  k, (unsigned long long)a.seq_id, a.offset, a.length,
                  (unsigned long long)b.seq_id, b.offset, b.length);
        }
    }
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    CHECK(s.zero_length == ref.zero_length && s.overlong == ref.overlong &&
              s.truncated_tokens == ref.truncated_tokens &&
              s.split_chunks == ref.split_chunks &&
              s.dropped_sequences == ref.dropped_sequences &&
              s.dropped_tokens == ref.dropped_tokens &&
              s.tokens == ref.tokens && s.items == ref.items,
          "counts differ from the reference");
    check_invariants(in, p);
    ref_plan_free(&ref);
    prepack_plan_free(p);
}

enum family {
    F_UNIFORM,
    F_SKEWED,
    F_ALL_EQUAL,
    F_ALL_L,
    F_ALL_ONE,
    F_OVER_HALF,
    F_UNDER_HALF,
    F_POW2,
    F_WITH_OVERLONG,
    F_COUNT
};
static const char *const family_names[] = {
    "uniform",        "skewed",      "all-equal",
    "all-L",          "all-1",       "just-over-L/2",
    "just-under-L/2", "powers-of-2", "with-overlong-and-zero"};

static uint32_t draw_length(rng *r, enum family f, uint32_t L, uint32_t eq)
{
    uint32_t h = L / 2;
    switch (f) {
    case F_UNIFORM:
        return rng_range(r, 1, L);
    case F_SKEWED: { /* many short, few long: a product of uniforms */
        uint64_t a = rng_range(r, 1, L), b = rng_range(r, 1, L);
        return (uint32_t)(a * b / L) + 1 > L ? L : (uint32_t)(a * b / L) + 1;
    }
    case F_ALL_EQUAL:
        return eq;
    case F_ALL_L:
        return L;
    case F_ALL_ONE:
        return 1;
    case F_OVER_HALF: {
        uint32_t v = h + rng_range(r, 1, 3);
        return v > L ? L : v;
    }
    case F_UNDER_HALF: {
        uint32_t d = rng_range(r, 0, 2);
        return h > d ? h - d : 1;
    }
    case F_POW2: {
        uint32_t bits = 0;
        while ((2u << bits) <= L)
            bits++;
        return 1u << rng_range(r, 0, bits);
    }
    default: { /* zeros, overlong, and everything between */
        uint32_t pick = rng_range(r, 0, 9);
        if (pick == 0)
            return 0;
        if (pick == 1)
            return rng_range(r, L + 1, 3 * L + 2);
        return rng_range(r, 1, L);
    }
    }
}

static void random_instance(instance *in, rng *r, size_t max_n)
{
    static const uint32_t Ls[] = {1, 2, 3, 7, 16, 64, 100, 512, 4096};
    in->seed = r->s;
    enum family f = (enum family)rng_range(r, 0, F_COUNT - 1);
    in->family = family_names[f];
    in->n = rng_range(r, 0, (uint32_t)max_n);
    memset(&in->o, 0, sizeof in->o);
    in->o.max_seq_len = rng_range(r, 0, 3) == 0 ? rng_range(r, 1, 5000)
                                                : Ls[rng_range(r, 0, 8)];
    in->o.algo = (prepack_algo)rng_range(r, 0, 2);
    in->o.overlong = (prepack_overlong)rng_range(r, 0, 3);
    in->o.max_seqs_per_row = rng_range(r, 0, 2) == 0 ? rng_range(r, 1, 5) : 0;
    uint32_t eq = rng_range(r, 1, in->o.max_seq_len);
    for (size_t i = 0; i < in->n; i++)
        in->len[i] = draw_length(r, f, in->o.max_seq_len, eq);
}

static void test_property_random(void **state)
{
    (void)state;
    enum { CASES = 6000, MAX_N = 300 };
    uint32_t len[MAX_N];
    rng r = {20261126};
    for (int c = 0; c < CASES; c++) {
        instance in = {.len = len};
        random_instance(&in, &r, MAX_N);
        check_against_reference(&in);
    }
}

/* Bigger instances of each family, every algorithm and policy: enough
 * rows to grow the row index past its first guess. */
static void test_property_adversarial(void **state)
{
    (void)state;
    enum { N = 2000 };
    uint32_t *len = malloc(N * sizeof *len);
    static const uint32_t Ls[] = {1, 2, 10, 512, 4096};
    rng r = {99};
    for (int f = 0; f < F_COUNT; f++)
        for (size_t li = 0; li < 5; li++)
            for (int algo = 0; algo < 3; algo++)
                for (int pol = 1; pol < 4; pol++) {
                    /* the policy matters only where sequences are overlong */
                    if (f != F_WITH_OVERLONG && pol != 1)
                        continue;
                    instance in = {.seed = r.s,
                                   .family = family_names[f],
                                   .len = len,
                                   .n = N};
                    in.o.max_seq_len = Ls[li];
                    in.o.algo = (prepack_algo)algo;
                    in.o.overlong = (prepack_overlong)pol;
                    in.o.max_seqs_per_row = (algo + pol) % 3 == 0 ? 4 : 0;
                    uint32_t eq = rng_range(&r, 1, Ls[li]);
                    for (size_t i = 0; i < N; i++)
                        len[i] = draw_length(&r, (enum family)f, Ls[li], eq);
                    check_against_reference(&in);
                }
    free(len);
}

/* The lower bound is one: no plan beats it. Tiny instances against the
 * exhaustive optimum; and it must be tighter than ceil(tokens / L) where
 * long items cannot share rows. */
static void test_lower_bound_never_above_optimum(void **state)
{
    (void)state;
    rng r = {42};
    size_t tighter = 0, exact = 0, runs = 3000;
    for (size_t t = 0; t < runs; t++) {
        uint32_t L = rng_range(&r, 2, 24), len[10];
        size_t n = rng_range(&r, 1, 10);
        uint64_t tokens = 0;
        for (size_t i = 0; i < n; i++) {
            len[i] = rng_range(&r, 1, L);
            tokens += len[i];
        }
        prepack_plan_options o = {.max_seq_len = L};
        prepack_plan *p = plan_or_fail(len, n, o);
        prepack_plan_stats s;
        prepack_plan_get_stats(p, &s);
        /* the search wants the items' lengths, longest first */
        uint32_t w[10];
        size_t m = 0;
        for (size_t row = 0; row < prepack_plan_row_count(p); row++)
            for (size_t k = 0; k < prepack_plan_row_size(p, row); k++)
                w[m++] = prepack_plan_item(p, row, k).length;
        for (size_t a = 1; a < m; a++) /* insertion sort, descending */
            for (size_t b = a; b > 0 && w[b - 1] < w[b]; b--) {
                uint32_t x = w[b];
                w[b] = w[b - 1];
                w[b - 1] = x;
            }
        size_t opt = ref_optimum_rows(w, m, L);
        if (s.lower_bound > opt)
            fail_msg("lower bound %llu above the optimum %zu (L %u, n %zu)",
                     (unsigned long long)s.lower_bound, opt, L, n);
        tighter += s.lower_bound > (tokens + L - 1) / L;
        exact += s.lower_bound == opt;
        prepack_plan_free(p);
    }
    assert_true(tighter > 0);
    print_message("lower bound: tighter than ceil(tokens / L) in %zu of %zu, "
                  "equal to the optimum in %zu\n",
                  tighter, runs, exact);
}

/* Four items of 6 at L = 10: ceil(24 / 10) = 3, but no two share a row. */
static void test_lower_bound_counts_long_items(void **state)
{
    (void)state;
    uint32_t len[4] = {6, 6, 6, 6};
    prepack_plan_options o = {.max_seq_len = 10};
    prepack_plan *p = plan_or_fail(len, 4, o);
    prepack_plan_stats s;
    prepack_plan_get_stats(p, &s);
    assert_int_equal(s.lower_bound, 4);
    assert_int_equal(s.rows, 4);
    prepack_plan_free(p);
    /* max_seqs_per_row: 6 items of 1, K = 2 -> 3 rows */
    uint32_t ones[6] = {1, 1, 1, 1, 1, 1};
    prepack_plan_options k2 = {.max_seq_len = 10, .max_seqs_per_row = 2};
    p = plan_or_fail(ones, 6, k2);
    prepack_plan_get_stats(p, &s);
    assert_int_equal(s.lower_bound, 3);
    prepack_plan_free(p);
}

static void test_single_sequence_and_L1(void **state)
{
    (void)state;
    uint32_t one[] = {5};
    uint32_t ones[] = {1, 1, 1};
    for (int algo = 0; algo < 3; algo++) {
        instance in = {.family = "single", .len = one, .n = 1};
        in.o.max_seq_len = 5;
        in.o.algo = (prepack_algo)algo;
        check_against_reference(&in);
        instance l1 = {.family = "L=1", .len = ones, .n = 3};
        l1.o.max_seq_len = 1;
        l1.o.algo = (prepack_algo)algo;
        check_against_reference(&l1);
    }
}

/* The largest L: the best-fit bitset has all its levels. */
static void test_largest_max_seq_len(void **state)
{
    (void)state;
    enum { N = 400 };
    uint32_t len[N];
    rng r = {5};
    for (int algo = 0; algo < 3; algo++) {
        for (size_t i = 0; i < N; i++)
            len[i] = rng_range(&r, 1, PREPACK_MAX_SEQ_LEN_LIMIT);
        instance in = {.family = "largest-L", .len = len, .n = N};
        in.o.max_seq_len = PREPACK_MAX_SEQ_LEN_LIMIT;
        in.o.algo = (prepack_algo)algo;
        check_against_reference(&in);
    }
}

/* Rows longer than the insertion-sort cutoff, holding split chunks: the
 * merge-sort path of the layout, offsets included. */
static void test_long_rows_with_split_chunks(void **state)
{
    (void)state;
    enum { N = 260 };
    uint32_t len[N];
    for (size_t i = 0; i < N; i++)
        len[i] = i % 13 == 0 ? 65 + (uint32_t)(i % 3) : 1;
    for (int algo = 0; algo < 3; algo++) {
        instance in = {.family = "long-rows-split", .len = len, .n = N};
        in.o.max_seq_len = 64;
        in.o.algo = (prepack_algo)algo;
        in.o.overlong = PREPACK_OVERLONG_SPLIT;
        check_against_reference(&in);
    }
}

/* More items than a plan holds is refused before anything is allocated. */
static void test_too_many_items(void **state)
{
    (void)state;
    uint32_t len[] = {UINT32_MAX, UINT32_MAX};
    prepack_diag d = {0};
    prepack_plan_options o = {.max_seq_len = 1,
                              .overlong = PREPACK_OVERLONG_SPLIT};
    prepack_plan *p = NULL;
    assert_int_equal(prepack_plan_create(&p, len, 2, &o, &d), PREPACK_ERANGE);
    assert_null(p);
    assert_non_null(strstr(d.message, "plan in partitions"));
    /* n itself over the limit: refused before lengths are read */
    o.overlong = PREPACK_OVERLONG_ERROR;
    assert_int_equal(prepack_plan_create(&p, len, (size_t)UINT32_MAX, &o, &d),
                     PREPACK_ERANGE);
}

/* ---- allocation failure ------------------------------------------------------ */

/* Fails each allocation in turn: the call must return ENOMEM with no plan
 * and nothing left allocated, until it succeeds. */
/* Fails allocation 0, 1, 2, ... of prepack_plan_create in turn: each must
 * give ENOMEM, no plan, nothing left allocated; returns how many failed
 * before it succeeded. */
static size_t fail_each_allocation(const uint32_t *len, size_t n,
                                   prepack_plan_options o)
{
    for (size_t k = 0;; k++) {
        counting_alloc ca = {0, k, 0};
        prepack_allocator a = counting_allocator(&ca);
        o.allocator = &a;
        prepack_plan *p = NULL;
        int rc = prepack_plan_create(&p, len, n, &o, NULL);
        if (rc == PREPACK_OK) {
            assert_true(ca.live > 0);
            prepack_plan_free(p);
            assert_int_equal(ca.live, 0);
            return k;
        }
        assert_int_equal(rc, PREPACK_ENOMEM);
        assert_null(p);
        assert_int_equal(ca.live, 0);
    }
}

static void test_every_allocation_failure(void **state)
{
    (void)state;
    enum { N = 2000 };
    uint32_t *len = malloc(N * sizeof *len);
    rng r = {3};
    for (size_t i = 0; i < N; i++)
        len[i] = rng_range(&r, 0, 40); /* zeros and overlong at L = 32 */
    for (int algo = 0; algo < 3; algo++)
        for (int pol = 1; pol < 4; pol++) {
            prepack_plan_options o = {.max_seq_len = 32,
                                      .algo = (prepack_algo)algo,
                                      .overlong = (prepack_overlong)pol,
                                      .shuffle_rows = 1};
            /* it did fail some allocations */
            assert_true(fail_each_allocation(len, N, o) >= 3);
        }
    free(len);
}

/* The same where the row arrays must grow past their first guess (many
 * items over L/2 each open a row), and where rows are long enough for the
 * layout's merge-sort scratch. */
static void test_allocation_failure_while_growing(void **state)
{
    (void)state;
    enum { N = 3000 };
    uint32_t *len = malloc(N * sizeof *len);
    for (int shape = 0; shape < 2; shape++) {
        for (size_t i = 0; i < N; i++)
            len[i] = shape == 0 ? (i < N / 2 ? 40 : 1) /* grows */
                                : (i < 100 ? 40 : 1);  /* rows of 64 ones */
        for (int algo = 0; algo < 2; algo++) {
            prepack_plan_options o = {.max_seq_len = 64,
                                      .algo = (prepack_algo)algo};
            fail_each_allocation(len, N, o);
        }
    }
    free(len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readme_example),
        cmocka_unit_test(test_ffd_and_bfd_differ),
        cmocka_unit_test(test_next_fit_keeps_input_order),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_zero_length_skipped),
        cmocka_unit_test(test_overlong_error_names_sequence),
        cmocka_unit_test(test_overlong_truncate),
        cmocka_unit_test(test_overlong_split),
        cmocka_unit_test(test_overlong_drop),
        cmocka_unit_test(test_max_seqs_per_row),
        cmocka_unit_test(test_invalid_options),
        cmocka_unit_test(test_names_and_errors),
        cmocka_unit_test(test_shuffle_permutes_rows),
        cmocka_unit_test(test_lower_bound_never_above_optimum),
        cmocka_unit_test(test_lower_bound_counts_long_items),
        cmocka_unit_test(test_single_sequence_and_L1),
        cmocka_unit_test(test_largest_max_seq_len),
        cmocka_unit_test(test_property_random),
        cmocka_unit_test(test_property_adversarial),
        cmocka_unit_test(test_long_rows_with_split_chunks),
        cmocka_unit_test(test_too_many_items),
        cmocka_unit_test(test_every_allocation_failure),
        cmocka_unit_test(test_allocation_failure_while_growing),
    };
    return cmocka_run_group_tests_name("plan", tests, NULL, NULL);
}
