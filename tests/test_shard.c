/* Shard sets: round trips (every token back in place), determinism, the
 * writer's directory rules, and damage the reader must report. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/utf8.h"
#include "prepack.h"
#include "shard_wrap.h"
#include "test_corpus.h"
#include "test_tmpdir.h"
#include "test_util.h"

/* ---- a corpus, planned (tests/support/test_corpus.h) ------------------ */

enum { N = 300, L = 48 };

typedef test_corpus corpus;

static void make_corpus(corpus *c, uint64_t seed, uint32_t max_id)
{
    test_corpus_spec s = {.n = N,
                          .max_len = 80,
                          .max_id = max_id,
                          .seed = seed,
                          .max_seq_len = L,
                          .shuffle = 1,
                          .mask = TEST_MASK_RANDOM};
    assert_int_equal(test_corpus_make(c, &s), PREPACK_OK);
}

static void free_corpus(corpus *c)
{
    test_corpus_free(c);
    assert_int_equal(c->ca.live, 0);
}

static int threads_for_next_set = 0;

static void write_set(corpus *c, const char *dir, uint32_t rows_per_frame,
                      uint64_t shard_rows, int overwrite)
{
    prepack_writer_options wo = {.rows_per_frame = rows_per_frame,
                                 .shard_rows = shard_rows,
                                 .overwrite = overwrite,
                                 .threads = threads_for_next_set};
    prepack_diag d = {0};
    uint64_t bytes = 0;
    if (test_corpus_write(c, dir, &wo, &bytes, &d) != PREPACK_OK)
        fail_msg("%s", d.message);
    assert_true(bytes > 0);
}

/* ---- round trips ------------------------------------------------------------ */

static void check_set(corpus *c, const char *dir)
{
    prepack_reader *r = NULL;
    prepack_diag d = {0};
    if (prepack_reader_open(&r, dir, NULL, &d) != PREPACK_OK)
        fail_msg("%s", d.message);
    size_t rows = prepack_plan_row_count(c->plan);
    assert_int_equal(prepack_reader_row_count(r), rows);
    assert_int_equal(prepack_reader_max_seq_len(r), L);
    assert_int_equal(prepack_reader_token_dtype(r),
                     prepack_store_dtype(c->store));
    /* every chunk back in place: rebuild each sequence from the rows */
    uint32_t *seen = calloc(N, sizeof *seen);
    for (size_t k = 0; k < rows; k++) {
        size_t i = k % 2 ? rows - 1 - k / 2 : k / 2; /* jump around */
        prepack_row row;
        if (prepack_reader_row(r, i, &row, &d) != PREPACK_OK)
            fail_msg("%s", d.message);
        assert_int_equal(row.num_seqs, prepack_plan_row_size(c->plan, i));
        assert_non_null(row.loss_mask);
        assert_non_null(row.seq_starts);
        for (size_t j = 0; j < row.num_seqs; j++) {
            size_t s = (size_t)row.seq_ids[j], off = row.seq_starts[j];
            prepack_item it = prepack_plan_item(c->plan, i, j);
            assert_int_equal(it.seq_id, s);
            assert_int_equal(it.offset, off);
            for (int32_t t = row.cu_seqlens[j]; t < row.cu_seqlens[j + 1];
                 t++) {
                size_t at = off + (size_t)(t - row.cu_seqlens[j]);
                assert_int_equal(prepack_row_token(&row, (size_t)t),
                                 c->seq[s][at]);
                assert_int_equal(row.loss_mask[t], c->mask[s][at]);
                seen[s]++;
            }
        }
    }
    for (size_t s = 0; s < N; s++)
        assert_int_equal(seen[s], c->len[s]);
    free(seen);
    prepack_diag d2 = {0};
    prepack_row row;
    assert_int_equal(prepack_reader_row(r, rows, &row, &d2), PREPACK_EINVAL);
    prepack_reader_free(r);
}

static void test_round_trip(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 1, 60000);
    write_set(&c, path_of("a"), 3, 10, 0); /* many frames and shards */
    check_set(&c, path_of("a"));
    write_set(&c, path_of("b"), 0, 0, 0); /* defaults: one shard */
    check_set(&c, path_of("b"));
    free_corpus(&c);
    make_corpus(&c, 2, 3000000); /* uint32 tokens */
    assert_int_equal(prepack_store_dtype(c.store), PREPACK_DTYPE_UINT32);
    threads_for_next_set = 2;
    write_set(&c, path_of("c"), 5, 7, 0);
    threads_for_next_set = 0;
    check_set(&c, path_of("c"));
    free_corpus(&c);
}

static void test_deterministic(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 3, 60000);
    write_set(&c, path_of("d1"), 4, 20, 0);
    threads_for_next_set = 3; /* the same bytes from three threads */
    write_set(&c, path_of("d2"), 4, 20, 0);
    threads_for_next_set = 0;
    char a[600], b[600];
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/shard-%05d.zst", path_of("d1"), i);
        snprintf(b, sizeof b, "%s/shard-%05d.zst", path_of("d2"), i);
        assert_true(test_same_file(a, b));
    }
    /* the manifest too, but for the paths of the inputs: none here */
    snprintf(a, sizeof a, "%s/manifest.json", path_of("d1"));
    snprintf(b, sizeof b, "%s/manifest.json", path_of("d2"));
    assert_true(test_same_file(a, b));
    free_corpus(&c);
}

/* ---- batches --------------------------------------------------------------------- */

