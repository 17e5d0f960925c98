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
#include <xxhash.h>

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

/* ---- restored rows equal the uninterrupted run's, field by field -------- */

/* Every field of two popped rows (a copy of one view and the other view). */
static void assert_rows_equal(const prepack_row *a, const prepack_row *b)
{
    assert_int_equal(a->num_tokens, b->num_tokens);
    assert_int_equal(a->num_seqs, b->num_seqs);
    assert_int_equal(a->token_dtype, b->token_dtype);
    size_t t = a->num_tokens, k = a->num_seqs;
    assert_int_equal(a->input_ids == NULL, b->input_ids == NULL);
    if (a->input_ids)
        assert_memory_equal(a->input_ids, b->input_ids, t * sizeof(uint32_t));
    assert_memory_equal(a->cu_seqlens, b->cu_seqlens,
                        (k + 1) * sizeof(int32_t));
    assert_memory_equal(a->seq_ids, b->seq_ids, k * sizeof(uint64_t));
    assert_int_equal(a->loss_mask == NULL, b->loss_mask == NULL);
    if (a->loss_mask)
        assert_memory_equal(a->loss_mask, b->loss_mask, t);
    assert_int_equal(a->seq_starts == NULL, b->seq_starts == NULL);
    if (a->seq_starts)
        assert_memory_equal(a->seq_starts, b->seq_starts, k * sizeof(uint32_t));
}

/* Pops one row from each (both or neither must have one) and compares. */
static int pop_both(prepack_stream *a, prepack_stream *b)
{
    prepack_row ra, rb;
    int got = prepack_stream_pop(a, &ra);
    if (!got) {
        assert_int_equal(prepack_stream_pop(b, &rb), 0);
        return 0;
    }
    /* ra's arrays live until the next call on a: compare before that */
    assert_int_equal(prepack_stream_pop(b, &rb), 1);
    assert_rows_equal(&ra, &rb);
    return 1;
}

static unsigned char *saved(const prepack_stream *s, size_t *size)
{
    assert_int_equal(prepack_stream_save(s, NULL, 0, size, NULL), PREPACK_OK);
    unsigned char *buf = malloc(*size);
    assert_int_equal(prepack_stream_save(s, buf, *size, size, NULL),
                     PREPACK_OK);
    return buf;
}

/* The restored stream's state saves to the uninterrupted one's bytes. */
static void assert_same_state(const prepack_stream *a, const prepack_stream *b)
{
    size_t na = 0, nb = 0;
    unsigned char *sa = saved(a, &na), *sb = saved(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(sa, sb, na);
    free(sa);
    free(sb);
    prepack_stream_stats x, y;
    prepack_stream_get_stats(a, &x);
    prepack_stream_get_stats(b, &y);
    assert_memory_equal(&x, &y, sizeof x);
}

/* A case pushed into an uninterrupted stream and, beside it, one saved
 * and restored at random points (tokens or lengths only): every row the
 * restored one gives equals the uninterrupted one's, every field. */
static void run_side_by_side(const stream_case *c, int lengths_only, rng *g)
{
    prepack_stream *a = NULL, *b = NULL;
    assert_int_equal(prepack_stream_create(&a, &c->o, NULL), PREPACK_OK);
    assert_int_equal(prepack_stream_create(&b, &c->o, NULL), PREPACK_OK);
    size_t rows = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (rng_range(g, 0, 9) == 0) {
            b = save_restore(b, &c->o);
            assert_same_state(a, b);
        }
        const uint32_t *t = lengths_only ? NULL : c->tok[i];
        const uint8_t *m = lengths_only ? NULL : c->mask[i];
        assert_int_equal(prepack_stream_push(a, i, t, m, c->len[i], NULL),
                         PREPACK_OK);
        assert_int_equal(prepack_stream_push(b, i, t, m, c->len[i], NULL),
                         PREPACK_OK);
        if (rng_range(g, 0, 2) == 0)
            while (pop_both(a, b))
                rows++;
    }
    b = save_restore(b, &c->o);
    assert_int_equal(prepack_stream_flush(a, NULL), PREPACK_OK);
    assert_int_equal(prepack_stream_flush(b, NULL), PREPACK_OK);
    while (pop_both(a, b))
        rows++;
    assert_same_state(a, b);
    prepack_stream_free(a);
    prepack_stream_free(b);
}

