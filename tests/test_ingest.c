/* Ingest and the token store, through the public header. Every input is
 * written here by a tiny writer that follows the format's definition (not
 * prepack's code), and the store must hold exactly the sequences that
 * writer meant. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>
#include <zstd.h>

#include "prepack.h"
#include "test_tmpdir.h"
#include "test_util.h"

/* ---- expectations ------------------------------------------------------ */

typedef struct expect {
    size_t n;       /* sequences */
    uint32_t **seq; /* tokens of each */
    uint32_t *len;
    uint8_t **mask; /* NULL entries: all trained */
} expect;

static void expect_add(expect *e, const uint32_t *t, uint32_t len,
                       const uint8_t *mask)
{
    e->seq = realloc(e->seq, (e->n + 1) * sizeof *e->seq);
    e->len = realloc(e->len, (e->n + 1) * sizeof *e->len);
    e->mask = realloc(e->mask, (e->n + 1) * sizeof *e->mask);
    e->seq[e->n] = malloc((len + 1) * sizeof(uint32_t));
    memcpy(e->seq[e->n], t, len * sizeof(uint32_t));
    e->len[e->n] = len;
    e->mask[e->n] = NULL;
    if (mask) {
        e->mask[e->n] = malloc(len + 1);
        memcpy(e->mask[e->n], mask, len);
    }
    e->n++;
}

static void expect_free(expect *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->seq[i]);
        free(e->mask[i]);
    }
    free(e->seq);
    free(e->len);
    free(e->mask);
    memset(e, 0, sizeof *e);
}

static void check_store(const prepack_store *s, const expect *e, size_t first)
{
    assert_true(prepack_store_sequence_count(s) >= first + e->n);
    const uint32_t *lengths = prepack_store_lengths(s);
    for (size_t i = 0; i < e->n; i++) {
        const uint8_t *mask = prepack_store_loss_mask(s, first + i);
        if (lengths[first + i] != e->len[i])
            fail_msg("sequence %zu: %u tokens, want %u", first + i,
                     lengths[first + i], e->len[i]);
        uint32_t *got = malloc((e->len[i] + 1) * sizeof *got);
        prepack_store_copy(s, first + i, got);
        for (uint32_t k = 0; k < e->len[i]; k++) {
            if (got[k] != e->seq[i][k])
                fail_msg("sequence %zu token %u: %u, want %u", first + i, k,
                         got[k], e->seq[i][k]);
            uint8_t want = e->mask[i] ? e->mask[i][k] : 1;
            if ((mask ? mask[k] : 1) != want)
                fail_msg("sequence %zu mask %u: %u, want %u", first + i, k,
                         mask ? mask[k] : 1, want);
        }
        free(got);
    }
}

/* ---- files -------------------------------------------------------------- */

static void write_file(const char *name, const void *data, size_t n)
{
    FILE *f = fopen(path_of(name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* A store with its files in the test folder. */
static prepack_store *new_store(prepack_dtype dtype)
{
    prepack_store_options o = {.tmp_dir = test_tmpdir, .dtype = dtype};
    prepack_store *s = NULL;
    prepack_diag d = {0};
    if (prepack_store_create(&s, &o, &d) != PREPACK_OK)
        fail_msg("%s", d.message);
    return s;
}

static void ingest_ok(prepack_store *s, const char *name,
                      const prepack_ingest_options *o)
{
    prepack_diag d = {0};
    int rc = prepack_ingest_file(s, path_of(name), o, &d);
    if (rc != PREPACK_OK)
        fail_msg("%s: %s", name, d.message);
}

static void finish_ok(prepack_store *s)
{
    prepack_diag d = {0};
    if (prepack_store_finish(s, &d) != PREPACK_OK)
        fail_msg("%s", d.message);
}

/* ---- a growable text buffer --------------------------------------------- */

typedef struct text {
    char *p;
    size_t len, cap;
} text;

static void tprintf(text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap * 2 + (size_t)n + 64;
        t->p = realloc(t->p, t->cap);
    }
}

/* ---- JSONL ---------------------------------------------------------------- */

/* One line, fields shuffled around the ids, with strings, escapes,
 * unicode and a nested decoy "input_ids" that must be ignored. */
static void jsonl_line(text *t, rng *r, const uint32_t *ids, uint32_t n,
                       const uint8_t *mask, int use_labels)
{
    tprintf(t, "{");
    if (rng_range(r, 0, 1))
        tprintf(t, "\"text\": \"caf\\u00e9 \\\"quoted\\\" \\n\\t\xc3\xa9\", ");
    if (rng_range(r, 0, 1))
        tprintf(t, "\"meta\": {\"input_ids\": [9, 9], \"n\": -1.5e3}, ");
    tprintf(t, "\"input_ids\"%s:%s[", rng_range(r, 0, 1) ? " " : "",
            rng_range(r, 0, 1) ? "\t" : "");
    for (uint32_t i = 0; i < n; i++)
        tprintf(t, "%s%u", i ? (rng_range(r, 0, 3) ? "," : " , ") : "", ids[i]);
    tprintf(t, "]");
    if (mask && !use_labels) {
        tprintf(t, ", \"loss_mask\": [");
        for (uint32_t i = 0; i < n; i++)
            tprintf(t, "%s%u", i ? "," : "", mask[i]);
        tprintf(t, "]");
    } else if (mask) {
        tprintf(t, ", \"labels\": [");
        for (uint32_t i = 0; i < n; i++)
            tprintf(t, i ? ",%lld" : "%lld",
                    mask[i] ? (long long)ids[i] : -100LL);
        tprintf(t, "]");
    }
    if (rng_range(r, 0, 1))
        tprintf(t, ", \"id\": %u, \"ok\": true, \"none\": null", n);
    tprintf(t, "}\n");
}

/* Writes `lines` random lines and the matching expectation. */
static text make_jsonl(rng *r, size_t lines, uint32_t max_len, uint32_t max_id,
                       int with_masks, expect *e)
{
    text t = {0};
    uint32_t *ids = malloc((max_len + 1) * sizeof *ids);
    uint8_t *mask = malloc(max_len + 1);
    for (size_t l = 0; l < lines; l++) {
        uint32_t n = rng_range(r, 0, max_len);
        for (uint32_t i = 0; i < n; i++) {
            ids[i] = rng_range(r, 0, max_id);
            mask[i] = (uint8_t)rng_range(r, 0, 1);
        }
        int m = with_masks && rng_range(r, 0, 2) != 0;
        jsonl_line(&t, r, ids, n, m ? mask : NULL, (int)rng_range(r, 0, 1));
        expect_add(e, ids, n, m ? mask : NULL);
    }
    free(ids);
    free(mask);
    return t;
}

static void test_jsonl_plain(void **state)
{
    (void)state;
    rng r = {1};
    expect e = {0};
    text t = make_jsonl(&r, 500, 40, 60000, 1, &e);
    write_file("a.jsonl", t.p, t.len);
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "a.jsonl", NULL);
    finish_ok(s);
    assert_int_equal(prepack_store_sequence_count(s), 500);
    assert_int_equal(prepack_store_dtype(s), PREPACK_DTYPE_UINT16);
    assert_true(prepack_store_has_loss_mask(s));
    check_store(s, &e, 0);
    prepack_input_info in;
    prepack_store_input(s, 0, &in);
    assert_int_equal(in.format, PREPACK_FORMAT_JSONL);
    assert_int_equal(in.sequences, 500);
    prepack_store_free(s);
    expect_free(&e);
    free(t.p);
}

/* Over the 16 MiB first chunk: lines straddle chunk boundaries; then one
 * line longer than a chunk, which makes the buffer grow. */
static void test_jsonl_chunks_and_long_lines(void **state)
{
    (void)state;
    rng r = {2};
    expect e = {0};
    text t = make_jsonl(&r, 40000, 200, 200000, 0, &e);
    uint32_t big_n = 3u << 20; /* ~3M ids of 7-8 bytes: over 16 MiB */
    uint32_t *big = malloc(big_n * sizeof *big);
    for (uint32_t i = 0; i < big_n; i++)
        big[i] = 1000000 + i % 7;
    jsonl_line(&t, &r, big, big_n, NULL, 0);
    expect_add(&e, big, big_n, NULL);
    free(big);
    write_file("big.jsonl", t.p, t.len);
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "big.jsonl", NULL);
    finish_ok(s);
    assert_int_equal(prepack_store_dtype(s), PREPACK_DTYPE_UINT32);
    assert_false(prepack_store_has_loss_mask(s));
    assert_null(prepack_store_loss_mask(s, 0));
    assert_int_equal(prepack_store_sequence_count(s), e.n);
    check_store(s, &e, 0);
    prepack_store_free(s);
    expect_free(&e);
    free(t.p);
}