static void test_batches(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 6, 60000);
    write_set(&c, path_of("batch"), 4, 12, 0);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, path_of("batch"), NULL, NULL),
                     PREPACK_OK);
    size_t pick[] = {5, 0, 17, 5};
    enum { B = 4 };
    /* each row alone, for comparison */
    size_t T[B], K[B];
    uint64_t *ids[B];
    int64_t *lab[B];
    for (size_t i = 0; i < B; i++) {
        prepack_row row;
        assert_int_equal(prepack_reader_row(r, pick[i], &row, NULL),
                         PREPACK_OK);
        T[i] = row.num_tokens;
        K[i] = row.num_seqs;
        ids[i] = malloc(row.num_tokens * sizeof **ids);
        lab[i] = malloc(row.num_tokens * sizeof **lab);
        for (size_t t = 0; t < row.num_tokens; t++)
            ids[i][t] = prepack_row_token(&row, t);
        prepack_row_labels(&row, lab[i], row.num_tokens);
    }
    /* flat: rows back to back, cu_seqlens continuing, documents unique */
    prepack_batch b;
    assert_int_equal(prepack_reader_batch(r, pick, B, NULL, &b, NULL),
                     PREPACK_OK);
    size_t at = 0, seqs = 0;
    assert_int_equal(b.cu_seqlens[0], 0);
    assert_null(b.attention_mask);
    for (size_t i = 0; i < B; i++) {
        for (size_t t = 0; t < T[i]; t++) {
            assert_int_equal(b.input_ids[at + t], (int64_t)ids[i][t]);
            assert_int_equal(b.labels[at + t], lab[i][t]);
            assert_true(b.doc_ids[at + t] >= (int64_t)seqs &&
                        b.doc_ids[at + t] < (int64_t)(seqs + K[i]));
        }
        at += T[i];
        seqs += K[i];
        assert_int_equal(b.cu_seqlens[seqs], (int32_t)at);
    }
    assert_int_equal(b.width, at);
    assert_int_equal(b.num_seqs, seqs);
    assert_true(b.max_seqlen >= 1 && b.max_seqlen <= L);
    /* padded: [B, L], pad_id, attention mask, per-row documents */
    prepack_batch_options po = {.padded = 1, .pad_id = 50256, .dense_mask = 1};
    assert_int_equal(prepack_reader_batch(r, pick, B, &po, &b, NULL),
                     PREPACK_OK);
    assert_int_equal(b.width, L);
    assert_null(b.cu_seqlens);
    for (size_t i = 0; i < B; i++)
        for (size_t t = 0; t < L; t++) {
            size_t p = i * L + t;
            int in = t < T[i];
            assert_int_equal(b.attention_mask[p], in);
            assert_int_equal(b.input_ids[p], in ? (int64_t)ids[i][t] : 50256);
            assert_int_equal(b.labels[p], in ? lab[i][t] : -100);
            if (!in)
                assert_int_equal(b.doc_ids[p], -1);
            else
                assert_true(b.doc_ids[p] >= 0 && b.doc_ids[p] < (int64_t)K[i]);
            /* the diagonal of the dense mask: tokens see themselves */
            assert_int_equal(b.dense_mask[i * L * L + t * L + t], in);
        }
    for (size_t i = 0; i < B; i++) {
        free(ids[i]);
        free(lab[i]);
    }
    size_t bad[] = {0, 100000};
    prepack_diag d = {0};
    assert_int_equal(prepack_reader_batch(r, bad, 2, NULL, &b, &d),
                     PREPACK_EINVAL);
    prepack_reader_free(r);
    free_corpus(&c);
}

/* A batch of no rows is empty, not a crash: flat cu_seqlens is [0], on a
 * fresh reader (no buffers yet) and after a larger batch alike. */
static void test_empty_batch(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 7, 60000);
    write_set(&c, path_of("empty_batch"), 4, 12, 0);
    prepack_reader *r = NULL;
    assert_int_equal(
        prepack_reader_open(&r, path_of("empty_batch"), NULL, NULL),
        PREPACK_OK);
    for (int round = 0; round < 2; round++) {
        prepack_batch b;
        assert_int_equal(prepack_reader_batch(r, NULL, 0, NULL, &b, NULL),
                         PREPACK_OK);
        assert_int_equal(b.rows, 0);
        assert_int_equal(b.width, 0);
        assert_int_equal(b.num_seqs, 0);
        assert_non_null(b.cu_seqlens);
        assert_int_equal(b.cu_seqlens[0], 0);
        prepack_batch_options po = {.padded = 1, .dense_mask = 1};
        assert_int_equal(prepack_reader_batch(r, NULL, 0, &po, &b, NULL),
                         PREPACK_OK);
        assert_int_equal(b.rows, 0);
        size_t two[] = {0, 1};
        assert_int_equal(prepack_reader_batch(r, two, 2, NULL, &b, NULL),
                         PREPACK_OK);
    }
    prepack_reader_free(r);
    free_corpus(&c);
}

/* prepack_reader_batch_into: the same batch as prepack_reader_batch, in
 * the caller's arrays; arrays too small are PREPACK_ERANGE. */
static void test_batch_into_caller_arrays(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 9, 60000);
    const char *dir = path_of("batch_into");
    write_set(&c, dir, 4, 12, 0);
    prepack_reader *r = NULL;
    assert_int_equal(prepack_reader_open(&r, dir, NULL, NULL), PREPACK_OK);
    size_t len = prepack_reader_max_seq_len(r), n = 5;
    size_t rows[] = {3, 0, 7, 1, 2}, cap = n * len;
    int64_t *a[4];
    for (int k = 0; k < 4; k++)
        a[k] = calloc(cap, sizeof **a);
    int32_t *cu = calloc(cap + 1, sizeof *cu);
    uint64_t *seq = calloc(cap, sizeof *seq);
    uint8_t *attn = calloc(cap, 1), *dense = calloc(n * len * len, 1);
    prepack_batch_arrays dst = {a[0], a[1], a[2],          a[3],
                                cu,   seq,  attn,          dense,
                                cap,  cap,  n * len * len, NULL};
    for (int padded = 0; padded < 2; padded++) {
        prepack_batch_options o = {.padded = padded, .pad_id = 5,
                                   .dense_mask = padded};
        prepack_batch want, got;
        assert_int_equal(prepack_reader_batch(r, rows, n, &o, &want, NULL),
                         PREPACK_OK);
        /* copy what the reader's own buffers hold: the next call reuses
         * nothing of them, but compare against a stable copy anyway */
        size_t T = want.rows * (padded ? want.width : 1);
        T = padded ? T : want.width;
        int64_t *ids = malloc(T * sizeof *ids), *lab = malloc(T * sizeof *lab);
        memcpy(ids, want.input_ids, T * sizeof *ids);
        memcpy(lab, want.labels, T * sizeof *lab);
        assert_int_equal(
            prepack_reader_batch_into(r, rows, n, &o, &dst, &got, NULL),
            PREPACK_OK);
        assert_ptr_equal(got.input_ids, a[0]);
        assert_int_equal(got.width, want.width);
        assert_int_equal(got.num_seqs, want.num_seqs);
        assert_int_equal(got.max_seqlen, want.max_seqlen);
        assert_memory_equal(got.input_ids, ids, T * sizeof *ids);
        assert_memory_equal(got.labels, lab, T * sizeof *lab);
        free(ids);
        free(lab);
    }
    /* arrays one row too small */
    prepack_batch_arrays small = dst;
    small.tokens_cap = small.seqs_cap = 1;
    prepack_batch got;
    prepack_diag d = {0};
    assert_int_equal(prepack_reader_batch_into(r, rows, n, NULL, &small, &got,
                                               &d),
                     PREPACK_ERANGE);
    assert_non_null(strstr(d.message, "does not fit the arrays given"));
    /* padded needs attention_mask */
    prepack_batch_options po = {.padded = 1};
    small = dst;
    small.attention_mask = NULL;
    assert_int_equal(prepack_reader_batch_into(r, rows, n, &po, &small, &got,
                                               NULL),
                     PREPACK_EINVAL);
    for (int k = 0; k < 4; k++)
        free(a[k]);
    free(cu);
    free(seq);
    free(attn);
    free(dense);
    prepack_reader_free(r);
    free_corpus(&c);
}

