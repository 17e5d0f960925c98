/* JSON lines of the simple shape are parsed by hand, the rest by simdjson
 * (src/ingest/jsonl_simple.c). The hand path may only ever accept, and
 * only what simdjson accepts, with the same meaning. Held to that
 * differentially through the public header: each random line (valid
 * ones, and ones with a byte changed, added or removed, odd numbers,
 * repeated keys, odd whitespace, text columns, groups) is ingested as
 * written and then with a float field put first, which no hand path
 * takes, so simdjson reads it; against a file of the simdjson form twice
 * they must give the same sequences, masks, documents and groups (equal
 * group values join: the hand path's group text must be simdjson's), or
 * fail at the same record with the same code. Keys one byte from the
 * ids' key (under each --field), "loss_mask", "labels" and "group" are
 * tried on purpose: a random edit makes one too rarely to notice a key
 * compared over a prefix. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepack.h"
#include "test_tmpdir.h"
#include "test_util.h"

static const char *field; /* the ids' key, NULL: input_ids */

typedef struct text {
    char buf[16384];
    size_t len;
} text;

static void add(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    if (n > 0 && t->len + (size_t)n < sizeof t->buf)
        t->len += (size_t)n;
}

static const char *ws(rng *r)
{
    static const char *w[] = {"", "", "", " ", "  ", "\t", " \r", "\r"};
    return w[rng_range(r, 0, 7)];
}

/* A number as a tokenizer writes it, or (rarely) an odd one. */
static void number(text *t, rng *r, uint32_t id)
{
    static const char *odd[] = {"-0",         "007",  "0",        "-100",
                                "4294967295", "4294967296", "1.0",
                                "1e3",        "-1",   "99999999999999999999",
                                "123456789012345678", "2"};
    if (rng_range(r, 0, 40) == 0)
        add(t, "%s", odd[rng_range(r, 0, 11)]);
    else
        add(t, "%u", id);
}

static void array(text *t, rng *r, const uint32_t *ids, size_t n, int kind)
{
    add(t, "[%s", ws(r));
    for (size_t i = 0; i < n; i++) {
        if (i)
            add(t, "%s,%s", ws(r), ws(r));
        if (kind == 1) /* loss_mask */
            add(t, "%u", rng_range(r, 0, 12) ? ids[i] % 2 : 2);
        else if (kind == 2) /* labels */
            rng_range(r, 0, 1) ? add(t, "-100") : number(t, r, ids[i]);
        else
            number(t, r, ids[i]);
    }
    add(t, "%s]", ws(r));
}

/* A string as text columns hold: ASCII, escapes, UTF-8 of every length,
 * and now and then a byte sequence or escape JSON forbids. */
static void string(text *t, rng *r)
{
    static const char *piece[] = {
        "hello", " ", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
        "\\n", "\\\"", "\\\\", "\\/", "\\u00e9", "\\u0000", "\\uFFFF",
        "\\ud83d\\ude00", /* a surrogate pair: simdjson's to judge */
        /* forbidden, not UTF-8, or odd (DEL is allowed) */
        "\\x", "\\u12", "\\udc00", "\t", "\x01", "\xc0\x80", "\xe0\x80\x80",
        "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\x80", "\xc3",
        "\xe2\x82", "\x7f"};
    add(t, "\"");
    for (uint32_t k = rng_range(r, 0, 6); k > 0; k--)
        add(t, "%s", piece[rng_range(r, 0, rng_range(r, 0, 9) ? 12 : 26)]);
    add(t, "\"");
}

/* A valid-looking line: ids, maybe a mask or labels, other int arrays,
 * a text, keys in any order, sometimes repeated or odd. */