static void test_jsonl_compressed(void **state)
{
    (void)state;
    rng r = {3};
    expect e = {0};
    text t = make_jsonl(&r, 3000, 60, 50000, 1, &e);
    /* zstd: two frames back to back, as concatenated files are */
    size_t half = t.len / 2;
    while (t.p[half - 1] != '\n')
        half--;
    size_t bound = ZSTD_compressBound(t.len) + 64;
    unsigned char *z = malloc(2 * bound);
    size_t a = ZSTD_compress(z, bound, t.p, half, 3);
    size_t b = ZSTD_compress(z + a, bound, t.p + half, t.len - half, 19);
    assert_false(ZSTD_isError(a) || ZSTD_isError(b));
    write_file("c.jsonl.zst", z, a + b);
    free(z);
    /* gzip through zlib's own writer */
    gzFile g = gzopen(path_of("c.jsonl.gz"), "wb9");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, t.p, (unsigned)t.len), (int)t.len);
    gzclose(g);
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "c.jsonl.zst", NULL);
    ingest_ok(s, "c.jsonl.gz", NULL);
    finish_ok(s);
    check_store(s, &e, 0);
    check_store(s, &e, e.n);
    prepack_input_info in;
    prepack_store_input(s, 1, &in);
    assert_int_equal(in.first_sequence, e.n);
    prepack_store_free(s);
    expect_free(&e);
    free(t.p);
}

static void test_jsonl_custom_field(void **state)
{
    (void)state;
    const char *doc = "{\"ids\": [7, 8], \"input_ids\": [1]}\n"
                      "{\"input_ids\": [2], \"ids\": []}\n";
    write_file("f.jsonl", doc, strlen(doc));
    prepack_store *s = new_store(PREPACK_DTYPE_UINT32);
    prepack_ingest_options o = {.field = "ids"};
    ingest_ok(s, "f.jsonl", &o);
    finish_ok(s);
    expect e = {0};
    uint32_t a[] = {7, 8};
    expect_add(&e, a, 2, NULL);
    expect_add(&e, a, 0, NULL); /* an empty line of ids is a sequence */
    check_store(s, &e, 0);
    assert_int_equal(prepack_store_dtype(s), PREPACK_DTYPE_UINT32);
    prepack_store_free(s);
    expect_free(&e);
}

/* ---- llm.c and raw token files ------------------------------------------- */

/* n values of a cycle of one-digit values ("0,1," is 0 1 0 1 ...),
 * comma-separated, without a trailing comma. */
static void write_cycle(FILE *f, const char *cycle, size_t n)
{
    enum { BLOCK = 65540 }; /* a multiple of every period used: 1, 2, 10 */
    size_t period = strlen(cycle) / 2; /* values per cycle */
    static char block[2 * BLOCK];
    for (size_t i = 0; i < BLOCK; i++)
        memcpy(block + 2 * i, cycle + 2 * (i % period), 2);
    size_t left = n;
    while (left > 0) {
        size_t k = left < BLOCK ? left : BLOCK;
        fwrite(block, 1, 2 * k - (k == left), f); /* no comma at the end */
        left -= k;
    }
}

/* Records past 2^24 - 1 values: simdjson's DOM array::size() saturates at
 * 0xFFFFFF, and sizing from it wrote past the token buffer. Each id is
 * i % 10, each mask value i % 2, so the file stays small. */
static void test_jsonl_records_past_2_to_24(void **state)
{
    (void)state;
    const size_t n = (size_t)0xFFFFFF + 3;
    FILE *f = fopen(path_of("huge.jsonl"), "wb");
    assert_non_null(f);
    fputs("{\"input_ids\":[1,2]}\n{\"input_ids\":[", f);
    write_cycle(f, "0,1,2,3,4,5,6,7,8,9,", n);
    fputs("],\"loss_mask\":[", f);
    write_cycle(f, "0,1,", n);
    fputs("]}\n{\"input_ids\":[3]}\n", f);
    fclose(f);
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "huge.jsonl", NULL);
    finish_ok(s);
    assert_int_equal(prepack_store_sequence_count(s), 3);
    const uint32_t *len = prepack_store_lengths(s);
    assert_int_equal(len[0], 2);
    assert_int_equal(len[1], n);
    assert_int_equal(len[2], 1);
    uint32_t *tok = malloc(n * sizeof *tok);
    assert_non_null(tok);
    prepack_store_copy(s, 1, tok);
    const uint8_t *mask = prepack_store_loss_mask(s, 1);
    assert_non_null(mask);
    for (size_t i = 0; i < n; i++) {
        if (tok[i] != i % 10 || mask[i] != i % 2)
            fail_msg("token %zu: %u (mask %u)", i, tok[i], mask[i]);
    }
    free(tok);
    prepack_store_free(s);
    /* a mask one value short of the ids past the saturation point */
    f = fopen(path_of("huge_mask.jsonl"), "wb");
    assert_non_null(f);
    fputs("{\"input_ids\":[", f);
    write_cycle(f, "1,", n);
    fputs("],\"loss_mask\":[", f);
    write_cycle(f, "1,", n - 1);
    fputs("]}\n", f);
    fclose(f);
    s = new_store(PREPACK_DTYPE_AUTO);
    prepack_diag d = {0};
    assert_int_equal(
        prepack_ingest_file(s, path_of("huge_mask.jsonl"), NULL, &d),
        PREPACK_EFORMAT);
    assert_non_null(strstr(d.message, "loss_mask has 16777217 values, "
                                      "input_ids 16777218"));
    prepack_store_free(s);
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* An llm.c file: header (magic, version, count), then tokens. */
static void write_llmc(const char *name, uint32_t magic, uint32_t version,
                       const uint32_t *tok, size_t n, unsigned width)
{
    size_t size = 1024 + n * width;
    unsigned char *buf = calloc(1, size);
    put_le32(buf, magic);
    put_le32(buf + 4, version);
    put_le32(buf + 8, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        for (unsigned b = 0; b < width; b++)
            buf[1024 + i * width + b] = (unsigned char)(tok[i] >> (8 * b));
    write_file(name, buf, size);
    free(buf);
}

/* Pieces of `tok` cut before (or after) each `sep`. */
static void expect_split(expect *e, const uint32_t *tok, size_t n, uint32_t sep,
                         int before)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (tok[i] != sep)
            continue;
        size_t end = before ? i : i + 1;
        if (end > start)
            expect_add(e, tok + start, (uint32_t)(end - start), NULL);
        start = end;
    }
    if (n > start)
        expect_add(e, tok + start, (uint32_t)(n - start), NULL);
}

