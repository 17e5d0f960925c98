/* The stream packer through the public header: rows equal to a simple
 * reference (a linear scan for best fit, a sorted buffer for the
 * lookahead) on random streams and options; window 1 equals offline
 * next-fit; every token in place; a save and restore at random points
 * continues byte for byte; damaged or foreign states are refused. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_util.h"

/* ---- a reference, as plain as it can be --------------------------------- */

enum { MAXI = 4000 };

typedef struct ref_item {
    uint64_t id, arrival;
    uint32_t off, len;
} ref_item;

typedef struct ref_row {
    uint64_t number;
    uint32_t room, n;
    ref_item items[64];
} ref_row;

typedef struct ref {
    prepack_stream_options o;
    ref_row open[64];
    int nopen;
    ref_item buf[64];
    int nbuf;
    uint64_t next_row, arrival;
    ref_row out[MAXI];
    int nout;
} ref;

static void ref_close(ref *r, int k)
{
    r->out[r->nout++] = r->open[k];
    r->open[k] = r->open[--r->nopen];
}

static int ref_done(const ref *r, const ref_row *w)
{
    return w->room == 0 ||
           (r->o.max_seqs_per_row && w->n >= r->o.max_seqs_per_row);
}

/* The open row with the least room (ties: opened first): what closes
 * when the window is full, and the order rows close at flush. */
static int ref_fullest(const ref *r)
{
    int full = 0;
    for (int k = 1; k < r->nopen; k++)
        if (r->open[k].room < r->open[full].room ||
            (r->open[k].room == r->open[full].room &&
             r->open[k].number < r->open[full].number))
            full = k;
    return full;
}

static void ref_place(ref *r, ref_item it)
{
    int best = -1;
    for (int k = 0; k < r->nopen; k++) {
        ref_row *w = &r->open[k];
        if (w->room >= it.len &&
            (best < 0 || w->room < r->open[best].room ||
             (w->room == r->open[best].room &&
              w->number < r->open[best].number)))
            best = k;
    }
    if (best < 0) {
        if (r->nopen == (int)r->o.window)
            ref_close(r, ref_fullest(r));
        best = r->nopen++;
        memset(&r->open[best], 0, sizeof r->open[best]);
        r->open[best].number = r->next_row++;
        r->open[best].room = r->o.max_seq_len;
    }
    ref_row *w = &r->open[best];
    w->items[w->n++] = it;
    w->room -= it.len;
    if (ref_done(r, w))
        ref_close(r, best);
}

/* The longest buffered item (ties: first to arrive), taken. */
static ref_item ref_take(ref *r)
{
    int b = 0;
    for (int k = 1; k < r->nbuf; k++)
        if (r->buf[k].len > r->buf[b].len ||
            (r->buf[k].len == r->buf[b].len &&
             r->buf[k].arrival < r->buf[b].arrival))
            b = k;
    ref_item it = r->buf[b];
    r->buf[b] = r->buf[--r->nbuf];
    return it;
}

static void ref_push(ref *r, uint64_t id, uint32_t n)
{
    uint32_t L = r->o.max_seq_len, len = n;
    if (n == 0 || (n > L && r->o.overlong == PREPACK_OVERLONG_DROP))
        return;
    if (n > L && r->o.overlong == PREPACK_OVERLONG_TRUNCATE)
        len = L;
    uint32_t step = r->o.overlong == PREPACK_OVERLONG_SPLIT ? L : len;
    for (uint32_t off = 0; off < len; off += step) {
        ref_item it = {id, r->arrival++, off, len - off < step ? len - off : step};
        if (r->o.lookahead == 0) {
            ref_place(r, it);
            continue;
        }
        r->buf[r->nbuf++] = it;
        if (r->nbuf == (int)r->o.lookahead) /* all of it, longest first */
            while (r->nbuf)
                ref_place(r, ref_take(r));
    }
}

static void ref_flush(ref *r)
{
    while (r->nbuf)
        ref_place(r, ref_take(r));
    while (r->nopen)
        ref_close(r, ref_fullest(r));
}

/* ---- helpers --------------------------------------------------------------- */

typedef struct stream_case {
    prepack_stream_options o;
    size_t n;
    uint32_t len[300];
    uint32_t *tok[300];
    uint8_t *mask[300];
} stream_case;