static void test_restored_rows_equal_an_uninterrupted_run(void **state)
{
    (void)state;
    rng g = {14};
    stream_case *c = malloc(sizeof *c);
    for (int k = 0; k < 200; k++) {
        make_case(c, &g);
        run_side_by_side(c, k % 4 == 3, &g);
        free_case(c);
    }
    free(c);
}

/* ---- crafted states: a correct checksum is not a key -------------------- */

/* A state written out field by field (docs/STREAM.md's layout), so a test
 * can break one invariant and still give the bytes their XXH64. */
typedef struct c_item {
    uint64_t id, arrival;
    uint32_t off, len;
    int tokens;          /* tokens id * 100 + k */
    const uint8_t *mask; /* len bytes, or NULL */
} c_item;

typedef struct c_row {
    uint64_t number;
    uint32_t room;
    size_t n;
    c_item items[4];
} c_row;

typedef struct c_state {
    prepack_stream_options o;
    int32_t has_tokens;
    uint64_t next_row, next_arrival;
    uint64_t sequences, items, tokens, rows, dropped, truncated;
    size_t nheap, nopen, nready;
    c_item heap[4];
    c_row open[4], ready[4];
} c_state;

typedef struct c_buf {
    unsigned char *p;
    size_t n;
} c_buf;

static void c_put(c_buf *b, uint64_t v, unsigned width)
{
    for (unsigned i = 0; i < width; i++)
        b->p[b->n++] = (unsigned char)(v >> (8 * i));
}

static void c_put_item(c_buf *b, const c_item *it)
{
    c_put(b, it->id, 8);
    c_put(b, it->arrival, 8);
    c_put(b, it->off, 4);
    c_put(b, it->len, 4);
    c_put(b, (it->tokens ? 1u : 0u) | (it->mask ? 2u : 0u), 1);
    for (uint32_t k = 0; it->tokens && k < it->len; k++)
        c_put(b, it->id * 100 + k, 4);
    for (uint32_t k = 0; it->mask && k < it->len; k++)
        c_put(b, it->mask[k], 1);
}

static void c_put_rows(c_buf *b, const c_row *rows, size_t n)
{
    c_put(b, n, 8);
    for (size_t i = 0; i < n; i++) {
        c_put(b, rows[i].number, 8);
        c_put(b, rows[i].room, 4);
        c_put(b, rows[i].n, 8);
        for (size_t j = 0; j < rows[i].n; j++)
            c_put_item(b, &rows[i].items[j]);
    }
}

/* The state's bytes with their XXH64, in buf (4096 bytes at least). */
static size_t c_encode(const c_state *st, unsigned char *buf)
{
    c_buf b = {buf, 0};
    const unsigned char magic[8] = {'P', 'P', 'S', 'T', 'R', 'M', 0, 1};
    memcpy(buf, magic, 8);
    b.n = 8;
    const prepack_stream_options *o = &st->o;
    c_put(&b, o->max_seq_len, 4);
    c_put(&b, o->window, 4);
    c_put(&b, o->lookahead, 4);
    c_put(&b, (uint32_t)o->overlong, 4);
    c_put(&b, o->max_seqs_per_row, 4);
    c_put(&b, (uint32_t)st->has_tokens, 4);
    c_put(&b, st->next_row, 8);
    c_put(&b, st->next_arrival, 8);
    const uint64_t counters[6] = {st->sequences, st->items, st->tokens,
                                  st->rows, st->dropped, st->truncated};
    for (int i = 0; i < 6; i++)
        c_put(&b, counters[i], 8);
    c_put(&b, st->nheap, 8);
    for (size_t i = 0; i < st->nheap; i++)
        c_put_item(&b, &st->heap[i]);
    c_put_rows(&b, st->open, st->nopen);
    c_put_rows(&b, st->ready, st->nready);
    c_put(&b, XXH64(buf, b.n, 0), 8);
    return b.n;
}

static const uint8_t MASK_A[3] = {1, 0, 1}, MASK_B[2] = {1, 0};

/* What a live packer holds after the pushes in base_pushes: L 8, window
 * 2, no lookahead, TRUNCATE, 2 items a row at most. Rows 0 and 1 closed
 * (two items each), row 2 open, sequence 5 (empty) dropped. */