static void test_llmc_gpt2_and_llama3(void **state)
{
    (void)state;
    /* GPT-2: a cut-off piece, then <|endoftext|> before each document */
    uint32_t g[] = {11, 12, 50256, 1, 2, 3, 50256, 4, 50256, 50256, 5, 6};
    write_llmc("g.bin", 20240520, 1, g, 12, 2);
    /* LLaMA-3: <|begin_of_text|> = 128000 before each, uint32 ids */
    uint32_t l[] = {128000, 70000, 1, 128000, 128255, 2};
    write_llmc("l.bin", 20240801, 7, l, 6, 4);
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "g.bin", NULL);
    ingest_ok(s, "l.bin", NULL);
    finish_ok(s);
    expect e = {0};
    expect_split(&e, g, 12, 50256, 1);
    expect_split(&e, l, 6, 128000, 1);
    check_store(s, &e, 0);
    assert_int_equal(prepack_store_sequence_count(s), e.n);
    assert_int_equal(prepack_store_dtype(s), PREPACK_DTYPE_UINT32);
    prepack_input_info in;
    prepack_store_input(s, 0, &in);
    assert_int_equal(in.format, PREPACK_FORMAT_LLMC);
    assert_int_equal(in.partial_sequences, 1); /* 11 12 */
    assert_int_equal(in.sequences, 5);
    prepack_store_input(s, 1, &in);
    assert_int_equal(in.partial_sequences, 0);
    prepack_store_free(s);
    expect_free(&e);
}

static void test_raw_and_separator_options(void **state)
{
    (void)state;
    /* nanoGPT: <|endoftext|> after each document; the tail is cut */
    uint16_t raw[] = {1, 2, 50256, 3, 50256, 50256, 4, 5};
    write_file("r.u16", raw, sizeof raw);
    uint32_t as32[8];
    for (int i = 0; i < 8; i++)
        as32[i] = raw[i];
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    prepack_ingest_options o = {
        .format = PREPACK_FORMAT_RAW_U16, .has_doc_sep = 1, .doc_sep = 50256};
    ingest_ok(s, "r.u16", &o);
    /* the same file with the delimiter taken as an opener */
    o.sep_position = PREPACK_SEP_BEFORE;
    ingest_ok(s, "r.u16", &o);
    /* an llm.c file split on another id */
    uint32_t g[] = {7, 1, 7, 2, 3};
    write_llmc("g7.bin", 20240520, 1, g, 5, 2);
    prepack_ingest_options o7 = {
        .has_doc_sep = 1, .doc_sep = 7, .sep_position = PREPACK_SEP_AFTER};
    ingest_ok(s, "g7.bin", &o7);
    finish_ok(s);
    expect e = {0};
    expect_split(&e, as32, 8, 50256, 0);
    expect_split(&e, as32, 8, 50256, 1);
    expect_split(&e, g, 5, 7, 0);
    check_store(s, &e, 0);
    prepack_input_info in;
    prepack_store_input(s, 0, &in);
    assert_int_equal(in.sequences, 4);
    assert_int_equal(in.partial_sequences, 1); /* 4 5 lacks its delimiter */
    prepack_store_free(s);
    expect_free(&e);
}

/* ---- Megatron --------------------------------------------------------------- */

typedef struct mg_seq {
    uint32_t len;
    uint64_t ptr;
} mg_seq;

static void put_le(unsigned char *p, uint64_t v, unsigned width)
{
    for (unsigned i = 0; i < width; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes X.idx for sequences at the given byte pointers. */
static void write_idx(const char *name, unsigned dtype_code, const mg_seq *s,
                      size_t n, const uint64_t *docs, size_t d, int multimodal)
{
    size_t size = 34 + 12 * n + 8 * d + (multimodal ? n : 0);
    unsigned char *b = calloc(1, size), *p = b;
    memcpy(p, "MMIDIDX\0\0", 9);
    put_le(p + 9, 1, 8);
    p[17] = (unsigned char)dtype_code;
    put_le(p + 18, n, 8);
    put_le(p + 26, d, 8);
    p += 34;
    for (size_t i = 0; i < n; i++, p += 4)
        put_le(p, s[i].len, 4);
    for (size_t i = 0; i < n; i++, p += 8)
        put_le(p, s[i].ptr, 8);
    for (size_t i = 0; i < d; i++, p += 8)
        put_le(p, docs[i], 8);
    write_file(name, b, size);
    free(b);
}

static void megatron_case(unsigned code, unsigned width, uint32_t max_id,
                          int multimodal, uint64_t seed)
{
    rng r = {seed};
    enum { N = 300 };
    mg_seq seqs[N];
    expect e = {0};
    /* Sequences written to .bin in reverse order, so pointers jump back:
     * the reader must follow pointers, not assume a stream. */
    uint32_t *tok[N];
    uint64_t bytes = 0;
    for (size_t i = 0; i < N; i++) {
        seqs[i].len = i == 7 ? 0 : rng_range(&r, 1, 50);
        tok[i] = malloc((seqs[i].len + 1) * sizeof(uint32_t));
        for (uint32_t k = 0; k < seqs[i].len; k++)
            tok[i][k] = rng_range(&r, 0, max_id);
        bytes += (uint64_t)seqs[i].len * width;
    }
    unsigned char *bin = calloc(1, bytes + 1);
    uint64_t at = 0;
    for (size_t i = N; i-- > 0;) {
        seqs[i].ptr = at;
        for (uint32_t k = 0; k < seqs[i].len; k++, at += width)
            put_le(bin + at, tok[i][k], width);
    }
    for (size_t i = 0; i < N; i++) {
        expect_add(&e, tok[i], seqs[i].len, NULL);
        free(tok[i]);
    }
    uint64_t docs[] = {0, 5, 5, 100, 299, N}; /* doc 1 is empty */
    write_idx("m.idx", code, seqs, N, docs, 6, multimodal);
    write_file("m.bin", bin, bytes);
    free(bin);

    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "m", NULL); /* the prefix names the pair */
    finish_ok(s);
    assert_int_equal(prepack_store_sequence_count(s), N); /* empty kept */
    check_store(s, &e, 0);
    assert_int_equal(prepack_store_document_count(s), 4);
    assert_int_equal(prepack_store_document_start(s, 0), 0);
    assert_int_equal(prepack_store_document_start(s, 1), 5);
    assert_int_equal(prepack_store_document_start(s, 2), 100);
    assert_int_equal(prepack_store_document_start(s, 3), 299);
    prepack_store_free(s);
    expect_free(&e);
}

static void test_megatron_dtypes(void **state)
{
    (void)state;
    megatron_case(8, 2, 65535, 0, 10);      /* uint16 */
    megatron_case(4, 4, 1u << 20, 0, 11);   /* int32 */
    megatron_case(1, 1, 255, 1, 12);        /* uint8, multimodal index */
    megatron_case(5, 8, UINT32_MAX, 0, 13); /* int64 */
    megatron_case(3, 2, 32767, 0, 14);      /* int16 */
}

/* A sequence longer than the reader's 4 MiB window. */
static void test_megatron_long_sequence(void **state)
{
    (void)state;
    uint32_t n = 3u << 20; /* 6 MiB of uint16 */
    uint16_t *t = malloc(n * sizeof *t);
    uint32_t *t32 = malloc(n * sizeof *t32);
    for (uint32_t i = 0; i < n; i++)
        t32[i] = t[i] = (uint16_t)(i * 2654435761u >> 16);
    write_file("long.bin", t, n * sizeof *t);
    mg_seq s1[2] = {{n - 5, 10}, {5, 0}};
    uint64_t docs[] = {0, 2};
    write_idx("long.idx", 8, s1, 2, docs, 2, 0);
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "long.idx", NULL);
    finish_ok(s);
    expect e = {0};
    expect_add(&e, t32 + 5, n - 5, NULL);
    expect_add(&e, t32, 5, NULL);
    check_store(s, &e, 0);
    prepack_store_free(s);
    expect_free(&e);
    free(t);
    free(t32);
}