static void line(text *t, rng *r)
{
    uint32_t ids[40];
    size_t n = rng_range(r, 0, 40);
    for (size_t i = 0; i < n; i++)
        ids[i] = rng_range(r, 0, 3) ? rng_range(r, 0, 50000)
                                    : rng_range(r, 0, UINT32_MAX);
    const char *ids_key = field ? field : "input_ids";
    const char *keys[] = {ids_key, "loss_mask", "labels", "attention_mask",
                          ids_key, "group",     "ke\\u0079", "caf\xc3\xa9",
                          "",      "text"};
    int order[5] = {0, 3, -1, -1, -1}, k = 2;
    if (rng_range(r, 0, 1))
        order[k++] = 9; /* a text column */
    if (rng_range(r, 0, 2) == 0)
        order[k++] = (int)rng_range(r, 1, 2); /* a mask or labels */
    if (rng_range(r, 0, 10) == 0)
        order[k++] = (int)rng_range(r, 4, 8); /* a repeat or odd key */
    for (int i = k - 1; i > 0; i--) {
        int j = (int)rng_range(r, 0, (uint32_t)i), s = order[i];
        order[i] = order[j];
        order[j] = s;
    }
    add(t, "%s{%s", ws(r), ws(r));
    for (int i = 0; i < k; i++) {
        if (i)
            add(t, "%s,%s", ws(r), ws(r));
        add(t, "\"%s\"%s:%s", keys[order[i]], ws(r), ws(r));
        if (order[i] == 5 && rng_range(r, 0, 3) == 0)
            array(t, r, ids, n, 0); /* a group of the wrong type */
        else if (order[i] == 5 && rng_range(r, 0, 1))
            add(t, rng_range(r, 0, 3) ? "%u" : "-%u", ids[0] % 1000);
        else if (order[i] == 5)
            string(t, r);
        else if (order[i] == 9)
            string(t, r);
        else
            array(t, r, ids, n, order[i] == 1 || order[i] == 2 ? order[i] : 0);
    }
    add(t, "%s}%s", ws(r), ws(r));
}

/* A byte changed, added or removed, now and then. */
static void mutate(text *t, rng *r)
{
    static const char set[] = "-0.e\"\\,[]{} \t19x\x7f\x01:";
    if (t->len == 0 || rng_range(r, 0, 2) != 0)
        return;
    size_t at = rng_range(r, 0, (uint32_t)t->len - 1);
    char c = set[rng_range(r, 0, sizeof set - 2)];
    switch (rng_range(r, 0, 2)) {
    case 0:
        t->buf[at] = c;
        break;
    case 1:
        memmove(t->buf + at + 1, t->buf + at, t->len - at);
        t->buf[at] = c;
        t->len++;
        break;
    default:
        memmove(t->buf + at, t->buf + at + 1, t->len - at - 1);
        t->len--;
    }
}

/* The line with {"zz": 0.5, first: simdjson's to read. */
static void full_parser_form(const text *in, text *out)
{
    const char *brace = memchr(in->buf, '{', in->len);
    out->len = 0;
    if (!brace) {
        add(out, "%.*s", (int)in->len, in->buf);
        return;
    }
    size_t at = (size_t)(brace - in->buf) + 1;
    size_t rest = at;
    while (rest < in->len && strchr(" \t\r", in->buf[rest]))
        rest++;
    int empty = rest < in->len && in->buf[rest] == '}';
    add(out, "%.*s\"zz\": 0.5%s%.*s", (int)at, in->buf, empty ? "" : ", ",
        (int)(in->len - at), in->buf + at);
}

typedef struct outcome {
    int rc;
    uint64_t record;
    prepack_store *s;
} outcome;

/* A file of the case's two forms, then a plain line. */
static outcome ingest(const text *first, const text *second, const char *name)
{
    FILE *f = fopen(path_of(name), "wb");
    assert_non_null(f);
    /* the plain line in the ids' key: a line without it would fail every
     * file under --field, and a failure at the same record is all that
     * would be compared */
    fprintf(f, "%.*s\n%.*s\n{\"%s\": [7, 8]}\n", (int)first->len,
            first->buf, (int)second->len, second->buf,
            field ? field : "input_ids");
    fclose(f);
    prepack_store_options so = {.tmp_dir = test_tmpdir};
    outcome o = {0, 0, NULL};
    prepack_diag d = {0};
    assert_int_equal(prepack_store_create(&o.s, &so, &d), PREPACK_OK);
    prepack_ingest_options io = {.field = field};
    o.rc = prepack_ingest_file(o.s, path_of(name), &io, &d);
    if (o.rc == PREPACK_OK)
        o.rc = prepack_store_finish(o.s, &d);
    o.record = d.record;
    return o;
}