static c_state base_state(void)
{
    c_state st = {
        .o = {.max_seq_len = 8, .window = 2,
              .overlong = PREPACK_OVERLONG_TRUNCATE, .max_seqs_per_row = 2},
        .has_tokens = 1, .next_row = 3, .next_arrival = 5,
        .sequences = 6, .items = 5, .tokens = 16, .rows = 2, .dropped = 1,
        .nopen = 1, .nready = 2,
    };
    st.open[0] = (c_row){2, 6, 1, {{4, 4, 0, 2, 1, MASK_B}}};
    st.ready[0] = (c_row){0, 1, 2, {{0, 0, 0, 3, 1, MASK_A},
                                    {2, 2, 0, 4, 1, NULL}}};
    st.ready[1] = (c_row){1, 1, 2, {{1, 1, 0, 6, 1, NULL},
                                    {3, 3, 0, 1, 1, NULL}}};
    return st;
}

static void base_pushes(prepack_stream *s)
{
    const uint32_t len[6] = {3, 6, 4, 1, 2, 0};
    const uint8_t *mask[6] = {MASK_A, NULL, NULL, NULL, MASK_B, NULL};
    uint32_t tok[8];
    for (uint64_t id = 0; id < 6; id++) {
        for (uint32_t k = 0; k < 8; k++)
            tok[k] = (uint32_t)(id * 100 + k);
        assert_int_equal(prepack_stream_push(s, id, tok, mask[id], len[id],
                                             NULL),
                         PREPACK_OK);
    }
}

/* L 8, lookahead 3, SPLIT: two items wait in the buffer, nothing placed. */
static c_state buffered_state(void)
{
    c_state st = {
        .o = {.max_seq_len = 8, .window = 2, .lookahead = 3,
              .overlong = PREPACK_OVERLONG_SPLIT},
        .has_tokens = 0, .next_arrival = 2,
        .sequences = 2, .items = 2, .tokens = 8, .nheap = 2,
    };
    st.heap[0] = (c_item){1, 1, 0, 5, 0, NULL};
    st.heap[1] = (c_item){0, 0, 0, 3, 0, NULL};
    return st;
}

static int restore_crafted(const c_state *st)
{
    unsigned char *buf = malloc(4096);
    size_t n = c_encode(st, buf);
    prepack_stream *s = NULL;
    prepack_diag d = {0};
    int rc = prepack_stream_restore(&s, buf, n, &st->o, &d);
    if (rc == PREPACK_OK) {
        prepack_row row;
        while (prepack_stream_pop(s, &row))
            ;
    } else {
        assert_null(s);
        assert_true(d.message[0] != 0);
        if (getenv("STREAM_TEST_VERBOSE"))
            print_message("refused: %s\n", d.message);
    }
    prepack_stream_free(s);
    free(buf);
    return rc;
}

/* The encoder and the base states are what a live packer writes. */
static void test_crafted_base_states_are_the_packers(void **state)
{
    (void)state;
    unsigned char *want = malloc(4096);
    c_state st = base_state();
    size_t n = c_encode(&st, want), got = 0;
    prepack_stream *s = NULL;
    assert_int_equal(prepack_stream_create(&s, &st.o, NULL), PREPACK_OK);
    base_pushes(s);
    unsigned char *have = saved(s, &got);
    assert_int_equal(got, n);
    assert_memory_equal(have, want, n);
    free(have);
    prepack_stream_free(s);
    st = buffered_state();
    n = c_encode(&st, want);
    assert_int_equal(prepack_stream_create(&s, &st.o, NULL), PREPACK_OK);
    assert_int_equal(prepack_stream_push(s, 0, NULL, NULL, 3, NULL),
                     PREPACK_OK);
    assert_int_equal(prepack_stream_push(s, 1, NULL, NULL, 5, NULL),
                     PREPACK_OK);
    have = saved(s, &got);
    assert_int_equal(got, n);
    assert_memory_equal(have, want, n);
    free(have);
    prepack_stream_free(s);
    free(want);
    st = base_state();
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
    st = buffered_state();
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
}

/* One more item (arrival 5, one token) in the state's counters: an item
 * added somewhere keeps every counter consistent. */
static void count_one_more(c_state *st, uint32_t len)
{
    st->next_arrival++;
    st->items++;
    st->sequences++;
    st->tokens += len;
}