/* Binary inputs of several blocks (Megatron: 65,536 index entries) and
 * runs (llm.c and raw: 2^18 tokens) ingested on 1, 2, 3 and 7 threads:
 * the same sequences and documents, in input order, every time. */
static const int THREADS[] = {1, 2, 3, 7};

static void check_threads(const char *name, const prepack_ingest_options *o,
                          const expect *e, const uint64_t *docs, size_t ndocs)
{
    for (size_t t = 0; t < sizeof THREADS / sizeof *THREADS; t++) {
        prepack_ingest_options ot = *o;
        ot.threads = THREADS[t];
        prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
        ingest_ok(s, name, &ot);
        finish_ok(s);
        assert_int_equal(prepack_store_sequence_count(s), e->n);
        check_store(s, e, 0);
        if (docs) {
            assert_int_equal(prepack_store_document_count(s), ndocs);
            for (size_t d = 0; d < ndocs; d++)
                assert_int_equal(prepack_store_document_start(s, d), docs[d]);
        }
        prepack_store_free(s);
    }
}

static void test_megatron_on_threads(void **state)
{
    (void)state;
    rng r = {21};
    size_t n = 3 * 65536 + 777;
    mg_seq *seqs = calloc(n, sizeof *seqs);
    uint64_t *docs = calloc(n + 1, sizeof *docs), nd = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        seqs[i].len = rng_range(&r, 0, 9);
        bytes += 4 * (uint64_t)seqs[i].len;
        if (i == 0 || rng_range(&r, 0, 3) == 0)
            docs[nd++] = i; /* documents of about 4 sequences */
    }
    unsigned char *bin = calloc(1, bytes + 1);
    uint32_t *tok = malloc(10 * sizeof *tok);
    expect e = {0};
    for (size_t i = 0, at = 0; i < n; i++) {
        seqs[i].ptr = bytes - at - 4 * (uint64_t)seqs[i].len; /* backwards */
        for (uint32_t k = 0; k < seqs[i].len; k++) {
            tok[k] = rng_range(&r, 0, 1u << 21);
            put_le(bin + seqs[i].ptr + 4 * k, tok[k], 4);
        }
        at += 4 * (uint64_t)seqs[i].len;
        expect_add(&e, tok, seqs[i].len, NULL);
    }
    docs[nd] = n; /* the closing entry */
    write_idx("mt.idx", 4, seqs, n, docs, nd + 1, 0);
    write_file("mt.bin", bin, bytes);
    prepack_ingest_options o = {0};
    check_threads("mt", &o, &e, docs, nd);
    expect_free(&e);
    free(seqs);
    free(docs);
    free(bin);
    free(tok);
}

static void test_token_files_on_threads(void **state)
{
    (void)state;
    rng r = {22};
    size_t n = 5 * (1u << 18) + 321;
    uint32_t *t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++)
        t[i] = rng_range(&r, 0, 400) == 0 ? 50256 : rng_range(&r, 0, 50255);
    /* delimiters at the runs' edges: a piece ends where a run does */
    t[(1u << 18) - 1] = t[1u << 18] = t[2u << 18] = 50256;
    write_llmc("gt.bin", 20240520, 1, t, n, 2);
    expect e = {0};
    expect_split(&e, t, n, 50256, 1);
    prepack_ingest_options o = {0};
    check_threads("gt.bin", &o, &e, NULL, 0);
    expect_free(&e);
    /* the same tokens as a nanoGPT file, split after each delimiter */
    uint16_t *u = malloc(n * sizeof *u);
    for (size_t i = 0; i < n; i++)
        u[i] = (uint16_t)t[i];
    write_file("gt.u16", u, n * sizeof *u);
    expect_split(&e, t, n, 50256, 0);
    prepack_ingest_options raw = {.format = PREPACK_FORMAT_RAW_U16,
                                  .has_doc_sep = 1, .doc_sep = 50256};
    check_threads("gt.u16", &raw, &e, NULL, 0);
    expect_free(&e);
    free(u);
    free(t);
}

/* Allocation failures while workers run: a counting allocator that
 * threads may share (atomic counters), failing its k-th call for k = 0,
 * 1, 2, ... until ingest succeeds; every failure must be ENOMEM and leak
 * nothing. Workers allocate too (a run's delimiter list, a zstd frame's
 * buffers), so which allocation is k-th varies between runs; the
 * property holds for each. */
typedef struct shared_alloc {
    atomic_size_t calls, live;
    size_t fail_at;
} shared_alloc;

static void *sa_malloc(void *opaque, size_t size)
{
    shared_alloc *c = opaque;
    if (atomic_fetch_add(&c->calls, 1) == c->fail_at)
        return NULL;
    void *p = malloc(size);
    if (p)
        atomic_fetch_add(&c->live, 1);
    return p;
}