static void make_case(stream_case *c, rng *g)
{
    memset(c, 0, sizeof *c);
    c->o.max_seq_len = rng_range(g, 4, 60);
    c->o.window = rng_range(g, 1, 12);
    c->o.lookahead = rng_range(g, 0, 3) ? rng_range(g, 0, 9) : 0;
    c->o.overlong = (prepack_overlong)rng_range(g, 1, 3); /* not ERROR */
    c->o.max_seqs_per_row = rng_range(g, 0, 3) ? 0 : rng_range(g, 1, 5);
    c->n = rng_range(g, 0, 300);
    for (size_t i = 0; i < c->n; i++) {
        c->len[i] = rng_range(g, 0, 3) ? rng_range(g, 0, c->o.max_seq_len)
                                       : rng_range(g, 0, 3 * c->o.max_seq_len);
        c->tok[i] = malloc((c->len[i] + 1) * sizeof(uint32_t));
        c->mask[i] = rng_range(g, 0, 2) ? NULL : malloc(c->len[i] + 1);
        for (uint32_t k = 0; k < c->len[i]; k++) {
            c->tok[i][k] = (uint32_t)(i * 1000 + k);
            if (c->mask[i])
                c->mask[i][k] = (uint8_t)(k % 2);
        }
    }
}

static void free_case(stream_case *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->tok[i]);
        free(c->mask[i]);
    }
}

/* A popped row against the reference's row k, tokens and mask included. */
static void check_row(const stream_case *c, const prepack_row *row,
                      const ref_row *want)
{
    assert_int_equal(row->num_seqs, want->n);
    uint32_t L = c->o.max_seq_len;
    assert_true(row->num_tokens <= L);
    assert_int_equal(row->cu_seqlens[0], 0);
    for (size_t j = 0; j < want->n; j++) {
        const ref_item *it = &want->items[j];
        assert_int_equal(row->seq_ids[j], it->id);
        assert_int_equal(row->cu_seqlens[j + 1] - row->cu_seqlens[j], it->len);
        if (row->seq_starts)
            assert_int_equal(row->seq_starts[j], it->off);
        const uint32_t *t = (const uint32_t *)row->input_ids;
        for (uint32_t k = 0; k < it->len; k++) {
            size_t at = (size_t)row->cu_seqlens[j] + k;
            assert_int_equal(t[at], c->tok[it->id][it->off + k]);
            uint8_t m = c->mask[it->id] ? c->mask[it->id][it->off + k] : 1;
            if (row->loss_mask)
                assert_int_equal(row->loss_mask[at], m);
            else
                assert_int_equal(m, 1);
        }
    }
}

/* Saves s and restores it into a new stream (s is freed). */
static prepack_stream *save_restore(prepack_stream *s,
                                    const prepack_stream_options *o)
{
    size_t size = 0;
    assert_int_equal(prepack_stream_save(s, NULL, 0, &size, NULL), PREPACK_OK);
    unsigned char *buf = malloc(size);
    size_t got = 0;
    assert_int_equal(prepack_stream_save(s, buf, size - 1, &got, NULL),
                     PREPACK_ERANGE);
    assert_int_equal(prepack_stream_save(s, buf, size, &got, NULL), PREPACK_OK);
    assert_int_equal(got, size);
    prepack_stream_free(s);
    prepack_stream *t = NULL;
    assert_int_equal(prepack_stream_restore(&t, buf, size, o, NULL),
                     PREPACK_OK);
    free(buf);
    return t;
}

/* Runs a case, restoring at the given push indices (and popping some
 * rows as it goes), and checks every row against the reference. */
static void run_case(const stream_case *c, const int *cuts, int ncuts, rng *g)
{
    ref *r = calloc(1, sizeof *r);
    r->o = c->o;
    prepack_stream *s = NULL;
    assert_int_equal(prepack_stream_create(&s, &c->o, NULL), PREPACK_OK);
    int popped = 0, cut = 0;
    prepack_row row;
    for (size_t i = 0; i < c->n; i++) {
        if (cut < ncuts && cuts[cut] == (int)i) {
            s = save_restore(s, &c->o);
            cut++;
        }
        assert_int_equal(prepack_stream_push(s, i, c->tok[i], c->mask[i],
                                             c->len[i], NULL),
                         PREPACK_OK);
        ref_push(r, i, c->len[i]);
        if (rng_range(g, 0, 3) == 0)
            while (prepack_stream_pop(s, &row))
                check_row(c, &row, &r->out[popped++]);
    }
    assert_int_equal(prepack_stream_flush(s, NULL), PREPACK_OK);
    ref_flush(r);
    assert_int_equal(prepack_stream_ready(s), (size_t)(r->nout - popped));
    while (prepack_stream_pop(s, &row))
        check_row(c, &row, &r->out[popped++]);
    assert_int_equal(popped, r->nout);
    prepack_stream_stats st;
    prepack_stream_get_stats(s, &st);
    assert_int_equal(st.rows, (uint64_t)r->nout);
    assert_int_equal(st.sequences, c->n);
    prepack_stream_free(s);
    free(r);
}

/* `count` random cases from `seed`, each restored at up to max_cuts
 * random push indices (rising). */