static void test_crafted_rows_are_refused(void **state)
{
    (void)state;
    static const uint8_t two[2] = {1, 2};
    c_state st = base_state(); /* a closed row over max_seqs_per_row */
    st.ready[0].items[2] = (c_item){5, 5, 0, 1, 1, NULL};
    st.ready[0].n = 3;
    st.ready[0].room = 0;
    count_one_more(&st, 1);
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* a mask byte that is not 0 or 1 */
    st.open[0].items[0].mask = two;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* an item twice: buffered and in a row */
    st.heap[0].arrival = 2;
    st.heap[1].arrival = 1;
    st.open[0] = (c_row){0, 5, 1, {st.heap[1]}};
    st.nopen = 1;
    st.next_row = 1;
    count_one_more(&st, 3);
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st.open[0].items[0].arrival = 0; /* arrival 0 instead: fine */
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
    st = base_state(); /* ... twice in one row */
    st.ready[1].items[1] = st.ready[1].items[0];
    st.ready[1].items[1].len = 1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* two rows with the same number */
    st.open[0].number = 1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* an open row that is done (max_seqs_per_row) */
    st.open[0].items[1] = (c_item){5, 5, 0, 1, 1, NULL};
    st.open[0].n = 2;
    st.open[0].room = 5;
    count_one_more(&st, 1);
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* an offset under a policy that never splits */
    st.open[0].items[0].off = 8;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* an item with no row's room for it */
    st.ready[1].items[0].len = 7;
    st.tokens = 17;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* a row whose room leaves tokens unaccounted */
    st.ready[1].room = 0;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* an empty item */
    st.ready[1].items[1].len = 0;
    st.ready[1].room = 2;
    st.tokens = 15;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* a closed row with no item */
    st.ready[2] = (c_row){3, 8, 0, {{0}}};
    st.nready = 3;
    st.rows = 3;
    st.next_row = 4;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* an open row that is full */
    st.open[0].items[0] = (c_item){4, 4, 0, 8, 1, NULL};
    st.open[0].room = 0;
    st.tokens = 22;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* a row not yet opened */
    st.open[0].number = 3;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* more open rows than the window's slots */
    st.open[1] = st.ready[0];
    st.open[2] = st.ready[1];
    st.nopen = 3;
    st.nready = 0;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
}

static void test_crafted_counters_are_refused(void **state)
{
    (void)state;
    c_state st = base_state(); /* arrivals not counted as items */
    st.next_arrival = 7;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state();
    st.items = 9;
    st.next_arrival = 9;
    st.sequences = 10;
    st.tokens = 30; /* four items (of four sequences) never held */
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
    st.sequences = 9; /* TRUNCATE: one item for each kept sequence */
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* rows opened = closed + open */
    st.next_row = 5;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* more rows ready than were ever closed */
    st.rows = 1;
    st.next_row = 2;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* TRUNCATE: a kept sequence with no item */
    st.sequences = 7;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* fewer tokens than items */
    st.items = st.next_arrival = 20;
    st.sequences = 21;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* SPLIT: a kept sequence with no item */
    st.sequences = 3;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* ERROR: refused sequences counted, not placed */
    st.o.overlong = PREPACK_OVERLONG_ERROR;
    st.sequences = 3;
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
    st.sequences = 1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* fewer tokens than the items hold */
    st.tokens = 10;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* more tokens than L each */
    st.tokens = 41;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* truncated tokens are TRUNCATE's */
    st.truncated = 3;
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
    st = buffered_state();
    st.truncated = 3;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* more dropped than pushed */
    st.dropped = 7;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = base_state(); /* a counter a few pushes from wrapping */
    st.items = st.next_arrival = UINT64_MAX - 1;
    st.sequences = UINT64_MAX;
    st.dropped = 1;
    st.tokens = UINT64_MAX - 1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st.items = st.next_arrival = UINT64_C(1) << 62;
    st.sequences = st.items + 1;
    st.tokens = st.items;
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
    st = base_state(); /* nothing pushed, yet items */
    st.has_tokens = -1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
}

static void test_crafted_buffers_are_refused(void **state)
{
    (void)state;
    c_state st = buffered_state(); /* an arrival not yet made */
    st.heap[1].arrival = 2;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* the buffer holds the latest arrivals: */
    st.heap[0].arrival = 2; /* arrival 1 was placed (and popped) alone */
    st.next_arrival = 3;
    st.items = st.sequences = 3;
    st.tokens = 12;
    st.rows = st.next_row = 1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state();
    st.heap[1].arrival = 1; /* the same arrival twice */
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* a split chunk starts at a multiple of L */
    st.heap[0].off = 3;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st.heap[0].off = 16;
    assert_int_equal(restore_crafted(&st), PREPACK_OK);
    st = buffered_state(); /* an item longer than L */
    st.heap[0].len = 9;
    st.tokens = 12;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* tokens in a length-only stream */
    st.heap[0].tokens = 1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* lengths in a stream nothing was pushed to */
    st.has_tokens = -1;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
    st = buffered_state(); /* K items wait: they would have been placed */
    st.heap[2] = (c_item){2, 2, 0, 4, 0, NULL};
    st.nheap = 3;
    st.next_arrival = st.items = st.sequences = 3;
    st.tokens = 12;
    assert_int_equal(restore_crafted(&st), PREPACK_ECORRUPT);
}