static void *sa_realloc(void *opaque, void *ptr, size_t size)
{
    shared_alloc *c = opaque;
    if (atomic_fetch_add(&c->calls, 1) == c->fail_at)
        return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        atomic_fetch_add(&c->live, 1);
    return p;
}

static void sa_free(void *opaque, void *ptr)
{
    shared_alloc *c = opaque;
    if (ptr)
        atomic_fetch_sub(&c->live, 1);
    free(ptr);
}

static void test_allocation_failures_on_threads(void **state)
{
    (void)state;
    /* Megatron int32 of 2 blocks, llm.c of 3 runs, JSONL of 6 frames */
    rng r = {31};
    size_t n = 65536 + 999;
    mg_seq *seqs = calloc(n, sizeof *seqs);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        seqs[i] = (mg_seq){rng_range(&r, 0, 3), bytes};
        bytes += 4 * (uint64_t)seqs[i].len;
    }
    unsigned char *bin = calloc(1, bytes + 1);
    uint64_t docs[2] = {0, n};
    write_idx("af.idx", 4, seqs, n, docs, 2, 0);
    write_file("af.bin", bin, bytes);
    size_t nt = 3 * (1u << 18);
    uint32_t *t = malloc(nt * sizeof *t);
    for (size_t i = 0; i < nt; i++)
        t[i] = i % 97 == 0 ? 50256 : (uint32_t)(i % 50000);
    write_llmc("af-llmc.bin", 20240520, 1, t, nt, 2);
    expect e = {0};
    text j = make_jsonl(&r, 600, 40, 50000, 0, &e);
    size_t bound = ZSTD_compressBound(j.len), zlen = 0;
    unsigned char *z = malloc(6 * bound);
    for (int f = 0; f < 6; f++) {
        size_t from = j.len * (size_t)f / 6, to = j.len * (size_t)(f + 1) / 6;
        size_t got = ZSTD_compress(z + zlen, bound, j.p + from, to - from, 3);
        assert_false(ZSTD_isError(got));
        zlen += got;
    }
    write_file("af.jsonl.zst", z, zlen);
    const char *inputs[] = {"af", "af-llmc.bin", "af.jsonl.zst"};
    for (size_t in = 0; in < 3; in++) {
        for (size_t k = 0;; k++) {
            shared_alloc sa;
            atomic_init(&sa.calls, 0);
            atomic_init(&sa.live, 0);
            sa.fail_at = k;
            prepack_allocator a = {sa_malloc, sa_realloc, sa_free, &sa};
            prepack_store_options so = {.tmp_dir = test_tmpdir,
                                        .allocator = &a};
            prepack_ingest_options io = {.threads = 3};
            prepack_store *s = NULL;
            prepack_diag d = {0};
            int rc = prepack_store_create(&s, &so, &d);
            if (rc == PREPACK_OK)
                rc = prepack_ingest_file(s, path_of(inputs[in]), &io, &d);
            if (rc == PREPACK_OK)
                rc = prepack_store_finish(s, &d);
            prepack_store_free(s);
            assert_int_equal(atomic_load(&sa.live), 0);
            if (rc == PREPACK_OK) {
                print_message("%s: %zu allocations failed in turn\n",
                              inputs[in], k);
                assert_true(k > 5);
                break;
            }
            if (rc != PREPACK_ENOMEM)
                fail_msg("%s, allocation %zu failing: %s", inputs[in], k,
                         d.message);
            assert_true(k < 100000);
        }
    }
    expect_free(&e);
    free(j.p);
    free(z);
    free(t);
    free(bin);
    free(seqs);
}

/* ---- zstd frames on worker threads ------------------------------------- */

/* One frame of `n` bytes: zstd's content checksum or none (the zstd
 * command line writes one by default; ZSTD_compress does not), its window
 * 2^window_log bytes (0: zstd's choice). */
static size_t zstd_frame_window(unsigned char *dst, size_t cap,
                                const void *src, size_t n, int checksum,
                                int window_log)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    assert_non_null(c);
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum);
    ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, window_log);
    size_t got = ZSTD_compress2(c, dst, cap, src, n);
    ZSTD_freeCCtx(c);
    assert_false(ZSTD_isError(got));
    return got;
}

static size_t zstd_frame(unsigned char *dst, size_t cap, const void *src,
                         size_t n, int checksum)
{
    return zstd_frame_window(dst, cap, src, n, checksum, 0);
}

/* Allocations made off the calling thread of exactly one of `sizes`: a
 * worker's buffer for a frame of that content size, which only a frame
 * decoded on a worker gets. */
typedef struct thread_alloc {
    pthread_t caller;
    const size_t *sizes;
    size_t nsizes;
    atomic_size_t off_caller, frames;
} thread_alloc;

static void note(thread_alloc *ta, size_t size)
{
    if (pthread_equal(pthread_self(), ta->caller))
        return;
    atomic_fetch_add(&ta->off_caller, 1);
    for (size_t i = 0; i < ta->nsizes; i++)
        if (size == ta->sizes[i])
            atomic_fetch_add(&ta->frames, 1);
}

static void *ta_malloc(void *opaque, size_t size)
{
    note(opaque, size);
    return malloc(size);
}

static void *ta_realloc(void *opaque, void *ptr, size_t size)
{
    note(opaque, size);
    return realloc(ptr, size);
}

static void ta_free(void *opaque, void *ptr)
{
    (void)opaque;
    free(ptr);
}

/* Ingests `name` on `threads` threads with the observing allocator:
 * the frames decoded on workers. */
static size_t ingest_counting_frames(const char *name, int threads,
                                     const size_t *sizes, size_t nsizes,
                                     const expect *e)
{
    thread_alloc ta = {.caller = pthread_self(), .sizes = sizes,
                       .nsizes = nsizes};
    atomic_init(&ta.off_caller, 0);
    atomic_init(&ta.frames, 0);
    prepack_allocator a = {ta_malloc, ta_realloc, ta_free, &ta};
    prepack_store_options so = {.tmp_dir = test_tmpdir, .allocator = &a};
    prepack_ingest_options io = {.threads = threads};
    prepack_store *s = NULL;
    prepack_diag d = {0};
    assert_int_equal(prepack_store_create(&s, &so, &d), PREPACK_OK);
    if (prepack_ingest_file(s, path_of(name), &io, &d) != PREPACK_OK ||
        prepack_store_finish(s, &d) != PREPACK_OK)
        fail_msg("%s on %d threads: %s", name, threads, d.message);
    assert_int_equal(prepack_store_sequence_count(s), e->n);
    check_store(s, e, 0);
    prepack_store_free(s);
    return atomic_load(&ta.frames);
}

/* A file of 24 frames of growing content sizes, with and without zstd's
 * checksum, with windows over and under their content: at 2, 3 and 7
 * threads every frame is decoded on a worker (none streamed again on
 * the reading thread), at 1 none is. */