/* ---- the writer's directory rules ---------------------------------------------- */

static int exists(const char *dir, const char *name)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_writer_directory_rules(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 4, 1000);
    const char *dir = path_of("w");
    write_set(&c, dir, 2, 4, 0);
    assert_true(exists(dir, "shard-00003.zst"));
    /* a non-empty directory needs overwrite */
    prepack_writer *w = NULL;
    prepack_diag d = {0};
    assert_int_equal(
        prepack_writer_create(&w, dir, L, PREPACK_DTYPE_UINT16, NULL, &d),
        PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "not empty"));
    /* overwrite replaces the set: fewer shards, none stale */
    write_set(&c, dir, 64, 0, 1);
    assert_true(exists(dir, "shard-00000.zst"));
    assert_false(exists(dir, "shard-00003.zst"));
    check_set(&c, dir);
    /* an unfinished overwrite leaves the old set as it was, and nothing
     * beside it (the new set is built in .w.prepack-<random>) */
    prepack_writer_options wo = {.overwrite = 1};
    assert_int_equal(
        prepack_writer_create(&w, dir, L, PREPACK_DTYPE_UINT16, &wo, &d),
        PREPACK_OK);
    assert_true(exists(dir, "manifest.json"));
    uint16_t t[] = {1, 2, 3};
    int32_t cu[] = {0, 3};
    uint64_t ids[] = {0};
    prepack_row row = {3, 1, PREPACK_DTYPE_UINT16, t, cu, ids, NULL, NULL};
    assert_int_equal(prepack_writer_add(w, &row, &d), PREPACK_OK);
    prepack_writer_free(w);
    check_set(&c, dir);
    assert_false(exists(dir, "shard-00000.zst.tmp"));
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q prepack-", path_of(""));
    assert_int_not_equal(system(cmd), 0);
    /* not ours: refuse to overwrite */
    FILE *f = fopen(path_of("w/notes.txt"), "w");
    fclose(f);
    assert_int_equal(
        prepack_writer_create(&w, dir, L, PREPACK_DTYPE_UINT16, &wo, &d),
        PREPACK_EINVAL);
    assert_non_null(strstr(d.message, "notes.txt"));
    /* rows that cannot fit a msgpack bin */
    assert_int_equal(prepack_writer_create(&w, path_of("big"), 1u << 30,
                                           PREPACK_DTYPE_UINT32, NULL, &d),
                     PREPACK_ERANGE);
    free_corpus(&c);
}

/* ---- symbolic links (issue 26, rule 2) ---------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int file_says(const char *path, const char *text)
{
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return !strcmp(buf, text);
}

/* A writer on a link named DIR is refused, overwriting or not, spelled
 * with a slash or not: the set the link points to stays whole. */
static void refuses_a_linked_dir(corpus *c)
{
    char victim[512]; /* path_of's buffers rotate */
    snprintf(victim, sizeof victim, "%s", path_of("victim"));
    write_set(c, victim, 8, 0, 0);
    assert_int_equal(mkdir(path_of("empty"), 0777), 0);
    assert_int_equal(symlink(victim, path_of("to-set")), 0);
    assert_int_equal(symlink(path_of("empty"), path_of("to-empty")), 0);
    prepack_writer_options over = {.overwrite = 1};
    const struct {
        const char *dir;
        const prepack_writer_options *o;
    } cases[] = {{"to-set", &over},     {"to-set/", &over},
                 {"to-set//", &over},   {"to-set/.", &over},
                 {"to-set/./", &over},  {"to-set//./.", &over},
                 {"to-empty", NULL},    {"to-empty/", NULL},
                 {"to-empty/.", NULL},  {"to-empty/./", NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        prepack_writer *w = NULL;
        prepack_diag d = {0};
        int rc = prepack_writer_create(&w, path_of(cases[i].dir), L,
                                       PREPACK_DTYPE_UINT16, cases[i].o, &d);
        if (rc == PREPACK_OK || !strstr(d.message, "symbolic link"))
            fail_msg("%s: %s (%s)", cases[i].dir, prepack_strerror(rc),
                     d.message);
    }
    check_set(c, victim);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q prepack-", path_of(""));
    assert_int_not_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", path_of("empty"));
    assert_int_equal(system(cmd), 0);
}

/* Links planted where the writer creates its temporaries (a shard's
 * .tmp, the manifest's), and in the old set it removes: it writes and
 * deletes none of the files they point to. */
static void writes_through_no_planted_link(corpus *c)
{
    char keep[512], dir[512]; /* path_of's buffers rotate */
    snprintf(keep, sizeof keep, "%s", path_of("keep.txt"));
    snprintf(dir, sizeof dir, "%s", path_of("planted"));
    write_file(keep, "keep");
    prepack_writer *w = NULL;
    prepack_diag d = {0};
    assert_int_equal(prepack_writer_create(&w, dir, L, PREPACK_DTYPE_UINT16,
                                           NULL, &d),
                     PREPACK_OK);
    assert_int_equal(symlink(keep, path_of("planted/shard-00000.zst.tmp")), 0);
    assert_int_equal(symlink(keep, path_of("planted/manifest.json.tmp")), 0);
    uint16_t t[] = {1, 2, 3};
    int32_t cu[] = {0, 3};
    uint64_t ids[] = {0};
    prepack_row row = {3, 1, PREPACK_DTYPE_UINT16, t, cu, ids, NULL, NULL};
    assert_int_equal(prepack_writer_add(w, &row, &d), PREPACK_OK);
    if (prepack_writer_finish(w, NULL, &d) != PREPACK_OK)
        fail_msg("%s", d.message);
    prepack_writer_free(w);
    assert_true(file_says(keep, "keep"));
    struct stat st;
    assert_int_equal(lstat(path_of("planted/manifest.json"), &st), 0);
    assert_true(S_ISREG(st.st_mode));
    /* the old set names a shard that is a link to keep.txt: replacing
     * the set removes the link, not keep.txt */
    assert_int_equal(symlink(keep, path_of("planted/shard-00001.zst")), 0);
    write_set(c, dir, 8, 0, 1);
    check_set(c, dir);
    assert_true(file_says(keep, "keep"));
}

static void test_writer_follows_no_links(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 7, 1000);
    refuses_a_linked_dir(&c);
    writes_through_no_planted_link(&c);
    free_corpus(&c);
}