static void assert_same_store(const prepack_store *a, const prepack_store *b,
                              const text *t)
{
    size_t n = prepack_store_sequence_count(a);
    if (n != prepack_store_sequence_count(b))
        fail_msg("%zu vs %zu sequences: %.*s", n,
                 prepack_store_sequence_count(b), (int)t->len, t->buf);
    assert_int_equal(prepack_store_document_count(a),
                     prepack_store_document_count(b));
    size_t ga = 0, gb = 0;
    const uint64_t *fa = prepack_store_group_first(a, &ga),
                   *fb = prepack_store_group_first(b, &gb);
    if (ga != gb || (fa == NULL) != (fb == NULL) ||
        (fa && memcmp(fa, fb, (ga + 1) * sizeof *fa) != 0))
        fail_msg("groups differ: %.*s", (int)t->len, t->buf);
    const uint32_t *la = prepack_store_lengths(a), *lb = prepack_store_lengths(b);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(la[i], lb[i]);
        uint32_t ta[64], tb[64];
        prepack_store_copy(a, i, ta);
        prepack_store_copy(b, i, tb);
        if (memcmp(ta, tb, la[i] * sizeof *ta) != 0)
            fail_msg("tokens differ: %.*s", (int)t->len, t->buf);
        const uint8_t *ma = prepack_store_loss_mask(a, i),
                      *mb = prepack_store_loss_mask(b, i);
        for (uint32_t k = 0; k < la[i]; k++)
            if ((ma ? ma[k] : 1) != (mb ? mb[k] : 1))
                fail_msg("masks differ: %.*s", (int)t->len, t->buf);
    }
}

/* The line t by hand then `next` (simdjson's form), against t in
 * simdjson's form (full) then `next`: the same outcome. */
static void differ_pair(const text *t, const text *full, const text *next,
                        size_t *accepted, size_t *refused)
{
    outcome a = ingest(t, next, "a.jsonl"), b = ingest(full, next, "b.jsonl");
    if (a.rc != b.rc || (a.rc != PREPACK_OK && a.record != b.record))
        fail_msg("--field %s, as written: code %d at %llu; through "
                 "simdjson: code %d at %llu: %.*s",
                 field ? field : "input_ids", a.rc,
                 (unsigned long long)a.record, b.rc,
                 (unsigned long long)b.record, (int)t->len, t->buf);
    if (a.rc == PREPACK_OK) {
        assert_same_store(a.s, b.s, t);
        (*accepted)++;
    } else {
        (*refused)++;
    }
    prepack_store_free(a.s);
    prepack_store_free(b.s);
}

/* The line by hand then through simdjson (equal groups join across the
 * two paths), against simdjson twice. */
static void differ_once(const text *t, const text *full, size_t *accepted,
                        size_t *refused)
{
    differ_pair(t, full, full, accepted, refused);
}

static void differential(uint64_t seed, int cases, size_t *accepted,
                         size_t *refused)
{
    rng r = {seed};
    for (int c = 0; c < cases; c++) {
        text t = {{0}, 0}, full = {{0}, 0};
        line(&t, &r);
        mutate(&t, &r);
        if (memchr(t.buf, '\n', t.len))
            continue;
        full_parser_form(&t, &full);
        differ_once(&t, &full, accepted, refused);
    }
}

static void test_hand_path_agrees_with_simdjson(void **state)
{
    (void)state;
    size_t accepted = 0, refused = 0;
    field = NULL;
    differential(77, 3000, &accepted, &refused);
    /* both kinds were tried, many times */
    assert_true(accepted > 1000 && refused > 300);
}

/* --field naming a key the lines use otherwise: "group" stays a group,
 * "loss_mask"/"labels" become the ids, "text" is never an array. */
static void test_custom_fields(void **state)
{
    (void)state;
    static const char *fields[] = {"group", "loss_mask", "labels", "text",
                                   "attention_mask"};
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
        size_t accepted = 0, refused = 0;
        field = fields[f];
        differential(100 + f, 400, &accepted, &refused);
        assert_true(accepted + refused > 0);
    }
    field = NULL;
}

/* ---- keys that nearly name a field -------------------------------------- */

/* Variant v of key k (0 when there is none): a byte short, two short, a
 * byte more (x, its last byte again, _, a space, an escaped NUL or
 * quote), a space before, an escaped byte that unescapes to k itself,
 * the first letter in upper case. */