static void test_zstd_frames_decoded_on_workers(void **state)
{
    (void)state;
    enum { FRAMES = 24 }; /* more than 7 threads keep in flight */
    rng r = {41};
    expect e = {0};
    text j = make_jsonl(&r, 3000, 40, 50000, 1, &e);
    size_t cut[FRAMES + 1], sizes[FRAMES];
    cut[0] = 0;
    cut[FRAMES] = j.len;
    /* frames that grow, each ending at a line's end: every one needs a
     * larger buffer than the frames before it, so each allocates its own */
    for (int f = 1; f < FRAMES; f++) {
        cut[f] = j.len * (size_t)(f * (f + 1)) / (FRAMES * (FRAMES + 1));
        while (j.p[cut[f] - 1] != '\n')
            cut[f]++;
    }
    for (int f = 0; f < FRAMES; f++)
        sizes[f] = cut[f + 1] - cut[f];
    size_t bound = ZSTD_compressBound(j.len) + 64 * FRAMES;
    unsigned char *z = malloc(bound);
    for (int c = 0; c < 4; c++) {
        /* a window of 1 KiB: under every frame's content, as pzstd's
         * frames are (decoded through a window-sized buffer) */
        int checksum = c % 2, window_log = c / 2 ? 10 : 0;
        size_t zlen = 0;
        for (int f = 0; f < FRAMES; f++)
            zlen += zstd_frame_window(z + zlen, bound - zlen, j.p + cut[f],
                                      sizes[f], checksum, window_log);
        write_file("w.jsonl.zst", z, zlen);
        assert_int_equal(
            ingest_counting_frames("w.jsonl.zst", 1, sizes, FRAMES, &e), 0);
        for (size_t t = 1; t < sizeof THREADS / sizeof *THREADS; t++) {
            size_t got = ingest_counting_frames("w.jsonl.zst", THREADS[t],
                                                sizes, FRAMES, &e);
            if (got != FRAMES)
                fail_msg("checksum %d, window 2^%d, %d threads: %zu of %d "
                         "frames on workers", checksum, window_log,
                         THREADS[t], got, FRAMES);
        }
    }
    free(z);
    free(j.p);
    expect_free(&e);
}

/* The frame at z (zlen bytes, from zstd_frame) with its header rewritten:
 * not single-segment, a window of 2^window_log bytes, and the content
 * size `fcs` in 8 bytes, or (absent) none. Returns its new length (at
 * most zlen + 9). */
static size_t restate_content_size(unsigned char *z, size_t zlen, int absent,
                                   uint64_t fcs, unsigned window_log)
{
    static const size_t fcs_bytes[4] = {0, 2, 4, 8};
    unsigned fhd = z[4];
    assert_int_equal(fhd & 3, 0); /* no dictionary id */
    int single = (fhd >> 5) & 1;
    size_t fb = fcs_bytes[fhd >> 6];
    if (single && fb == 0)
        fb = 1;
    size_t old = (single ? 5u : 6u) + fb;
    unsigned char h[14] = {0x28, 0xB5, 0x2F, 0xFD};
    h[4] = (unsigned char)((absent ? 0 : 3u << 6) | (fhd & 4)); /* checksum */
    h[5] = (unsigned char)((window_log - 10) << 3); /* 2^window_log bytes */
    size_t nh = 6;
    for (int i = 0; !absent && i < 8; i++)
        h[nh++] = (unsigned char)(fcs >> (8 * i));
    memmove(z + nh, z + old, zlen - old);
    memcpy(z, h, nh);
    return zlen - old + nh;
}

/* A frame whose header lies about its content size (larger, smaller,
 * zero), states none, states a window smaller than its blocks, or
 * carries a wrong checksum: first, between two good frames, and last
 * (after frames a one-thread decoder streamed in buffers of their own).
 * The same code, record and message at 1, 2, 3 and 7 threads (the
 * streaming decoder finds and names every error, whichever thread met
 * the frame first); a frame that states no size is read. */
static void test_zstd_frame_lies_same_at_every_thread_count(void **state)
{
    (void)state;
    rng r = {43};
    expect e = {0};
    text j = make_jsonl(&r, 3000, 40, 50000, 0, &e);
    size_t cut[4] = {0, j.len / 3, 2 * j.len / 3, j.len};
    for (int f = 1; f < 3; f++)
        while (j.p[cut[f] - 1] != '\n')
            cut[f]++;
    size_t bound = ZSTD_compressBound(j.len) + 64;
    unsigned char *z = malloc(bound);
    enum { LARGER, SMALLER, ZERO, ABSENT, BAD_CHECKSUM, SMALL_WINDOW, CASES };
    for (int c = 0; c < 3 * 2 * CASES; c++) {
        int lie = c % CASES, checksum = (c / CASES) % 2, at = c / CASES / 2;
        checksum |= lie == BAD_CHECKSUM;
        size_t zlen = 0;
        for (int f = 0; f < 3; f++) {
            size_t n = cut[f + 1] - cut[f];
            size_t len = zstd_frame(z + zlen, bound - zlen, j.p + cut[f], n,
                                    checksum);
            if (f == at && lie == BAD_CHECKSUM)
                z[zlen + len - 1] ^= 0x40;
            else if (f == at)
                len = restate_content_size(
                    z + zlen, len, lie == ABSENT,
                    lie == LARGER    ? n + 1
                    : lie == SMALLER ? n - 1
                    : lie == ZERO    ? 0
                                     : n,
                    lie == SMALL_WINDOW ? 10 : 20);
            zlen += len;
        }
        write_file("lie.jsonl.zst", z, zlen);
        int rc0 = 0;
        uint64_t rec0 = 0;
        char msg0[sizeof ((prepack_diag *)0)->message];
        for (size_t t = 0; t < sizeof THREADS / sizeof *THREADS; t++) {
            prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
            prepack_ingest_options io = {.threads = THREADS[t]};
            prepack_diag d = {0};
            int rc = prepack_ingest_file(s, path_of("lie.jsonl.zst"), &io, &d);
            if (rc == PREPACK_OK) {
                finish_ok(s);
                check_store(s, &e, 0);
            }
            if (t == 0) {
                rc0 = rc;
                rec0 = d.record;
                memcpy(msg0, d.message, sizeof msg0);
            } else if (rc != rc0 || d.record != rec0 ||
                       strcmp(d.message, msg0) != 0) {
                fail_msg("case %d (frame %d, checksum %d): at 1 thread %d "
                         "\"%s\", at %d threads %d \"%s\"", lie, at, checksum,
                         rc0, msg0, THREADS[t], rc, d.message);
            }
            prepack_store_free(s);
        }
        if (lie != SMALL_WINDOW)
            assert_int_equal(rc0, lie == ABSENT ? PREPACK_OK
                                                : PREPACK_EFORMAT);
    }
    free(z);
    free(j.p);
    expect_free(&e);
}

/* A frame whose header states a window smaller than the distances its
 * matches reach back (its text three times over, compressed with a 1 MiB
 * window, the header then saying 128 KiB), after 0, 1 and 3 small frames.
 * One call into a buffer of the whole content decodes it; the streaming
 * decoder, keeping about the window, does not, unless it too is given
 * room for the whole content: accepted or refused alike at 1, 2, 3 and
 * 7 threads, never decoded by a worker the stream would refuse. */