/* ---- damage ---------------------------------------------------------------------- */

static void copy_dir(const char *from, const char *to)
{
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", to, from, to);
    assert_int_equal(system(cmd), 0);
}

/* Opens dir and reads every row; returns the first error (diag filled). */
static int read_all(const char *dir, prepack_diag *d)
{
    prepack_reader *r = NULL;
    int rc = prepack_reader_open(&r, dir, NULL, d);
    for (size_t i = 0; rc == PREPACK_OK && i < prepack_reader_row_count(r);
         i++) {
        prepack_row row;
        rc = prepack_reader_row(r, i, &row, d);
    }
    prepack_reader_free(r);
    return rc;
}

static void flip_byte(const char *path, long at)
{
    assert_int_equal(flip_byte_at(path, at, 0x5A), 0);
}

static void test_damage_is_reported(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 5, 60000);
    const char *good = path_of("good");
    write_set(&c, good, 4, 40, 0);
    prepack_diag d = {0};
    assert_int_equal(read_all(good, &d), PREPACK_OK);
    const char *bad = path_of("bad");
    char shard[600], cmd[1200];
    snprintf(shard, sizeof shard, "%s/shard-00001.zst", bad);
    struct stat st;

    /* a flipped byte anywhere in a shard: every position of a sample */
    copy_dir(good, bad);
    assert_int_equal(stat(shard, &st), 0);
    for (long at = 0; at < st.st_size; at += 37) {
        copy_dir(good, bad);
        flip_byte(shard, at);
        memset(&d, 0, sizeof d);
        int rc = read_all(bad, &d);
        if (rc == PREPACK_OK)
            fail_msg("flipped byte %ld of %ld went unnoticed", at,
                     (long)st.st_size);
        assert_int_equal(rc, PREPACK_ECORRUPT);
        assert_non_null(strstr(d.message, "shard-00001.zst"));
    }
    /* truncated */
    copy_dir(good, bad);
    assert_int_equal(truncate(shard, st.st_size - 10), 0);
    assert_int_equal(read_all(bad, &d), PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "the manifest says"));
    /* missing */
    copy_dir(good, bad);
    unlink(shard);
    assert_int_equal(read_all(bad, &d), PREPACK_EIO);
    assert_non_null(strstr(d.message, "shard-00001.zst"));
    /* manifests that lie or point outside */
    copy_dir(good, bad);
    snprintf(
        cmd, sizeof cmd,
        "sed -i 's/shard-00000.zst/..\\/..\\/etc\\/passwd/' '%s/manifest.json'",
        bad);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(read_all(bad, &d), PREPACK_EFORMAT);
    assert_non_null(strstr(d.message, "names '../../etc/passwd', shard 0 is "
                                      "shard-00000.zst"));
    copy_dir(good, bad);
    snprintf(cmd, sizeof cmd,
             "sed -i 's/prepack-shards/other/' '%s/manifest.json'", bad);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(read_all(bad, &d), PREPACK_EFORMAT);
    copy_dir(good, bad);
    snprintf(cmd, sizeof cmd, "echo '{' > '%s/manifest.json'", bad);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(read_all(bad, &d), PREPACK_EFORMAT);
    /* what is missing is said of the directory (issue 29) */
    assert_int_equal(read_all(path_of("none"), &d), PREPACK_EIO);
    assert_non_null(strstr(d.message, "none: no such directory"));
    /* a manifest no set could need is refused before it is read */
    copy_dir(good, bad);
    snprintf(cmd, sizeof cmd, "%s/manifest.json", bad);
    assert_int_equal(truncate(cmd, 300L << 20), 0); /* sparse */
    assert_int_equal(read_all(bad, &d), PREPACK_EFORMAT);
    assert_non_null(strstr(d.message, "more than a manifest can"));
    free_corpus(&c);
}

/* ---- damage, region by region ------------------------------------------------ */

/* Frame offsets and sizes of a shard, from its seek table; returns the
 * frame count and the seek table's offset in *table_at. */
static size_t frames_of(const char *path, long *off, long *size, size_t cap,
                        long *table_at)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    unsigned char foot[PP_SEEK_FOOTER_BYTES], e[PP_SEEK_ENTRY_BYTES];
    fseek(f, end - PP_SEEK_FOOTER_BYTES, SEEK_SET);
    assert_int_equal(fread(foot, 1, sizeof foot, f), sizeof foot);
    uint32_t n = pp_load_le32(foot);
    assert_true(n <= cap);
    *table_at = end - (long)pp_seek_table_bytes(n);
    long at = 0;
    for (uint32_t i = 0; i < n; i++) {
        fseek(f, *table_at + PP_SEEK_HEADER_BYTES + (long)sizeof e * i,
              SEEK_SET);
        assert_int_equal(fread(e, 1, sizeof e, f), sizeof e);
        off[i] = at;
        size[i] = (long)pp_load_le32(e);
        at += size[i];
    }
    fclose(f);
    return n;
}

typedef struct problems {
    size_t n;
    char text[4096];
} problems;

static void collect(void *opaque, const prepack_diag *d)
{
    problems *p = opaque;
    p->n++;
    size_t used = strlen(p->text);
    snprintf(p->text + used, sizeof p->text - used, "%s\n", d->message);
}

/* Opens dir and verifies it: the open's error, or each problem verify
 * found, in p->text. Returns the problem count (1 for a failed open). */
static size_t verify_dir(const char *dir, problems *p)
{
    memset(p, 0, sizeof *p);
    prepack_reader *r = NULL;
    prepack_diag d = {0};
    if (prepack_reader_open(&r, dir, NULL, &d) != PREPACK_OK) {
        collect(p, &d);
        return p->n;
    }
    size_t n = prepack_reader_verify(r, collect, p);
    assert_int_equal(n, p->n);
    prepack_reader_free(r);
    return n;
}

static void expect_problem(const char *dir, const char *a, const char *b)
{
    problems p;
    if (verify_dir(dir, &p) == 0)
        fail_msg("no problem found, expected \"%s\"", a);
    if (!strstr(p.text, a) || (b && !strstr(p.text, b)))
        fail_msg("expected \"%s\"%s%s%s in:\n%s", a, b ? " and \"" : "",
                 b ? b : "", b ? "\"" : "", p.text);
}