static int near_key(const char *k, int v, char *out, size_t cap)
{
    int l = (int)strlen(k), n;
    switch (v) {
    case 0: n = snprintf(out, cap, "%.*s", l - 1, k); break;
    case 1: n = snprintf(out, cap, "%.*s", l > 1 ? l - 2 : 0, k); break;
    case 2: n = snprintf(out, cap, "%sx", k); break;
    case 3: n = snprintf(out, cap, "%s%c", k, k[l - 1]); break;
    case 4: n = snprintf(out, cap, "%s_", k); break;
    case 5: n = snprintf(out, cap, "%s ", k); break;
    case 6: n = snprintf(out, cap, " %s", k); break;
    case 7: n = snprintf(out, cap, "%s\\u0000", k); break;
    case 8: n = snprintf(out, cap, "%s\\\"", k); break;
    case 9: /* the last byte escaped: "input_id\u0073" */
        n = snprintf(out, cap, "%.*s\\u%04x", l - 1, k, k[l - 1]);
        break;
    case 10: /* the middle byte escaped: "inpu\u0074_ids" */
        n = snprintf(out, cap, "%.*s\\u%04x%s", l / 2, k, k[l / 2],
                     k + l / 2 + 1);
        break;
    case 11:
        n = snprintf(out, cap, "%c%s",
                     k[0] - 32 * (k[0] >= 'a' && k[0] <= 'z'), k + 1);
        break;
    default: return 0;
    }
    return n > 0;
}

/* What a key that nearly names `base` holds: what `base` would take (a
 * group's value also into *group). */
static void near_value(text *t, rng *r, const char *base,
                       const uint32_t *ids, size_t n, text *group)
{
    if (strcmp(base, "group") == 0) {
        if (rng_range(r, 0, 1))
            add(group, "%u", ids[0] % 1000);
        else
            add(group, "\"g%u\"", ids[0] % 7);
        add(t, "%.*s", (int)group->len, group->buf);
    } else if (strcmp(base, "loss_mask") == 0) {
        array(t, r, ids, n, 1);
    } else if (strcmp(base, "labels") == 0) {
        array(t, r, ids, n, 2);
    } else {
        uint32_t other[8];
        for (size_t i = 0; i < n; i++)
            other[i] = ids[i] + 1;
        array(t, r, other, n, 0);
    }
}

/* One line: the ids (unless left out), the near key and its value, in
 * either order. */
static void near_line(text *t, rng *r, const char *ids_key, const char *nk,
                      const char *base, int shape, text *group)
{
    uint32_t ids[8];
    size_t n = rng_range(r, 1, 8);
    for (size_t i = 0; i < n; i++)
        ids[i] = rng_range(r, 0, 50000);
    add(t, "{");
    if (shape == 0) {
        add(t, "\"%s\": ", ids_key);
        array(t, r, ids, n, 0);
        add(t, ", ");
    }
    add(t, "\"%s\": ", nk);
    near_value(t, r, base, ids, n, group);
    if (shape == 1) {
        add(t, ", \"%s\": ", ids_key);
        array(t, r, ids, n, 0);
    }
    add(t, "}");
}

/* Keys that share a prefix with the ids' key, "loss_mask", "labels" or
 * "group", or are one of theirs, or equal one only once unescaped, with
 * the value that field takes, beside the ids, after them and instead of
 * them, for the default ids' key and for --field naming each other
 * key: the hand path gives what simdjson gives, or leaves the line to
 * it. A key compared only over a prefix shows here. */
static void test_near_miss_keys(void **state)
{
    (void)state;
    static const char *fields[] = {NULL, "group", "loss_mask", "labels",
                                   "text", "input_idsx"};
    rng r = {303};
    size_t accepted = 0, refused = 0;
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
        field = fields[f];
        const char *ids_key = field ? field : "input_ids";
        const char *bases[] = {ids_key, "input_ids", "loss_mask", "labels",
                               "group"};
        for (size_t b = 0; b < sizeof bases / sizeof *bases; b++) {
            char nk[64];
            for (int v = 0; near_key(bases[b], v, nk, sizeof nk); v++)
                for (int shape = 0; shape < 3; shape++) {
                    text t = {{0}, 0}, full = {{0}, 0}, g = {{0}, 0};
                    near_line(&t, &r, ids_key, nk, bases[b], shape, &g);
                    full_parser_form(&t, &full);
                    if (g.len == 0) {
                        differ_once(&t, &full, &accepted, &refused);
                        continue;
                    }
                    /* a group's near key is followed by a real group of
                     * its value: taken for "group", it would join them */
                    text next = {{0}, 0};
                    add(&next, "{\"zz\": 0.5, \"%s\": [1], \"group\": %.*s}",
                        ids_key, (int)g.len, g.buf);
                    differ_pair(&t, &full, &next, &accepted, &refused);
                }
        }
    }
    field = NULL;
    assert_true(accepted > 300 && refused > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_path_agrees_with_simdjson),
        cmocka_unit_test(test_custom_fields),
        cmocka_unit_test(test_near_miss_keys),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