static void run_random_cases(uint64_t seed, int count, uint32_t max_cuts)
{
    rng g = {seed};
    stream_case *c = malloc(sizeof *c);
    for (int k = 0; k < count; k++) {
        make_case(c, &g);
        int cuts[4] = {0};
        int ncuts = max_cuts ? (int)rng_range(&g, 1, max_cuts) : 0;
        for (int i = 0; i < ncuts; i++)
            cuts[i] = (int)rng_range(&g, 0, (uint32_t)c->n);
        for (int i = 1; i < ncuts; i++)
            if (cuts[i] < cuts[i - 1])
                cuts[i] = cuts[i - 1];
        run_case(c, cuts, ncuts, &g);
        free_case(c);
    }
    free(c);
}

static void test_matches_the_reference(void **state)
{
    (void)state;
    run_random_cases(11, 400, 0);
}

static void test_restore_at_random_points(void **state)
{
    (void)state;
    run_random_cases(12, 300, 4);
}

static void test_window_one_is_next_fit(void **state)
{
    (void)state;
    rng g = {13};
    uint32_t len[500];
    for (int i = 0; i < 500; i++)
        len[i] = rng_range(&g, 1, 100);
    prepack_plan_options po = {.max_seq_len = 100,
                               .algo = PREPACK_ALGO_NEXTFIT};
    prepack_plan *plan = NULL;
    assert_int_equal(prepack_plan_create(&plan, len, 500, &po, NULL),
                     PREPACK_OK);
    prepack_stream_options so = {.max_seq_len = 100, .window = 1};
    prepack_stream *s = NULL;
    assert_int_equal(prepack_stream_create(&s, &so, NULL), PREPACK_OK);
    for (int i = 0; i < 500; i++)
        assert_int_equal(prepack_stream_push(s, (uint64_t)i, NULL, NULL,
                                             len[i], NULL),
                         PREPACK_OK);
    assert_int_equal(prepack_stream_flush(s, NULL), PREPACK_OK);
    prepack_row row;
    size_t r = 0;
    while (prepack_stream_pop(s, &row)) {
        assert_null(row.input_ids);
        assert_int_equal(row.num_seqs, prepack_plan_row_size(plan, r));
        for (size_t j = 0; j < row.num_seqs; j++)
            assert_int_equal(row.seq_ids[j],
                             prepack_plan_item(plan, r, j).seq_id);
        r++;
    }
    assert_int_equal(r, prepack_plan_row_count(plan));
    prepack_stream_free(s);
    prepack_plan_free(plan);
}

static void test_refusals(void **state)
{
    (void)state;
    prepack_stream *s = NULL;
    prepack_stream_options bad = {0};
    assert_int_equal(prepack_stream_create(&s, &bad, NULL), PREPACK_EINVAL);
    prepack_stream_options o = {.max_seq_len = 8, .window = 4, .lookahead = 2};
    assert_int_equal(prepack_stream_create(&s, &o, NULL), PREPACK_OK);
    uint32_t t[20] = {1, 2, 3};
    prepack_diag d = {0};
    assert_int_equal(prepack_stream_push(s, 0, t, NULL, 20, &d),
                     PREPACK_EOVERLONG);
    assert_int_equal(prepack_stream_push(s, 1, t, NULL, 3, NULL), PREPACK_OK);
    assert_int_equal(prepack_stream_push(s, 2, NULL, NULL, 3, &d),
                     PREPACK_EINVAL); /* tokens with all or none */
    assert_int_equal(prepack_stream_push(s, 3, t, NULL, 5, NULL), PREPACK_OK);
    assert_int_equal(prepack_stream_push(s, 4, t, NULL, 2, NULL), PREPACK_OK);
    size_t size = 0;
    assert_int_equal(prepack_stream_save(s, NULL, 0, &size, NULL), PREPACK_OK);
    unsigned char *buf = malloc(size);
    assert_int_equal(prepack_stream_save(s, buf, size, &size, NULL),
                     PREPACK_OK);
    prepack_stream *t2 = NULL;
    prepack_stream_options other = o;
    other.window = 5;
    assert_int_equal(prepack_stream_restore(&t2, buf, size, &other, &d),
                     PREPACK_EINVAL);
    assert_int_equal(prepack_stream_restore(&t2, buf, size - 1, &o, &d),
                     PREPACK_ECORRUPT);
    for (size_t i = 0; i < size; i += 7) { /* every 7th byte flipped */
        buf[i] ^= 0x10;
        int rc = prepack_stream_restore(&t2, buf, size, &o, &d);
        assert_true(rc == PREPACK_ECORRUPT || rc == PREPACK_EINVAL);
        assert_null(t2);
        buf[i] ^= 0x10;
    }
    assert_int_equal(prepack_stream_restore(&t2, buf, size, &o, NULL),
                     PREPACK_OK);
    prepack_stream_free(t2);
    free(buf);
    prepack_stream_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_the_reference),
        cmocka_unit_test(test_restore_at_random_points),
        cmocka_unit_test(test_window_one_is_next_fit),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