/* Rewrites the number (or hex string) that follows `key` in the manifest
 * entry of `file`, adding `delta` to it (for a hex string: flips its
 * first digit). */
static void edit_manifest(const char *dir, const char *file, const char *key,
                          long delta)
{
    char path[700], text[8192], out[8300];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *entry = strstr(text, file);
    assert_non_null(entry);
    char *at = strstr(entry, key);
    assert_non_null(at);
    at += strlen(key);
    size_t head = (size_t)(at - text);
    memcpy(out, text, head);
    char *rest;
    if (*at == '"') { /* a hex string: change its first digit */
        memcpy(out + head, at, 2);
        out[head + 1] = at[1] == '0' ? '1' : '0';
        rest = at + 2;
        head += 2;
    } else {
        long v = strtol(at, &rest, 10);
        head += (size_t)sprintf(out + head, "%ld", v + delta);
    }
    strcpy(out + head, rest);
    f = fopen(path, "wb");
    fputs(out, f);
    fclose(f);
}

/* A flipped byte in each region of a shard, and manifests that describe
 * something else: the problem names the file, the frame and the region. */
/* An overwritten set keeps its directory's mode (the staging directory
 * is made by mkdtemp, 0700, and used to replace a 0750 one). */
static void test_overwrite_keeps_the_mode(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 3, 500);
    const char *dir = path_of("mode");
    write_set(&c, dir, 4, 0, 0);
    assert_int_equal(chmod(dir, 0750), 0);
    write_set(&c, dir, 4, 0, 1);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0750);
    free_corpus(&c);
}

/* A shard replaced by a FIFO or a directory: refused by name at once,
 * never waited on (a blocking open of a FIFO waits for a writer; the
 * alarm fails the test instead of hanging it). */
static void test_a_shard_that_is_not_a_file_is_refused(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 9, 2000);
    const char *good = path_of("notfile-good");
    write_set(&c, good, 4, 40, 0);
    const char *bad = path_of("notfile-bad");
    char shard[600];
    snprintf(shard, sizeof shard, "%s/shard-00000.zst", bad);
    for (int kind = 0; kind < 2; kind++) {
        copy_dir(good, bad);
        assert_int_equal(unlink(shard), 0);
        assert_int_equal(kind ? mkdir(shard, 0700) : mkfifo(shard, 0600), 0);
        alarm(20);
        prepack_diag d = {0};
        assert_int_equal(read_all(bad, &d), PREPACK_ECORRUPT);
        alarm(0);
        assert_non_null(strstr(d.message, "shard-00000.zst"));
        assert_non_null(strstr(d.message, "not a regular file"));
    }
    free_corpus(&c);
}

static void test_damage_names_the_region(void **state)
{
    (void)state;
    corpus c;
    make_corpus(&c, 11, 60000);
    const char *good = path_of("regions-good");
    write_set(&c, good, 4, 40, 0);
    const char *bad = path_of("regions-bad");
    char shard[600];
    snprintf(shard, sizeof shard, "%s/shard-00001.zst", bad);
    long off[64], size[64], table;
    copy_dir(good, bad);
    size_t nf = frames_of(shard, off, size, 64, &table);
    assert_true(nf >= 3);

    copy_dir(good, bad); /* frame header: the zstd magic number */
    flip_byte(shard, off[1]);
    expect_problem(bad, "shard-00001.zst", "frame 1:");
    copy_dir(good, bad); /* payload */
    flip_byte(shard, off[1] + size[1] / 2);
    expect_problem(bad, "shard-00001.zst", "frame 1:");
    copy_dir(good, bad); /* the frame's own checksum, its last 4 bytes */
    flip_byte(shard, off[1] + size[1] - 2);
    expect_problem(bad, "frame 1:", "xxh64");
    copy_dir(good, bad); /* seek table: frame 2's checksum entry */
    flip_byte(shard, table + 8 + 12 * 2 + 8);
    expect_problem(bad, "frame 2: content does not match its seek table", NULL);
    copy_dir(good, bad); /* seek table: frame 0's compressed size: the
                          * frames no longer end where the index starts */
    flip_byte(shard, table + 8);
    problems p;
    assert_true(verify_dir(bad, &p) > 0);
    if (!strstr(p.text, "frames cover") &&
        !strstr(p.text, "no index before the seek table"))
        fail_msg("frames that do not tile the shard, in:\n%s", p.text);
    /* the index (format version 4), between the frames and the seek
     * table: its magic, its frame count, one of its ids, a frame's hash */
    long index = off[nf - 1] + size[nf - 1];
    copy_dir(good, bad);
    flip_byte(shard, index);
    expect_problem(bad, "shard-00001.zst", "no index before the seek table");
    copy_dir(good, bad);
    flip_byte(shard, index + 12);
    expect_problem(bad, "shard-00001.zst", "bad index frame header");
    copy_dir(good, bad);
    flip_byte(shard, index + 24);
    expect_problem(bad, "shard-00001.zst", "its index does not match its hash");
    copy_dir(good, bad);
    flip_byte(shard, table - 8 * (long)(nf - 1));
    expect_problem(bad, "shard-00001.zst", "its index does not match its hash");
    copy_dir(good, bad); /* seek table footer: the frame count */
    flip_byte(shard, table + 12 * (long)nf + 8);
    expect_problem(bad, "shard-00001.zst", "seek table lists");

    /* manifests describing something else */
    copy_dir(good, bad);
    edit_manifest(bad, "shard-00001.zst", "\"xxh64\": ", 0);
    expect_problem(bad, "shard-00001.zst: xxh64", "the manifest says");
    copy_dir(good, bad);
    edit_manifest(bad, "shard-00001.zst", "\"bytes\": ", 1);
    expect_problem(bad, "shard-00001.zst", "bytes, the manifest says");
    copy_dir(good, bad);
    edit_manifest(bad, "shard-00001.zst", "\"rows\": ", 8);
    expect_problem(bad, "manifest.json: says", "its shards");

    /* files the manifest does not list */
    copy_dir(good, bad);
    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "cp '%s' '%s/shard-00009.zst' && touch "
             "'%s/shard-00002.zst.tmp' '%s/notes.txt'",
             shard, bad, bad, bad);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(verify_dir(bad, &p), 2);
    assert_non_null(strstr(p.text, "shard-00009.zst: not listed"));
    assert_non_null(strstr(p.text, "shard-00002.zst.tmp: not listed"));
    assert_null(strstr(p.text, "notes.txt"));

    /* open_damaged: every damaged shard listed, the intact ones readable */
    copy_dir(good, bad);
    snprintf(cmd, sizeof cmd, "rm '%s/shard-00000.zst' && truncate -s -3 '%s'",
             bad, shard);
    assert_int_equal(system(cmd), 0);
    prepack_reader_options ro = {.open_damaged = 1};
    prepack_reader *r = NULL;
    prepack_diag d = {0};
    assert_int_equal(prepack_reader_open(&r, bad, &ro, &d), PREPACK_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(prepack_reader_verify(r, collect, &p), 2);
    assert_non_null(strstr(p.text, "cannot open"));
    assert_non_null(strstr(p.text, "shard-00001.zst"));
    prepack_row row;
    assert_int_equal(prepack_reader_row(r, 0, &row, &d), PREPACK_EIO);
    assert_non_null(strstr(d.message, "shard-00000.zst"));
    assert_int_equal(prepack_reader_row(r, 45, &row, &d), PREPACK_ECORRUPT);
    assert_non_null(strstr(d.message, "shard-00001.zst"));
    size_t rows = prepack_reader_row_count(r);
    assert_int_equal(prepack_reader_row(r, rows - 1, &row, &d), PREPACK_OK);
    prepack_reader_free(r);
    assert_int_equal(prepack_reader_open(&r, bad, NULL, &d), PREPACK_EIO);
    assert_null(r);
    free_corpus(&c);
}