/* Largest single allocation a restore asks for. */
typedef struct peak_alloc {
    size_t peak;
} peak_alloc;

static void *pk_malloc(void *opaque, size_t size)
{
    peak_alloc *p = opaque;
    if (size > p->peak)
        p->peak = size;
    return malloc(size);
}

static void *pk_realloc(void *opaque, void *ptr, size_t size)
{
    peak_alloc *p = opaque;
    if (size > p->peak)
        p->peak = size;
    return realloc(ptr, size);
}

static void pk_free(void *opaque, void *ptr)
{
    (void)opaque;
    free(ptr);
}

/* A 148-byte state whose one open row claims L items: the restore asks
 * for no more memory than the bytes that follow can fill, and at most
 * what a new stream of these options takes. */
static void test_counts_bounded_by_the_bytes(void **state)
{
    (void)state;
    peak_alloc made = {0}, restored = {0};
    prepack_allocator am = {pk_malloc, pk_realloc, pk_free, &made};
    prepack_allocator ar = {pk_malloc, pk_realloc, pk_free, &restored};
    c_state st = {.o = {.max_seq_len = 1u << 20, .window = 1,
                        .overlong = PREPACK_OVERLONG_DROP},
                  .has_tokens = 0, .next_row = 1, .next_arrival = 1 << 20,
                  .sequences = 1 << 20, .items = 1 << 20, .tokens = 1 << 20,
                  .nopen = 1};
    st.open[0] = (c_row){0, 1, 0, {{0}}};
    unsigned char *buf = malloc(4096);
    size_t n = c_encode(&st, buf);
    /* the open row's item count, L: before the ready rows' count */
    size_t at = n - 8 - 8 - 8;
    for (int i = 0; i < 8; i++)
        buf[at + (size_t)i] = (unsigned char)((uint64_t)(1u << 20) >> (8 * i));
    unsigned long long h = XXH64(buf, n - 8, 0);
    for (int i = 0; i < 8; i++)
        buf[n - 8 + (size_t)i] = (unsigned char)(h >> (8 * i));
    assert_int_equal(n, 148);
    prepack_stream_options o = st.o;
    o.allocator = &am;
    prepack_stream *s = NULL;
    assert_int_equal(prepack_stream_create(&s, &o, NULL), PREPACK_OK);
    prepack_stream_free(s);
    s = NULL;
    o.allocator = &ar;
    assert_int_equal(prepack_stream_restore(&s, buf, n, &o, NULL),
                     PREPACK_ECORRUPT);
    assert_null(s);
    assert_true(restored.peak <= made.peak);
    free(buf);
}

static void test_masks_are_zero_or_one(void **state)
{
    (void)state;
    prepack_stream_options o = {.max_seq_len = 8, .window = 2};
    prepack_stream *s = NULL;
    assert_int_equal(prepack_stream_create(&s, &o, NULL), PREPACK_OK);
    const uint32_t t[3] = {1, 2, 3};
    const uint8_t ok[3] = {0, 1, 1}, bad[3] = {1, 2, 1};
    prepack_diag d = {0};
    assert_int_equal(prepack_stream_push(s, 0, t, bad, 3, &d), PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "sequence 0"));
    assert_int_equal(prepack_stream_push(s, 1, t, ok, 3, NULL), PREPACK_OK);
    prepack_stream_stats st;
    prepack_stream_get_stats(s, &st);
    assert_int_equal(st.items, 1);
    prepack_stream_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_the_reference),
        cmocka_unit_test(test_restore_at_random_points),
        cmocka_unit_test(test_restored_rows_equal_an_uninterrupted_run),
        cmocka_unit_test(test_window_one_is_next_fit),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_crafted_base_states_are_the_packers),
        cmocka_unit_test(test_crafted_rows_are_refused),
        cmocka_unit_test(test_crafted_counters_are_refused),
        cmocka_unit_test(test_crafted_buffers_are_refused),
        cmocka_unit_test(test_counts_bounded_by_the_bytes),
        cmocka_unit_test(test_masks_are_zero_or_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