static void test_zstd_frame_window_too_small(void **state)
{
    (void)state;
    rng r = {47};
    expect e = {0}, small = {0};
    text once = make_jsonl(&r, 1500, 30, 1u << 30, 0, &e);
    text head = make_jsonl(&r, 40, 30, 50000, 0, &small);
    size_t n = 3 * once.len, bound = ZSTD_compressBound(n) + (1u << 16);
    char *body = malloc(n);
    for (size_t k = 0; k < 3; k++)
        memcpy(body + k * once.len, once.p, once.len);
    unsigned char *z = malloc(bound);
    for (int before = 0; before <= 3; before += 1 + (before == 1)) {
        size_t zlen = 0;
        for (int k = 0; k < before; k++)
            zlen += zstd_frame(z + zlen, bound - zlen, head.p, head.len, 1);
        size_t len = zstd_frame_window(z + zlen, bound - zlen, body, n, 1, 20);
        zlen += restate_content_size(z + zlen, len, 0, n, 17);
        zlen += zstd_frame(z + zlen, bound - zlen, head.p, head.len, 1);
        write_file("window.jsonl.zst", z, zlen);
        int rc0 = 0;
        char msg0[sizeof ((prepack_diag *)0)->message];
        for (size_t t = 0; t < sizeof THREADS / sizeof *THREADS; t++) {
            prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
            prepack_ingest_options io = {.threads = THREADS[t]};
            prepack_diag d = {0};
            int rc = prepack_ingest_file(s, path_of("window.jsonl.zst"), &io,
                                         &d);
            if (rc == PREPACK_OK)
                finish_ok(s);
            if (t == 0) {
                rc0 = rc;
                memcpy(msg0, d.message, sizeof msg0);
            } else if (rc != rc0 || strcmp(d.message, msg0) != 0) {
                fail_msg("%d frames before: at 1 thread %d \"%s\", at %d "
                         "threads %d \"%s\"", before, rc0,
                         rc0 ? msg0 : "", THREADS[t], rc,
                         rc ? d.message : "");
            }
            prepack_store_free(s);
        }
    }
    free(z);
    free(body);
    free(once.p);
    free(head.p);
    expect_free(&e);
    expect_free(&small);
}

/* Referenced inputs and parsed ones in one store: dtypes, masks, ids. */
static void test_mixed_inputs(void **state)
{
    (void)state;
    uint32_t g[] = {50256, 1, 2, 50256, 3};
    write_llmc("mix.bin", 20240520, 1, g, 5, 2);
    const char *doc = "{\"input_ids\": [70000, 5], \"loss_mask\": [0, 1]}\n";
    write_file("mix.jsonl", doc, strlen(doc));
    uint32_t l[] = {128000, 99999, 128000, 7};
    write_llmc("mix32.bin", 20240801, 7, l, 4, 4);
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    ingest_ok(s, "mix.bin", NULL);
    ingest_ok(s, "mix.jsonl", NULL);
    ingest_ok(s, "mix32.bin", NULL);
    ingest_ok(s, "mix.bin", NULL);
    finish_ok(s);
    expect e = {0};
    expect_split(&e, g, 5, 50256, 1);
    uint32_t j[] = {70000, 5};
    uint8_t jm[] = {0, 1};
    expect_add(&e, j, 2, jm);
    expect_split(&e, l, 4, 128000, 1);
    expect_split(&e, g, 5, 50256, 1);
    check_store(s, &e, 0);
    assert_int_equal(prepack_store_sequence_count(s), e.n);
    assert_int_equal(prepack_store_dtype(s), PREPACK_DTYPE_UINT32);
    assert_true(prepack_store_has_loss_mask(s));
    assert_null(prepack_store_loss_mask(s, 0)); /* referenced: all trained */
    prepack_store_free(s);
    expect_free(&e);

    /* uint16 forced: the LLaMA-3 file's ids do not fit, and the error
     * names it */
    s = new_store(PREPACK_DTYPE_UINT16);
    ingest_ok(s, "mix.bin", NULL);
    ingest_ok(s, "mix32.bin", NULL);
    prepack_diag d = {0};
    assert_int_equal(prepack_store_finish(s, &d), PREPACK_ERANGE);
    assert_non_null(strstr(d.message, "mix32.bin: token id 128000"));
    prepack_store_free(s);
}

/* lengths_only: everything is parsed and checked, only lengths kept. */
static void test_lengths_only(void **state)
{
    (void)state;
    rng r = {21};
    expect e = {0};
    text t = make_jsonl(&r, 200, 30, 100000, 1, &e);
    write_file("lo.jsonl", t.p, t.len);
    prepack_store_options o = {.tmp_dir = test_tmpdir, .lengths_only = 1};
    prepack_store *s = NULL;
    assert_int_equal(prepack_store_create(&s, &o, NULL), PREPACK_OK);
    ingest_ok(s, "lo.jsonl", NULL);
    finish_ok(s);
    assert_int_equal(prepack_store_sequence_count(s), e.n);
    for (size_t i = 0; i < e.n; i++)
        assert_int_equal(prepack_store_lengths(s)[i], e.len[i]);
    assert_int_equal(prepack_store_dtype(s), PREPACK_DTYPE_UINT32);
    prepack_store_free(s);
    /* a bad id is still found */
    const char *bad = "{\"input_ids\": [1]}\n{\"input_ids\": [-1]}\n";
    write_file("lo_bad.jsonl", bad, strlen(bad));
    assert_int_equal(prepack_store_create(&s, &o, NULL), PREPACK_OK);
    prepack_diag d = {0};
    assert_int_equal(prepack_ingest_file(s, path_of("lo_bad.jsonl"), NULL, &d),
                     PREPACK_EFORMAT);
    assert_non_null(strstr(d.message, "lo_bad.jsonl:2: input_ids[0] is -1"));
    prepack_store_free(s);
    expect_free(&e);
    free(t.p);
}

/* ---- the store itself ---------------------------------------------------------- */