/* ---- rows that lie, behind intact checksums ------------------------------------ */

/* A set of one shard whose one frame holds `raw` (rows rows), compressed
 * and listed correctly: only the row decoding can object. */
static int read_raw_frame(const char *name, const unsigned char *raw, size_t n,
                          unsigned rows, prepack_diag *d)
{
    const char *dir = path_of(name);
    assert_int_equal(mkdir(dir, 0777), 0);
    static unsigned char shard[1 << 16];
    size_t size = wrap_as_shard(raw, n, shard, sizeof shard);
    assert_true(size > 0);
    char path[700], text[600];
    snprintf(path, sizeof path, "%s/shard-00000.zst", dir);
    FILE *f = fopen(path, "wb");
    fwrite(shard, 1, size, f);
    fclose(f);
    snprintf(text, sizeof text,
             "{\"format\": \"prepack-shards\", \"version\": 1, "
             "\"max_seq_len\": 8, \"token_dtype\": \"uint16\", "
             "\"rows_per_frame\": %u, \"shards\": [{\"file\": "
             "\"shard-00000.zst\", \"rows\": %u, \"tokens\": %u, "
             "\"bytes\": %zu, \"xxh64\": \"%016llx\"}], \"rows\": %u, "
             "\"tokens\": %u}",
             rows, rows, rows, size, (unsigned long long)XXH64(shard, size, 0),
             rows, rows);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return read_all(dir, d);
}

/* ---- id codes (format version 4) ------------------------------------------------ */

/* One id's code as docs/FORMAT.md words it, looked up the slow way: the
 * reference pp_encode_id_codes is held to. */
static size_t reference_code(uint32_t id, const uint32_t *table, size_t n,
                             unsigned width, unsigned char *out)
{
    for (size_t r = 0; r < n && id < PP_ID_TABLE_ID_LIMIT; r++) {
        if (table[r] != id)
            continue;
        if (r < 192) {
            out[0] = (unsigned char)r;
            return 1;
        }
        out[0] = (unsigned char)(192 + (r - 192) / 256);
        out[1] = (unsigned char)((r - 192) % 256);
        return 2;
    }
    out[0] = 255;
    for (unsigned b = 0; b < width; b++)
        out[1 + b] = (unsigned char)(id >> (8 * b));
    return 1 + width;
}

/* Random tables (0 to PP_ID_TABLE_MAX distinct ids) and rows (ids in the
 * table, past it, past 2^22): the codes are the reference's byte for
 * byte and decode back; a cut, an extra byte or a table one id short
 * (when the row uses the last rank) is refused. */
static void test_id_codes_round_trip(void **state)
{
    (void)state;
    enum { T = 3000 };
    static uint32_t table[PP_ID_TABLE_MAX], ids[T], back[T];
    static uint16_t table16[PP_ID_TABLE_MAX]; /* the decoder's, at width 2 */
    static uint16_t rank[1u << 16];
    static unsigned char codes[T * 5 + 8], want[T * 5 + 8];
    srand(42);
    for (int round = 0; round < 60; round++) {
        unsigned width = round % 2 ? 4 : 2;
        size_t n = (size_t)rand() % (round % 3 ? 400 : PP_ID_TABLE_MAX + 1);
        uint32_t ranked = 1u << 16; /* the rank array's span */
        memset(rank, 0, sizeof rank);
        for (size_t r = 0; r < n; r++) { /* distinct ids below 2^16 */
            uint32_t id;
            do
                id = (uint32_t)rand() & 0xFFFF;
            while (rank[id]);
            table[r] = id;
            table16[r] = (uint16_t)id;
            rank[id] = (uint16_t)(r + 1);
        }
        const void *at_width = width == 2 ? (const void *)table16 : table;
        size_t len = 0;
        for (size_t i = 0; i < T; i++) {
            int pick = rand() % 10;
            uint32_t id = n && pick < 7 ? table[(size_t)rand() % n]
                                        : (uint32_t)rand() & 0xFFFF;
            if (width == 4 && pick == 9)
                id = (uint32_t)rand() << 8 | (uint32_t)(rand() & 0xFF);
            ids[i] = id;
            len += reference_code(id, table, n, width, want + len);
        }
        uint16_t small[T];
        for (size_t i = 0; i < T; i++)
            small[i] = (uint16_t)ids[i];
        if (width == 2) /* uint16 rows: every id fits */
            for (size_t i = 0; i < T; i++)
                ids[i] = small[i];
        const void *row = width == 2 ? (const void *)small : (const void *)ids;
        size_t got = pp_encode_id_codes(codes, row, T, width, rank, ranked);
        assert_int_equal(got, len);
        assert_memory_equal(codes, want, len);
        memset(back, 0, sizeof back);
        assert_int_equal(
            pp_decode_id_codes(back, width, codes, len, T, at_width, n), 0);
        if (width == 2)
            assert_memory_equal(back, small, T * 2);
        else
            assert_memory_equal(back, ids, T * 4);
        assert_int_equal(
            pp_decode_id_codes(back, width, codes, len - 1, T, at_width, n), -1);
        codes[len] = 0;
        assert_int_equal(
            pp_decode_id_codes(back, width, codes, len + 1, T, at_width, n), -1);
        assert_int_equal(
            pp_decode_id_codes(back, width, codes, len, T - 1, at_width, n), -1);
        int uses_last = 0;
        for (size_t i = 0; n && i < T; i++)
            uses_last |= (uint32_t)(width == 2 ? small[i] : ids[i]) ==
                         table[n - 1];
        if (uses_last)
            assert_int_equal(pp_decode_id_codes(back, width, codes, len, T,
                                                at_width, n - 1),
                             -1);
    }
}

/* docs/FORMAT.md's decoding, code by code: the n ids of the nbytes at
 * in, or -1 (cut short, bytes left over, a rank past the table). */
static int reference_decode(uint32_t *out, unsigned width,
                            const unsigned char *in, size_t nbytes, size_t n,
                            const uint32_t *table, size_t ntable)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (at >= nbytes)
            return -1;
        unsigned b = in[at];
        size_t rank;
        if (b < 192) {
            rank = b;
            at += 1;
        } else if (b < 255) {
            if (nbytes - at < 2)
                return -1;
            rank = 192 + (size_t)(b - 192) * 256 + in[at + 1];
            at += 2;
        } else {
            if (nbytes - at < 1 + width)
                return -1;
            uint32_t id = 0;
            for (unsigned k = 0; k < width; k++)
                id |= (uint32_t)in[at + 1 + k] << (8 * k);
            out[i] = id;
            at += 1 + width;
            continue;
        }
        if (rank >= ntable)
            return -1;
        out[i] = table[rank];
    }
    return at == nbytes ? 0 : -1;
}

/* Any bytes, not only codes the writer makes: runs of lead bytes of
 * every length across the decoder's 64-byte blocks, escapes anywhere
 * (the second byte of a two-byte code included), ranks past tables of 0
 * to PP_ID_TABLE_MAX ids, token counts one off. The decoder agrees with
 * reference_decode on whether the bytes are n codes and on the ids, on
 * the path this CPU takes and on the portable one. */
typedef int decode_fn(void *out, unsigned width, const unsigned char *in,
                      size_t nbytes, size_t n, const void *table,
                      size_t ntable);

static void id_codes_any_bytes(decode_fn *decode)
{
    enum { MAXB = 700 };
    static uint32_t table[PP_ID_TABLE_MAX], want[MAXB];
    static uint16_t table16[PP_ID_TABLE_MAX];
    static unsigned char in[MAXB];
    uint32_t got[MAXB];
    srand(7);
    /* first the edges of a block: 63 one-byte codes, then a two-byte
     * code or an escape at its last byte, whole or cut short */
    for (size_t r = 0; r < PP_ID_TABLE_MAX; r++)
        table[r] = table16[r] = (uint16_t)r;
    for (unsigned width = 2; width <= 4; width += 2)
        for (int last = 0; last < 2; last++)
            for (size_t cut = 0; cut < 3; cut++) {
                size_t whole = 64 + (last ? width : 1);
                memset(in, 7, 63);
                in[63] = last ? 255 : 200;
                memset(in + 64, 1, width);
                size_t nbytes = whole - cut;
                unsigned char *exact = malloc(nbytes);
                assert_non_null(exact);
                memcpy(exact, in, nbytes);
                int rc = decode(got, width, exact, nbytes, 64,
                                            width == 2 ? (const void *)table16
                                                       : (const void *)table,
                                            PP_ID_TABLE_MAX);
                free(exact);
                assert_int_equal(rc, reference_decode(want, width, in, nbytes,
                                                      64, table,
                                                      PP_ID_TABLE_MAX));
            }
    for (int round = 0; round < 20000; round++) {
        unsigned width = round % 2 ? 4 : 2;
        size_t ntable = round % 5 == 0   ? (size_t)rand() % 200
                        : round % 5 == 1 ? PP_ID_TABLE_MAX
                                         : (size_t)rand() % PP_ID_TABLE_MAX;
        for (size_t r = 0; r < ntable; r++) {
            table[r] = (uint32_t)rand() & (width == 2 ? 0xFFFF : 0xFFFFFF);
            table16[r] = (uint16_t)table[r];
        }
        size_t nbytes = (size_t)rand() % MAXB;
        int leads = rand() % 100; /* percent of bytes >= 192 */
        /* percent of bytes 255: few, as on real text, or many (ids past
         * the table), which sends the decoder code by code and back */
        int escapes = round % 3 ? rand() % 4 : rand() % 60;
        for (size_t k = 0; k < nbytes; k++) {
            int pick = rand() % 100;
            in[k] = (unsigned char)(pick < escapes ? 255
                                    : pick < leads ? 192 + rand() % 63
                                                   : rand() % 192);
        }
        /* n: the count the reference finds when it reads every byte as
         * codes, or one off it */
        size_t n = 0, at = 0;
        while (at < nbytes) {
            at += in[at] < 192 ? 1 : in[at] < 255 ? 2 : 1 + width;
            n++;
        }
        n = n + (size_t)(rand() % 3) - (n ? 1 : 0);
        if (n > MAXB)
            n = MAXB;
        int ref = reference_decode(want, width, in, nbytes, n, table, ntable);
        /* the bytes alone in a block of their own size: a read past them
         * is AddressSanitizer's to report */
        unsigned char *exact = malloc(nbytes ? nbytes : 1);
        assert_non_null(exact);
        memcpy(exact, in, nbytes);
        int rc = decode(got, width, exact, nbytes, n,
                        width == 2 ? (const void *)table16
                                   : (const void *)table,
                        ntable);
        free(exact);
        assert_int_equal(rc, ref);
        for (size_t i = 0; rc == 0 && i < n; i++)
            assert_int_equal(width == 2 ? ((uint16_t *)got)[i] : got[i],
                             want[i]);
    }
}

static void test_id_codes_any_bytes(void **state)
{
    (void)state;
    id_codes_any_bytes(pp_decode_id_codes);
    id_codes_any_bytes(pp_decode_id_codes_portable);
}

/* One code point's bytes by the standard's definition, to hold
 * pp_is_utf8 to: the bit pattern of a 1- to 4-byte sequence, then its
 * value at least the least that length needs, not a surrogate, at most
 * U+10FFFF. */
static int reference_utf8_one(const unsigned char *s, size_t n)
{
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint32_t v;
    if (n == 1)
        return s[0] < 0x80;
    if (n == 2 && (s[0] & 0xE0) == 0xC0)
        v = s[0] & 0x1F;
    else if (n == 3 && (s[0] & 0xF0) == 0xE0)
        v = s[0] & 0x0F;
    else if (n == 4 && (s[0] & 0xF8) == 0xF0)
        v = s[0] & 0x07;
    else
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[k] & 0x3F);
    }
    return v >= least[n] && (v < 0xD800 || v > 0xDFFF) && v <= 0x10FFFF;
}