static void test_store_widens_and_masks(void **state)
{
    (void)state;
    prepack_store *s = new_store(PREPACK_DTYPE_AUTO);
    prepack_diag d = {0};
    assert_int_equal(prepack_store_begin_input(s, "mem", PREPACK_FORMAT_AUTO),
                     PREPACK_OK);
    expect e = {0};
    /* many uint16 tokens, then one that needs 32 bits, then a mask */
    uint32_t small[1000];
    for (int i = 0; i < 1000; i++)
        small[i] = (uint32_t)i * 60;
    for (int k = 0; k < 700; k++) { /* 700k tokens: more than one buffer */
        assert_int_equal(prepack_store_add(s, small, 1000, NULL, &d),
                         PREPACK_OK);
        assert_int_equal(prepack_store_end_sequence(s, &d), PREPACK_OK);
        expect_add(&e, small, 1000, NULL);
    }
    uint32_t wide[] = {1, 70000, 3};
    uint8_t m[] = {0, 1, 0};
    assert_int_equal(prepack_store_add(s, wide, 3, m, &d), PREPACK_OK);
    assert_int_equal(prepack_store_end_sequence(s, &d), PREPACK_OK);
    expect_add(&e, wide, 3, m);
    uint16_t tail[] = {9, 8};
    uint32_t tail32[] = {9, 8};
    assert_int_equal(prepack_store_add_u16(s, tail, 2, &d), PREPACK_OK);
    assert_int_equal(prepack_store_end_sequence(s, &d), PREPACK_OK);
    expect_add(&e, tail32, 2, NULL);
    assert_int_equal(prepack_store_end_sequence(s, &d), PREPACK_OK); /* no-op */
    finish_ok(s);
    assert_int_equal(prepack_store_dtype(s), PREPACK_DTYPE_UINT32);
    assert_int_equal(prepack_store_sequence_count(s), 702);
    assert_int_equal(prepack_store_token_count(s), 700005);
    check_store(s, &e, 0);
    assert_int_equal(prepack_store_document_count(s), 0);
    /* no more adding once finished */
    assert_int_equal(prepack_store_add(s, wide, 1, NULL, &d), PREPACK_EINVAL);
    prepack_store_free(s);
    expect_free(&e);
}

static void test_store_forced_dtype_and_errors(void **state)
{
    (void)state;
    prepack_store *s = new_store(PREPACK_DTYPE_UINT16);
    prepack_diag d = {0};
    uint32_t wide[] = {1, 70000};
    assert_int_equal(prepack_store_add(s, wide, 2, NULL, &d), PREPACK_ERANGE);
    assert_non_null(strstr(d.message, "does not fit the uint16 token dtype"));
    prepack_store_free(s);

    prepack_store_options o = {.tmp_dir = "/nonexistent/dir"};
    prepack_store *t = (prepack_store *)&o;
    assert_int_equal(prepack_store_create(&t, &o, &d), PREPACK_EIO);
    assert_null(t);
    assert_non_null(strstr(d.message, "/nonexistent/dir"));
    o.tmp_dir = NULL;
    o.dtype = (prepack_dtype)9;
    assert_int_equal(prepack_store_create(&t, &o, &d), PREPACK_EINVAL);
    prepack_store_free(NULL);

    prepack_dtype dt;
    assert_int_equal(prepack_dtype_parse("uint32", &dt), PREPACK_OK);
    assert_int_equal(dt, PREPACK_DTYPE_UINT32);
    assert_int_equal(prepack_dtype_parse("int8", &dt), PREPACK_EINVAL);
    assert_null(prepack_dtype_name((prepack_dtype)5));
    /* a width per named width: "uintN" holds N / 8 bytes; none else */
    for (int v = -1; v < 6; v++) {
        const char *name = prepack_dtype_name((prepack_dtype)v);
        size_t bits = name && !strncmp(name, "uint", 4)
                          ? (size_t)strtoul(name + 4, NULL, 10)
                          : 0;
        assert_int_equal(prepack_dtype_width((prepack_dtype)v), bits / 8);
    }
    assert_int_equal(prepack_dtype_width(PREPACK_DTYPE_UINT16), 2);
    assert_int_equal(prepack_dtype_width(PREPACK_DTYPE_UINT32), 4);
    assert_int_equal(prepack_dtype_width(PREPACK_DTYPE_AUTO), 0);
    prepack_format f;
    assert_int_equal(prepack_format_parse("raw-u16", &f), PREPACK_OK);
    assert_int_equal(f, PREPACK_FORMAT_RAW_U16);
    assert_string_equal(prepack_format_name(PREPACK_FORMAT_MEGATRON),
                        "megatron");
    assert_int_equal(prepack_format_parse("csv", &f), PREPACK_EINVAL);
}

/* Nothing is left in the store's directory, during or after. */
static void test_store_leaves_no_files(void **state)
{
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/empty-dir", test_tmpdir);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    prepack_store_options o = {.tmp_dir = dir};
    prepack_store *s = NULL;
    assert_int_equal(prepack_store_create(&s, &o, NULL), PREPACK_OK);
    uint32_t t[] = {1, 2, 3};
    uint8_t m[] = {1, 1, 0};
    assert_int_equal(prepack_store_add(s, t, 3, m, NULL), PREPACK_OK);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    assert_int_equal(system(cmd), 0); /* unlinked at creation */
    prepack_store_free(s);
    assert_int_equal(system(cmd), 0);
}

static void test_detect(void **state)
{
    (void)state;
    prepack_format f;
    prepack_diag d = {0};
    write_file("x.jsonl", "", 0);
    assert_int_equal(prepack_format_detect(path_of("x.jsonl"), &f, &d),
                     PREPACK_OK);
    assert_int_equal(f, PREPACK_FORMAT_JSONL);
    uint32_t g[] = {50256};
    write_llmc("d.bin", 20240520, 1, g, 1, 2);
    assert_int_equal(prepack_format_detect(path_of("d.bin"), &f, &d),
                     PREPACK_OK);
    assert_int_equal(f, PREPACK_FORMAT_LLMC);
    write_file("p.bin", "\1\0\2\0", 4);
    write_file("p.idx", "", 0);
    assert_int_equal(prepack_format_detect(path_of("p.bin"), &f, &d),
                     PREPACK_OK);
    assert_int_equal(f, PREPACK_FORMAT_MEGATRON);
    write_file("q.bin", "\1\0\2\0", 4);
    assert_int_equal(prepack_format_detect(path_of("q.bin"), &f, &d),
                     PREPACK_EFORMAT);
    assert_non_null(strstr(d.message, "pass a format"));
    assert_int_equal(prepack_format_detect(path_of("none.bin"), &f, &d),
                     PREPACK_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_plain),
        cmocka_unit_test(test_jsonl_chunks_and_long_lines),
        cmocka_unit_test(test_jsonl_compressed),
        cmocka_unit_test(test_jsonl_custom_field),
        cmocka_unit_test(test_jsonl_records_past_2_to_24),
        cmocka_unit_test(test_llmc_gpt2_and_llama3),
        cmocka_unit_test(test_raw_and_separator_options),
        cmocka_unit_test(test_megatron_dtypes),
        cmocka_unit_test(test_megatron_long_sequence),
        cmocka_unit_test(test_megatron_on_threads),
        cmocka_unit_test(test_token_files_on_threads),
        cmocka_unit_test(test_allocation_failures_on_threads),
        cmocka_unit_test(test_zstd_frames_decoded_on_workers),
        cmocka_unit_test(test_zstd_frame_lies_same_at_every_thread_count),
        cmocka_unit_test(test_zstd_frame_window_too_small),
        cmocka_unit_test(test_mixed_inputs),
        cmocka_unit_test(test_lengths_only),
        cmocka_unit_test(test_store_widens_and_masks),
        cmocka_unit_test(test_store_forced_dtype_and_errors),
        cmocka_unit_test(test_store_leaves_no_files),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests_name("ingest", tests, tmpdir_setup,
                                       tmpdir_teardown);
}