/* Three bytes as one, two or three code points. */
static int reference_utf8_three(const unsigned char *s)
{
    int one = reference_utf8_one(s, 1), two = reference_utf8_one(s, 2);
    return reference_utf8_one(s, 3) ||
           (one && (reference_utf8_one(s + 1, 2) ||
                    (reference_utf8_one(s + 1, 1) &&
                     reference_utf8_one(s + 2, 1)))) ||
           (two && reference_utf8_one(s + 2, 1));
}

/* Row map keys must be UTF-8 (docs/FORMAT.md, "Rows"): pp_is_utf8
 * against the definition on every sequence of 1 to 3 bytes, 4-byte ones
 * led by every byte from 0xF0, and strings of several code points, valid
 * or with one byte changed. */
static void test_utf8_is_what_the_standard_says(void **state)
{
    (void)state;
    unsigned char s[16];
    for (uint32_t x = 0; x < (1u << 24); x++) {
        s[0] = (unsigned char)x, s[1] = (unsigned char)(x >> 8);
        s[2] = (unsigned char)(x >> 16);
        if (x < 256)
            assert_int_equal(pp_is_utf8(s, 1), reference_utf8_one(s, 1));
        if (x < 65536)
            assert_int_equal(pp_is_utf8(s, 2),
                             reference_utf8_one(s, 2) ||
                                 (reference_utf8_one(s, 1) &&
                                  reference_utf8_one(s + 1, 1)));
        assert_int_equal(pp_is_utf8(s, 3), reference_utf8_three(s));
    }
    srand(3);
    for (int round = 0; round < 200000; round++) {
        s[0] = (unsigned char)(0xF0 + round % 16);
        for (int k = 1; k < 4; k++)
            s[k] = (unsigned char)(round % 3 ? 0x80 + rand() % 64 : rand());
        assert_int_equal(pp_is_utf8(s, 4), reference_utf8_one(s, 4));
    }
    static const char *const good[] = {"", "input_ids", "\xc3\xa9t\xc3\xa9",
                                       "\xe2\x82\xac\xf0\x9f\x98\x80",
                                       "\xed\x9f\xbf\xee\x80\x80",
                                       "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        size_t n = strlen(good[i]);
        assert_true(pp_is_utf8((const unsigned char *)good[i], n));
        for (size_t k = 0; k < n; k++) { /* cut short inside a code point */
            int whole = ((unsigned char)good[i][k] & 0xC0) != 0x80;
            if (whole)
                assert_true(pp_is_utf8((const unsigned char *)good[i], k));
        }
        if (n && (unsigned char)good[i][n - 1] >= 0x80)
            assert_false(pp_is_utf8((const unsigned char *)good[i], n - 1));
    }
}

static void test_hostile_rows(void **state)
{
    (void)state;
    /* a row: {"input_ids": bin 2 tokens, "cu_seqlens": [0, 2], "seq_ids": [7]} */
    static const unsigned char good[] = {
        0xdd, 0,   0,   0,    1,    0x83, 0xa9, 'i',  'n', 'p',  'u', 't', '_',
        'i',  'd', 's', 0xc4, 4,    5,    0,    6,    0,   0xaa, 'c', 'u', '_',
        's',  'e', 'q', 'l',  'e',  'n',  's',  0xc4, 8,   0,    0,   0,   0,
        2,    0,   0,   0,    0xa7, 's',  'e',  'q',  '_', 'i',  'd', 's', 0xc4,
        8,    7,   0,   0,    0,    0,    0,    0,    0};
    prepack_diag d = {0};
    assert_int_equal(read_raw_frame("raw-good", good, sizeof good, 1, &d),
                     PREPACK_OK);
    unsigned char bad[sizeof good + 64];
    struct {
        const char *name;
        size_t at; /* where to overwrite */
        unsigned char with[8];
        size_t len;
        const char *says;
    } cases[] = {
        /* the frame's array claims 2^32 - 1 rows: msgpack-c would ask for
         * ~100 GB from this count alone */
        {"raw-count", 1, {0xff, 0xff, 0xff, 0xff}, 4, "not a msgpack array"},
        /* the row map claims 2^32 - 1 entries */
        {"raw-map", 5, {0xdf, 0xff, 0xff, 0xff, 0xff}, 5, "not a msgpack"},
        /* a bin claiming 2^32 - 1 bytes */
        {"raw-bin", 16, {0xc6, 0xff, 0xff, 0xff, 0xff}, 5, "not a msgpack"},
        /* cu_seqlens going down: 0, 2 -> 3, 2 */
        {"raw-cu", 35, {3}, 1, "cu_seqlens must run from 0"},
        /* input_ids one byte short: everything after it shifts */
        {"raw-odd", 17, {3}, 1, "not a msgpack"},
        /* the one byte msgpack never uses */
        {"raw-c1", 5, {0xc1}, 1, "not a msgpack"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(bad, good, sizeof good);
        memcpy(bad + cases[i].at, cases[i].with, cases[i].len);
        memset(&d, 0, sizeof d);
        int rc = read_raw_frame(cases[i].name, bad, sizeof good, 1, &d);
        if (rc != PREPACK_ECORRUPT || !strstr(d.message, cases[i].says))
            fail_msg("%s: %s (%s), expected \"%s\"", cases[i].name,
                     prepack_strerror(rc), d.message, cases[i].says);
    }
    /* nesting far deeper than a row needs */
    size_t n = 0;
    memcpy(bad, good, 5);
    n = 5;
    for (int k = 0; k < 40; k++)
        bad[n++] = 0x91;
    bad[n++] = 0xc0;
    assert_int_equal(read_raw_frame("raw-deep", bad, n, 1, &d),
                     PREPACK_ECORRUPT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_batch_into_caller_arrays),
        cmocka_unit_test(test_writer_directory_rules),
        cmocka_unit_test(test_writer_follows_no_links),
        cmocka_unit_test(test_damage_is_reported),
        cmocka_unit_test(test_a_shard_that_is_not_a_file_is_refused),
        cmocka_unit_test(test_overwrite_keeps_the_mode),
        cmocka_unit_test(test_damage_names_the_region),
        cmocka_unit_test(test_hostile_rows),
        cmocka_unit_test(test_id_codes_round_trip),
        cmocka_unit_test(test_id_codes_any_bytes),
        cmocka_unit_test(test_utf8_is_what_the_standard_says),
    };
    return cmocka_run_group_tests_name("shard", tests, tmpdir_setup,
                                       tmpdir_teardown);
}
